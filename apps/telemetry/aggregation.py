"""Reads of aggregated telemetry: min / max / avg / count per time bucket and location, from the rollups.

Hourly and daily rollups are refreshed by beat (every 30 s) from the hours that received
readings, so an answer covers everything stored until the last refresh. Locations are read from
their own rollups (one row per location and bucket), one device from its rollups. A location's
bucket counts the devices that were there when the bucket was last computed: after a move, a
device's past stays with its old location (its own rollups go with it, under its new one).
"""

from apps.devices.models import Location
from apps.devices.selectors import location_json

from .models import DailyRollup, HourlyRollup, LocationDailyRollup, LocationHourlyRollup

INTERVALS = ("hour", "day")
DEVICE_ROLLUPS = {"hour": HourlyRollup, "day": DailyRollup}
LOCATION_ROLLUPS = {"hour": LocationHourlyRollup, "day": LocationDailyRollup}
STATS = ("bucket", "min", "max", "sum", "count")


def aggregate_readings(*, metric, start, end, interval, tz, locations, device_id=None):
    """Buckets of `metric` in [start, end) at `locations` (a queryset), or only of the device
    `device_id` there, grouped per location.

    → [{"location": {location json}, "buckets": [{"start", "min", "max", "avg", "count"}]}],
    locations in plant order, buckets oldest first, "start" an aware datetime in `tz`.
    """
    span = {"metric": metric, "bucket__gte": start, "bucket__lt": end}
    if device_id is None:
        rows = LOCATION_ROLLUPS[interval].objects.filter(location__in=locations, **span).values_list("location_id", *STATS)
    else:
        rows = DEVICE_ROLLUPS[interval].objects.filter(
            device__device_id=device_id, device__location__in=locations, **span
        ).values_list("device__location_id", *STATS)
    buckets = {}
    for location_pk, bucket, low, high, total, count in rows.order_by("bucket"):
        buckets.setdefault(location_pk, []).append(
            {"start": bucket.astimezone(tz), "min": low, "max": high, "avg": total / count, "count": count}
        )
    return [
        {"location": location_json(location), "buckets": buckets[location.pk]}
        for location in Location.objects.filter(pk__in=buckets)
    ]
