"""Reads of aggregated telemetry: min / max / avg / count per time bucket and location, from the rollups.

Hourly and daily rollups are refreshed by beat (every 30 s) from the hours that received
readings, so an answer covers everything stored until the last refresh.
"""

from django.db.models import Max, Min, Sum

from apps.devices.models import Location
from apps.devices.selectors import location_json

from .models import DailyRollup, HourlyRollup

INTERVALS = ("hour", "day")
ROLLUPS = {"hour": HourlyRollup, "day": DailyRollup}


def aggregate_readings(*, metric, start, end, interval, tz, devices):
    """Buckets of `metric` in [start, end) of `devices`, grouped per location.

    → [{"location": {location json}, "buckets": [{"start", "min", "max", "avg", "count"}]}],
    locations in plant order, buckets oldest first, "start" an aware datetime in `tz`.
    """
    rows = (
        ROLLUPS[interval].objects.filter(metric=metric, device__in=devices, bucket__gte=start, bucket__lt=end)
        .values("device__location", "bucket")
        .annotate(min=Min("min"), max=Max("max"), sum=Sum("sum"), count=Sum("count"))
        .order_by("device__location", "bucket")
    )
    buckets = {}
    for row in rows:
        buckets.setdefault(row["device__location"], []).append(
            {
                "start": row["bucket"].astimezone(tz),
                "min": row["min"],
                "max": row["max"],
                "avg": row["sum"] / row["count"],
                "count": row["count"],
            }
        )
    return [
        {"location": location_json(location), "buckets": buckets[location.pk]}
        for location in Location.objects.filter(pk__in=buckets)
    ]
