"""Reads of telemetry: latest values with status, raw readings for charts."""

import time
from datetime import UTC, datetime

from apps.devices.models import DeviceType, Location
from apps.devices.selectors import location_json

from .latest import get_latest
from .models import Reading

def realtime_status(devices):
    """Latest value and status of every metric of every device of the `devices` queryset (design §6
    realtime shape). Rows as tuples and each device type's and location's data read once: a whole
    factory of thousands of devices costs four queries and one Redis round trip."""
    rows = list(devices.values_list("device_id", "name", "device_type_id", "location_id"))
    type_pks = {row[2] for row in rows}
    metric_keys = {pk: [] for pk in type_pks}
    for type_pk, key in (
        DeviceType.metrics.through.objects.filter(devicetype_id__in=type_pks)
        .order_by("metric__key")
        .values_list("devicetype_id", "metric__key")
    ):
        metric_keys[type_pk].append(key)
    offline_after = {t.pk: t.offline_after for t in DeviceType.objects.filter(pk__in=type_pks).only("expected_interval")}
    locations = {loc.pk: location_json(loc) for loc in Location.objects.filter(pk__in={row[3] for row in rows})}
    latest = get_latest(row[0] for row in rows)
    now_ms = time.time() * 1000
    empty = {"value": None, "status": None, "ts": None}
    measurements = []
    for device_id, name, type_pk, location_pk in rows:
        stored = latest.get(device_id, {})
        metrics = {key: stored.get(key, empty) for key in metric_keys[type_pk]}
        newest = max((metric["ts"] or 0 for metric in metrics.values()), default=0)
        measurements.append(
            {
                "device": device_id,
                "name": name,
                "location": locations[location_pk],
                "offline": not newest or now_ms - newest > offline_after[type_pk] * 1000,
                "metrics": metrics,
            }
        )
    return {"capture_dt": datetime.now(UTC).isoformat(), "measurements": measurements}


def readings_between(*, device, metric, start, end, limit=100_000):
    """Raw (time, value) of one device's metric, oldest first; past `limit` rows, the newest ones
    (a chart of the last day of a fast sensor must reach up to now)."""
    newest = (
        Reading.objects.filter(device=device, metric=metric, time__gte=start, time__lt=end)
        .order_by("-time")
        .values_list("time", "value")[:limit]
    )
    return list(reversed(newest))
