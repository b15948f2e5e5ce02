"""Reads of telemetry: latest values with status, raw readings for charts."""

import time
from datetime import UTC, datetime

from apps.devices.selectors import location_json

from .latest import get_latest
from .models import Reading

def realtime_status(devices):
    """Latest value and status of every metric of every device (design §6 realtime shape)."""
    devices = list(devices)
    pairs = [(d.device_id, m.key) for d in devices for m in d.device_type.metrics.all()]
    latest = get_latest(pairs)
    now = time.time()
    measurements = []
    for device in devices:
        metrics = {}
        newest = 0
        for metric in device.device_type.metrics.all():
            item = latest.get((device.device_id, metric.key))
            if item:
                metrics[metric.key] = {"value": item["value"], "status": item["status"], "ts": item["ts"]}
                newest = max(newest, item["ts"])
            else:
                metrics[metric.key] = {"value": None, "status": None, "ts": None}
        silent_for = now - newest / 1000 if newest else None
        measurements.append(
            {
                "device": device.device_id,
                "name": device.name,
                "location": location_json(device.location),
                "offline": silent_for is None or silent_for > device.device_type.offline_after,
                "metrics": metrics,
            }
        )
    return {"capture_dt": datetime.now(UTC).isoformat(), "measurements": measurements}


def readings_between(*, device, metric, start, end, limit=100_000):
    """Raw (time, value) of one device's metric, oldest first."""
    return list(
        Reading.objects.filter(device=device, metric=metric, time__gte=start, time__lt=end)
        .order_by("time")
        .values_list("time", "value")[:limit]
    )
