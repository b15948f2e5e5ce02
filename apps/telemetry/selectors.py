"""Reads of telemetry: latest values with status, raw readings for charts."""

import time
from datetime import UTC, datetime

import orjson
from django.db import connection
from django.db.models import Q

from apps.devices.selectors import NO_VALUE, PLANT

from .latest import get_latest, get_latest_documents
from .models import Reading
from .rollups import plant_tz


def device_metrics(device, stored):
    """(every metric of the LiveDevice's type with its stored value or NO_VALUE, the newest ts in
    epoch ms or 0) from its stored latest document (None: nothing stored yet)."""
    metrics = stored or device.no_values
    if metrics.keys() != device.no_values.keys():  # the type's metrics changed since it was stored
        metrics = {key: metrics.get(key, NO_VALUE) for key in device.no_values}
    return metrics, max([item["ts"] or 0 for item in metrics.values()], default=0)


def measurement(device, metrics, *, offline):
    """One device's entry of the realtime answer."""
    return {"device": device.device_id, "name": device.name, "location": device.location, "offline": offline, "metrics": metrics}


def device_status(device):
    """The realtime entry of one LiveDevice (device page)."""
    metrics, newest = device_metrics(device, get_latest([device.device_id]).get(device.device_id))
    return measurement(device, metrics, offline=device.is_offline(newest, time.time() * 1000))


class RenderedMeasurements:
    """The realtime entry of each device rendered to JSON by `render(device, document, plant)` →
    (document, newest ts, online JSON, offline JSON), kept while it is made of the same stored
    document and the same copy of the device master: between two polls of a factory few of its
    devices report, so an answer costs one HMGET and the renderings of those. The offline flag
    moves with the clock alone; it is picked per request from two renderings. The entries hold
    no container, so the garbage collector stops tracking them."""

    def __init__(self, render):
        self.render = render
        self.current = (None, {})  # (Plant, {device_id: (document, newest ts, online JSON, offline JSON)})

    def entries(self, devices, documents, *, plant, now_ms):
        current = self.current
        if current[0] is not plant:
            current = self.current = (plant, {})
        made = current[1]  # read once: entries of an older copy never go into a newer one's dict
        answer = []
        for device, document in zip(devices, documents):
            entry = made.get(device.device_id)
            if entry is None or entry[0] != document:
                entry = made[device.device_id] = self.render(device, document, plant)
            answer.append(entry[3] if device.is_offline(entry[1], now_ms) else entry[2])
        return answer


def hub_entry(device, document, plant):
    """The hub's realtime entry of a device, online and offline (RenderedMeasurements)."""
    metrics, newest = device_metrics(device, orjson.loads(document) if document else None)
    online, offline = (orjson.Fragment(orjson.dumps(measurement(device, metrics, offline=flag))) for flag in (False, True))
    return document, newest, online, offline


RENDERED = RenderedMeasurements(hub_entry)


def capture_fields(now):
    """When a realtime answer was made: the instant in UTC, and its plant local day and hour."""
    local = now.astimezone(plant_tz())
    return {"capture_dt": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "ymd": local.strftime("%Y%m%d"), "hh": local.strftime("%H")}


def realtime_answer(rendered, *, factory=None, building=None, floor=None, loc_id=None):
    """capture_fields and the entries of every active device at the locations matching the given
    fields, made by `rendered` (a RenderedMeasurements), each already JSON (orjson.Fragment)."""
    plant = PLANT.get()
    devices = plant.devices_at(factory=factory, building=building, floor=floor, loc_id=loc_id, active_only=True)
    documents = get_latest_documents([device.device_id for device in devices])
    return {
        **capture_fields(datetime.now(UTC)),
        "measurements": rendered.entries(devices, documents, plant=plant, now_ms=time.time() * 1000),
    }


def realtime_status(*, factory=None, building=None, floor=None, loc_id=None):
    """Latest value and status of every metric of every active device at the locations matching
    the given fields (architecture §6 realtime shape, with the local day and hour of capture_dt)."""
    return realtime_answer(RENDERED, factory=factory, building=building, floor=floor, loc_id=loc_id)


def readings_between(*, device, metric, start, end, limit=100_000):
    """Raw (time, value) of one device's metric, oldest first; past `limit` rows, the newest ones
    (a chart of the last day of a fast sensor must reach up to now)."""
    newest = (
        Reading.objects.filter(device=device, metric=metric, time__gte=start, time__lt=end)
        .order_by("-time")
        .values_list("time", "value")[:limit]
    )
    return list(reversed(newest))


def stored_inputs(*, devices, input_pks, start, end):
    """The rows (device_pk, metric_pk, ts, value) of the inputs stored in [start, end), by device and time."""
    rows = (
        Reading.objects.filter(device_id__in=devices, metric_id__in=input_pks, time__gte=start, time__lt=end)
        .order_by("device_id", "time")
        .values_list("device_id", "metric_id", "time", "value")
    )
    return [(device_pk, metric_pk, at.timestamp(), value) for device_pk, metric_pk, at, value in rows.iterator(chunk_size=20_000)]


READINGS_INSIDE = """
SELECT r.device_id, r.metric_id, r.time, r.value
FROM unnest(%s::bigint[], %s::bigint[], %s::timestamptz[], %s::timestamptz[]) AS s(device_id, metric_id, after, before)
JOIN telemetry_reading r ON r.device_id = s.device_id AND r.metric_id = s.metric_id AND r.time > s.after AND r.time < s.before
ORDER BY r.time
"""


def readings_inside(*, spans):
    """spans: {(device_pk, metric_pk): (after, before) datetimes} → {(device_pk, metric_pk): [(ts,
    value)]} of the readings stored strictly between, in time order.

    On PostgreSQL one join of the spans to the readings: an index lookup per span, in the partitions
    that hold its times only (pruned while it runs); on the demo's SQLite, a condition per span."""
    if not spans:
        return {}
    if connection.vendor == "postgresql":
        (devices, metrics), (afters, befores) = zip(*spans), zip(*spans.values())
        with connection.cursor() as cursor:
            cursor.execute(READINGS_INSIDE, [list(devices), list(metrics), list(afters), list(befores)])
            rows = cursor.fetchall()
    else:
        where = Q()
        for (device_pk, metric_pk), (after, before) in spans.items():
            where |= Q(device_id=device_pk, metric_id=metric_pk, time__gt=after, time__lt=before)
        rows = Reading.objects.filter(where).order_by("time").values_list("device_id", "metric_id", "time", "value")
    found = {}
    for device_pk, metric_pk, at, value in rows:
        found.setdefault((device_pk, metric_pk), []).append((at.timestamp(), value))
    return found
