"""Hourly and daily rollups (min / max / sum / count per device and metric), recomputed idempotently.

Every stored batch marks the UTC hours it touched (DirtyHour, same transaction as the readings);
beat recomputes those hours from the raw readings and then the plant-local days that contain
them from the hourly rows. Recomputing a whole bucket makes late and redelivered readings
harmless. Hourly buckets are UTC hours, which are local hours in every zone with whole-hour
offsets; daily buckets are local days of settings.TIME_ZONE (23, 24 or 25 hours). The ORM does
the grouping, so the SQLite demo and PostgreSQL share one code path.
"""

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db import transaction
from django.db.models import Count, Max, Min, Sum
from django.db.models.functions import TruncHour

from .models import DailyRollup, DirtyHour, HourlyRollup, Reading

HOUR = timedelta(hours=1)
ROLLUP_FIELDS = ["min", "max", "sum", "count"]


def plant_tz():
    return ZoneInfo(settings.TIME_ZONE)


def mark_dirty_hours(rows):
    """rows: (device_pk, metric_pk, ts_seconds, value). Call in the transaction that stores them."""
    hours = {int(ts // 3600) * 3600 for _, _, ts, _ in rows}
    DirtyHour.objects.bulk_create([DirtyHour(hour=datetime.fromtimestamp(h, tz=UTC)) for h in hours], ignore_conflicts=True)


def upsert(model, rows):
    model.objects.bulk_create(
        [model(**row) for row in rows],
        update_conflicts=True,
        unique_fields=["device", "metric", "bucket"],
        update_fields=ROLLUP_FIELDS,
        batch_size=2000,
    )


def recompute_hours(start, end):
    """Recompute every hourly bucket in [start, end) from the raw readings."""
    rows = (
        Reading.objects.filter(time__gte=start, time__lt=end)
        .annotate(bucket=TruncHour("time", tzinfo=UTC))
        .values("device_id", "metric_id", "bucket")
        .annotate(min=Min("value"), max=Max("value"), sum=Sum("value"), count=Count("id"))
        .order_by()
    )
    upsert(HourlyRollup, rows)


def local_day_bounds(day, tz):
    start = datetime.combine(day, time.min, tzinfo=tz)
    end = datetime.combine(day + timedelta(days=1), time.min, tzinfo=tz)
    return start.astimezone(UTC), end.astimezone(UTC)


def recompute_days(days):
    """Recompute the daily buckets of these local dates from the hourly buckets."""
    tz = plant_tz()
    for day in sorted(days):
        start, end = local_day_bounds(day, tz)
        rows = (
            HourlyRollup.objects.filter(bucket__gte=start, bucket__lt=end)
            .values("device_id", "metric_id")
            .annotate(min=Min("min"), max=Max("max"), sum=Sum("sum"), count=Sum("count"))
            .order_by()
        )
        upsert(DailyRollup, [{**row, "bucket": start} for row in rows])


def recompute_range(start, end):
    """Backfill: recompute hourly and daily rollups for every hour in [start, end)."""
    start = start.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    recompute_hours(start, end)
    tz = plant_tz()
    recompute_days({(start + HOUR * i).astimezone(tz).date() for i in range(int((end - start) / HOUR) + 1)})


def refresh_rollups(*, limit=200):
    """Beat: recompute the rollups of hours that received readings; returns how many hours."""
    tz = plant_tz()
    with transaction.atomic():
        dirty = list(DirtyHour.objects.select_for_update(skip_locked=True).order_by("hour")[:limit])
        if not dirty:
            return 0
        for hour in dirty:
            recompute_hours(hour.hour, hour.hour + HOUR)
        recompute_days({hour.hour.astimezone(tz).date() for hour in dirty})
        DirtyHour.objects.filter(pk__in=[hour.pk for hour in dirty]).delete()
    return len(dirty)
