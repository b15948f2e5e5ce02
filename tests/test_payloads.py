"""Parsing and validation of the three payload forms (architecture §4), without I/O."""

import time
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from apps.alerts.thresholds import ThresholdIndex
from apps.telemetry.device_cache import DeviceInfo, DeviceMaster
from apps.telemetry.payloads import Message, validate_messages

METRICS = {"temperature": 1, "humidity": 2}


@pytest.fixture
def master():
    devices = {
        "s001t": DeviceInfo(10, "s001t", True, 5, 7, "env", METRICS, "temperature"),
        "old": DeviceInfo(11, "old", False, 5, 7, "env", METRICS, "temperature"),
    }
    return DeviceMaster(devices=devices, thresholds=ThresholdIndex([]), metric_keys={1: "temperature", 2: "humidity"})


def run(master, *payloads, topic="sensors/s001t"):
    now = time.time()
    messages = [Message("mqtt", topic, p if isinstance(p, bytes) else orjson.dumps(p), now) for p in payloads]
    return validate_messages(messages, master=master, now=now, max_bytes=65536, max_future_skew=300, max_past_age=86400)


def test_it_accepts_named_metrics(master):
    ts = int(time.time() * 1000)
    batch = run(master, {"ts": ts, "temperature": 23.5, "humidity": 41})
    assert batch.rows == [(10, 1, ts / 1000, 23.5), (10, 2, ts / 1000, 41.0)]
    assert batch.rejections == []


def test_it_maps_compact_value_to_primary_metric(master):
    ts = int(time.time() * 1000)
    batch = run(master, {"id": "s001t", "ts": ts, "v": 19.25})
    assert batch.rows == [(10, 1, ts / 1000, 19.25)]


def test_it_accepts_arrays_and_iso_timestamps_and_subtopics(master):
    minute_ago = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
    iso = minute_ago.isoformat().replace("+00:00", "Z")
    batch = run(master, [{"ts": iso, "v": 1}, {"humidity": 50}], topic="sensors/s001t/line-a")
    assert batch.rejections == []
    assert batch.rows[0] == (10, 1, minute_ago.timestamp(), 1.0)
    assert batch.rows[1][:2] == (10, 2)


def test_it_takes_gateway_arrays_of_compact_items_whole_or_not_at_all(master):
    ts = int(time.time() * 1000)
    batch = run(master, [{"ts": ts, "v": 20.5}, {"ts": ts + 1, "v": 21}, {"ts": ts + 2, "v": 21.5}])
    assert batch.rows == [(10, 1, ts / 1000, 20.5), (10, 1, (ts + 1) / 1000, 21.0), (10, 1, (ts + 2) / 1000, 21.5)]
    future = ts + 3_600_000
    batch = run(master, [{"ts": ts, "v": 20.5}, {"ts": future, "v": 21.5}])
    assert batch.rows == []
    assert [r.reason for r in batch.rejections] == ["ts_future"]


def test_it_uses_receive_time_when_ts_is_missing(master):
    before = time.time()
    batch = run(master, {"temperature": 20})
    assert before - 1 <= batch.rows[0][2] <= time.time()


@pytest.mark.parametrize(
    "payload, topic, reason",
    [
        (b"{not json", "sensors/s001t", "malformed_json"),
        ({"ts": 1}, "sensors/s001t", "wrong_shape"),
        ([], "sensors/s001t", "wrong_shape"),
        ("a string", "sensors/s001t", "wrong_shape"),
        ({"temperature": 1}, "other/s001t", "wrong_shape"),
        ({"id": "someone-else", "v": 1}, "sensors/s001t", "wrong_shape"),
        ({"temperature": 1}, "sensors/nobody", "unknown_device"),
        ({"temperature": 1}, "sensors/old", "inactive_device"),
        ({"pressure": 1}, "sensors/s001t", "unknown_metric"),
        ({"temperature": "hot"}, "sensors/s001t", "bad_value"),
        ({"temperature": True}, "sensors/s001t", "bad_value"),
        (b'{"temperature": NaN}', "sensors/s001t", "malformed_json"),
        (b'{"temperature": 1e999}', "sensors/s001t", "malformed_json"),  # orjson refuses infinities
        ({"ts": int(time.time() * 1000) + 3_600_000, "temperature": 1}, "sensors/s001t", "ts_future"),
        ({"ts": 1_000, "temperature": 1}, "sensors/s001t", "ts_past"),
        ({"ts": "yesterday", "temperature": 1}, "sensors/s001t", "wrong_shape"),
        (b"[" * 100_000, "sensors/s001t", "too_large"),
        (b"[" * 5000 + b"]" * 5000, "sensors/s001t", "malformed_json"),
    ],
)
def test_it_rejects_bad_input_with_its_reason(master, payload, topic, reason):
    batch = run(master, payload, {"temperature": 21.0}, topic=topic)
    assert [r.reason for r in batch.rejections] == [reason] + ([reason] if topic != "sensors/s001t" else [])
    if topic == "sensors/s001t":
        assert len(batch.rows) == 1  # the good message of the same batch is kept
