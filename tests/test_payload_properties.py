"""Property-based tests of the payload parser and validators: hostile input never escapes as an
exception, every invalid message is dead-lettered with one reason, valid readings survive intact."""

import math
import time

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apps.alerts.thresholds import ThresholdIndex
from apps.telemetry.device_cache import DeviceInfo, DeviceMaster
from apps.telemetry.models import DeadLetter
from apps.telemetry.payloads import Message, validate_messages

METRICS = {"temperature": 1, "humidity": 2, "pcv_temperature": 3}
MASTER = DeviceMaster(
    devices={"s001t": DeviceInfo(10, "s001t", True, 5, 7, "env", METRICS, "temperature")},
    thresholds=ThresholdIndex([]),
    metric_keys={pk: key for key, pk in METRICS.items()},
)
REASONS = set(DeadLetter.Reason.values)
NOW = time.time()

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=5),
    max_leaves=30,
)
topics = st.sampled_from(["sensors/s001t", "sensors/s001t/x", "sensors/other", "sensors/", "other", ""]) | st.text(max_size=30)


def check(payload, topic):
    batch = validate_messages(
        [Message("mqtt", topic, payload, NOW)],
        master=MASTER,
        now=NOW,
        max_bytes=65536,
        max_future_skew=300,
        max_past_age=86400,
    )
    if batch.rejections:
        [rejection] = batch.rejections
        assert rejection.reason in REASONS and rejection.detail
        assert batch.rows == []
    else:
        assert batch.rows and all(math.isfinite(v) for *_, v in batch.rows)
    return batch


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(payload=st.binary(max_size=2000), topic=topics)
def test_it_never_raises_on_arbitrary_bytes(payload, topic):
    check(payload, topic)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(body=json_values, topic=topics)
def test_it_never_raises_on_arbitrary_json(body, topic):
    check(orjson.dumps(body), topic)


readings = st.fixed_dictionaries(
    {"ts": st.integers(int((NOW - 3600) * 1000), int(NOW * 1000))},
    optional={key: st.floats(-1e6, 1e6, allow_nan=False) for key in METRICS},
).filter(lambda d: len(d) > 1)


@settings(max_examples=200)
@given(items=st.lists(readings, min_size=1, max_size=10))
def test_it_keeps_every_value_of_a_valid_batch(items):
    batch = check(orjson.dumps(items), "sensors/s001t")
    expected = sorted((METRICS[k], item["ts"] / 1000, float(v)) for item in items for k, v in item.items() if k != "ts")
    assert sorted((m, ts, v) for _, m, ts, v in batch.rows) == expected


def test_it_rejects_deep_nesting_and_oversize_cheaply():
    assert check(b"[" * 60_000, "sensors/s001t").rejections[0].reason == "malformed_json"  # depth limit of orjson
    assert check(b"[" * 70_000, "sensors/s001t").rejections[0].reason == "too_large"  # never parsed
    nested = b'{"a":' * 2000 + b"1" + b"}" * 2000
    assert check(nested, "sensors/s001t").rejections[0].reason == "malformed_json"


def replay(bands, rows):
    from apps.alerts.evaluation import PairState

    pair = PairState(device_pk=1, metric_pk=1, bands=bands, alert=None, breach_since=None)
    for _, _, ts, value in rows:
        pair.apply(ts, value)
    alerts = [alert for alert, _ in pair.events]
    return (
        [(event.kind, event.level, event.value) for _, event in pair.events],
        [(a.level, a.state, a.first_value, a.peak_value, a.last_value) for a in alerts],
    )


@settings(max_examples=300)
@given(
    values=st.lists(st.floats(10, 50, allow_nan=False), min_size=1, max_size=60),
    hysteresis=st.sampled_from([0.0, 0.5, 2.0]),
)
def test_it_hands_celery_only_readings_that_change_the_alert_outcome(values, hysteresis):
    from apps.alerts.thresholds import Bands, significant_readings

    bands = Bands(1, 15.0, 30.0, 12.0, 35.0, hysteresis, 0)
    rows = [(1, 1, 1000.0 + i, v) for i, v in enumerate(values)]
    kept = significant_readings(bands, rows)
    assert len(kept) <= len(rows)
    assert replay(bands, kept) == replay(bands, rows)
