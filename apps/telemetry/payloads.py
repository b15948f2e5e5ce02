"""Parse and validate MQTT/HTTP/Kafka payloads (architecture §4) into readings or rejection reasons.

Pure functions, no database: the pipeline calls them for a whole batch with a snapshot of the
device master, so a message costs a JSON decode and a few dict lookups.
"""

import math
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime

import orjson

from .device_cache import DeviceMaster
from .models import DeadLetter

Reason = DeadLetter.Reason
RESERVED_KEYS = frozenset({"ts", "id"})


@dataclass(slots=True)
class Message:
    """One payload as received from a source, before validation."""

    source: str
    topic: str
    payload: bytes
    received_at: float  # epoch seconds


@dataclass(slots=True)
class Rejection:
    message: Message
    reason: str
    detail: str


class Rejected(Exception):
    def __init__(self, reason, detail):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def device_id_from_topic(topic):
    """`sensors/<device_id>[/anything]` → device_id, or None for any other topic."""
    parts = topic.split("/", 2)
    if len(parts) < 2 or parts[0] != "sensors" or not parts[1]:
        return None
    return parts[1]


def parse_timestamp(ts, received_at):
    """Epoch milliseconds or ISO 8601 → epoch seconds; missing → receive time."""
    # Exact types, the usual case first (a reading costs microseconds; True is not a timestamp).
    if type(ts) is int or type(ts) is float:
        if not math.isfinite(ts):
            raise Rejected(Reason.WRONG_SHAPE, "ts is not finite")
        return ts / 1000.0
    if ts is None:
        return received_at
    if type(ts) is str:
        try:
            parsed = datetime.fromisoformat(ts.replace("Z", "+00:00"))
        except ValueError:
            raise Rejected(Reason.WRONG_SHAPE, f"ts {ts[:40]!r} is not ISO 8601") from None
        if parsed.tzinfo is None:
            raise Rejected(Reason.WRONG_SHAPE, "ts has no time zone")
        return parsed.timestamp()
    raise Rejected(Reason.WRONG_SHAPE, "ts must be epoch milliseconds or ISO 8601")


def check_value(metric, value):
    if type(value) is not float and type(value) is not int:  # exact types: True is not a number
        raise Rejected(Reason.BAD_VALUE, f"{metric}: {str(value)[:40]!r} is not a number")
    if not math.isfinite(value):
        raise Rejected(Reason.BAD_VALUE, f"{metric}: value is not finite")
    return float(value)


def readings_of_item(item, device_id, received_at):
    """One object of a payload → [(metric_key or None for the primary metric, ts, value)]."""
    if not isinstance(item, dict):
        raise Rejected(Reason.WRONG_SHAPE, "expected a JSON object or an array of objects")
    item_device = item.get("id")
    if item_device is not None and item_device != device_id:
        raise Rejected(Reason.WRONG_SHAPE, f"id {str(item_device)[:64]!r} does not match topic device {device_id!r}")
    ts = parse_timestamp(item.get("ts"), received_at)
    if "v" in item and len(item) == 1 + ("ts" in item) + ("id" in item):  # nothing but RESERVED_KEYS besides v
        return [(None, ts, check_value("v", item["v"]))]
    metrics = [(key, value) for key, value in item.items() if key not in RESERVED_KEYS]
    if not metrics:
        raise Rejected(Reason.WRONG_SHAPE, "no metric values")
    return [(key, ts, check_value(key, value)) for key, value in metrics]


def decode(message, max_bytes):
    """Payload bytes → (device_id, [(metric_key|None, ts, value)]), or raise Rejected."""
    if len(message.payload) > max_bytes:
        raise Rejected(Reason.TOO_LARGE, f"{len(message.payload)} bytes > {max_bytes}")
    device_id = device_id_from_topic(message.topic)
    if device_id is None:
        raise Rejected(Reason.WRONG_SHAPE, "topic is not sensors/<device_id>")
    try:
        body = orjson.loads(message.payload)
    except orjson.JSONDecodeError as e:
        raise Rejected(Reason.MALFORMED_JSON, str(e)[:200]) from None
    items = body if isinstance(body, list) else [body]
    if not items:
        raise Rejected(Reason.WRONG_SHAPE, "empty array")
    readings = []
    for item in items:
        # A gateway's usual item, {"ts": epoch ms, "v": a float}, needs none of the general checks
        # (orjson gives no non-finite floats: JSON has none); skipping them took 40–60 % off a
        # reading's validation (measured with bench_ingest --only throughput, gateway arrays).
        if type(item) is dict and len(item) == 2 and type(ts := item.get("ts")) is int and type(value := item.get("v")) is float:
            readings.append((None, ts / 1000.0, value))
        else:
            readings.extend(readings_of_item(item, device_id, message.received_at))
    return device_id, readings


@dataclass(slots=True)
class ValidatedBatch:
    rows: list  # (device_pk, metric_pk, ts_seconds, value)
    rejections: list  # Rejection
    devices: dict  # device_pk → DeviceInfo, for the devices in rows
    accepted: list  # the Messages whose rows are in rows, in order
    ends: list  # len(rows) after each accepted message's rows

    def messages_by_reading(self):
        """(device_pk, ts) → the message that brought a reading of that device at that time (the
        last of them, if several did)."""
        by_reading = {}
        start = 0
        for message, end in zip(self.accepted, self.ends):
            for device_pk, _, ts, _ in self.rows[start:end]:
                by_reading[(device_pk, ts)] = message
            start = end
        return by_reading


def rows_by_pair(rows):
    """(device_pk, metric_pk) → its rows, in batch order."""
    by_pair = defaultdict(list)
    for row in rows:  # twice as fast as itertools.groupby where the pairs alternate (single-reading messages)
        by_pair[row[:2]].append(row)
    return dict(by_pair)


def unknown_metric(device, metric_key):
    calculations = device.calculations.calculations if device.calculations else ()
    if any(calculation.key == metric_key for calculation in calculations):
        return Rejected(Reason.UNKNOWN_METRIC, f"{metric_key!r} is calculated from other metrics of {device.type_name}, not sent")
    return Rejected(Reason.UNKNOWN_METRIC, f"{str(metric_key)[:64]!r} is not a metric of {device.type_name}")


def validate_messages(
    messages, *, master: DeviceMaster, now, max_bytes, max_future_skew, max_past_age, store=None, store_rows=500
):
    """Decode, validate and enrich a batch of messages against the device master.

    store(rows, devices), if given, gets the rows as they are validated, those of whole messages at
    most `store_rows` at a time (or one message's, where it has more), and the devices of the batch
    so far (device_pk → DeviceInfo)."""
    rows = []
    stored = 0
    rejections = []
    devices = {}
    accepted = []
    ends = []
    latest_ok = now + max_future_skew
    earliest_ok = now - max_past_age
    for message in messages:
        try:
            device_id, readings = decode(message, max_bytes)
            device = master.devices.get(device_id)
            if device is None:
                raise Rejected(Reason.UNKNOWN_DEVICE, f"device {device_id[:64]!r} is not registered")
            if not device.is_active:
                raise Rejected(Reason.INACTIVE_DEVICE, f"device {device_id!r} is inactive")
            message_rows = []
            for metric_key, ts, value in readings:
                metric_pk = device.metrics.get(metric_key or device.primary_metric)
                if metric_pk is None:
                    raise unknown_metric(device, metric_key or device.primary_metric)
                if ts > latest_ok:
                    raise Rejected(Reason.TS_FUTURE, f"ts {ts:.0f} is more than {max_future_skew} s ahead")
                if ts < earliest_ok:
                    raise Rejected(Reason.TS_PAST, f"ts {ts:.0f} is more than {max_past_age} s old")
                message_rows.append((device.pk, metric_pk, ts, value))
        except Rejected as rejected:
            rejections.append(Rejection(message, rejected.reason, rejected.detail))
            continue
        if store is not None and len(rows) - stored + len(message_rows) > store_rows and len(rows) > stored:
            store(rows[stored:], devices)
            stored = len(rows)
        rows.extend(message_rows)
        devices[device.pk] = device
        accepted.append(message)
        ends.append(len(rows))
    if store is not None and len(rows) > stored:
        store(rows[stored:], devices)
    return ValidatedBatch(rows=rows, rejections=rejections, devices=devices, accepted=accepted, ends=ends)
