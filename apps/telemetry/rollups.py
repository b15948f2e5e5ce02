"""Hourly and daily rollups (min / max / sum / count per device and metric), recomputed idempotently.

Every stored batch marks the UTC hours it touched (DirtyHour, same transaction as the readings);
beat recomputes those hours from the raw readings and then the plant-local days that contain
them from the hourly rows. Each location's buckets are then summed up from its devices' (what the
aggregation API reads: one row per location and bucket). Recomputing a whole bucket makes late
and redelivered readings harmless. Hourly buckets start on the plant's local full hours but are
absolute hours: they are truncated in a fixed offset with the zone's odd minutes (+00:00 mostly,
+00:30 in India), so the two local 02:00 hours of the night the clocks go back stay apart. Daily
buckets are local days of settings.TIME_ZONE (23, 24 or 25 hours). The ORM does the grouping, so
the SQLite demo and PostgreSQL share one code path. Where TimescaleDB is in use the rollups are
continuous aggregates (apps.telemetry.timescale), and the same entry points refresh them instead.
"""

from datetime import UTC, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db import transaction
from django.db.models import Count, F, Max, Min, Sum
from django.db.models.functions import TruncHour

from . import timescale
from .models import DailyRollup, DirtyHour, HourlyRollup, LocationDailyRollup, LocationHourlyRollup, Reading

HOUR = timedelta(hours=1)
ROLLUP_FIELDS = ["min", "max", "sum", "count"]


def plant_tz():
    return ZoneInfo(settings.TIME_ZONE)


def hour_offset(tz):
    """The fixed offset whose full hours are the plant's local full hours."""
    odd_minutes = int(datetime.now(tz).utcoffset() / timedelta(minutes=1)) % 60
    return timezone(timedelta(minutes=odd_minutes))


def hour_start(at, offset):
    return at.astimezone(offset).replace(minute=0, second=0, microsecond=0)


def hours_of(rows):
    """The hours (since the epoch) of (device_pk, metric_pk, ts_seconds, value) rows."""
    return {ts // 3600 for _, _, ts, _ in rows}


def mark_dirty_hours(hours):
    """hours: from hours_of. Call in the transaction that stores their rows."""
    DirtyHour.objects.bulk_create(
        [DirtyHour(hour=datetime.fromtimestamp(h * 3600, tz=UTC)) for h in hours], ignore_conflicts=True
    )


def upsert(model, rows, key=("device", "metric", "bucket")):
    # INSERT … ON CONFLICT DO UPDATE: two recomputes of one bucket at once (beat and a backfill) both succeed.
    model.objects.bulk_create(
        [model(**row) for row in rows],
        update_conflicts=True,
        unique_fields=list(key),
        update_fields=ROLLUP_FIELDS,
        batch_size=2000,
    )


def combined(rows):
    """The stats of grouped rollup rows."""
    return rows.annotate(min=Min("min"), max=Max("max"), sum=Sum("sum"), count=Sum("count")).order_by()


def replace_location_rollups(model, rows, **buckets):
    """The location buckets selected by `buckets` (filters) become `rows`: a location whose devices
    all moved away keeps no stale bucket."""
    rows = list(rows)
    fresh = {(row["location_id"], row["metric_id"], row["bucket"]) for row in rows}
    with transaction.atomic():
        upsert(model, rows, key=("location", "metric", "bucket"))
        stale = [
            pk
            for pk, *key in model.objects.filter(**buckets).values_list("pk", "location_id", "metric_id", "bucket")
            if tuple(key) not in fresh
        ]
        model.objects.filter(pk__in=stale).delete()


def recompute_hours(start, end):
    """Recompute every hourly bucket that overlaps [start, end) from the raw readings, per device
    and then per location."""
    offset = hour_offset(plant_tz())
    start, end = hour_start(start, offset), hour_start(end - timedelta(microseconds=1), offset) + HOUR
    rows = (
        Reading.objects.filter(time__gte=start, time__lt=end)
        .annotate(bucket=TruncHour("time", tzinfo=offset))
        .values("device_id", "metric_id", "bucket")
        .annotate(min=Min("value"), max=Max("value"), sum=Sum("value"), count=Count("*"))
        .order_by()
    )
    upsert(HourlyRollup, rows)
    recompute_location_hours(start, end)


def recompute_location_hours(start, end):
    """Each location's hourly buckets in [start, end) from its devices' hourly buckets."""
    devices = HourlyRollup.objects.filter(bucket__gte=start, bucket__lt=end)
    rows = combined(devices.values("metric_id", "bucket", location_id=F("device__location_id")))
    replace_location_rollups(LocationHourlyRollup, rows, bucket__gte=start, bucket__lt=end)


def local_day_bounds(day, tz):
    start = datetime.combine(day, time.min, tzinfo=tz)
    end = datetime.combine(day + timedelta(days=1), time.min, tzinfo=tz)
    return start.astimezone(UTC), end.astimezone(UTC)


def recompute_days(days):
    """Recompute the daily buckets of these local dates from the hourly buckets."""
    tz = plant_tz()
    for day in sorted(days):
        start, end = local_day_bounds(day, tz)
        rows = combined(HourlyRollup.objects.filter(bucket__gte=start, bucket__lt=end).values("device_id", "metric_id"))
        upsert(DailyRollup, [{**row, "bucket": start} for row in rows])
        rows = combined(LocationHourlyRollup.objects.filter(bucket__gte=start, bucket__lt=end).values("location_id", "metric_id"))
        replace_location_rollups(LocationDailyRollup, [{**row, "bucket": start} for row in rows], bucket=start)


def local_dates(start, end, tz):
    """The plant-local dates that [start, end) touches."""
    first, last = start.astimezone(tz).date(), (end - timedelta(microseconds=1)).astimezone(tz).date()
    return {first + timedelta(days=i) for i in range((last - first).days + 1)}


def recompute_range(start, end):
    """Backfill: recompute the hourly and daily rollups of [start, end)."""
    if timescale.rollups_are_aggregates():
        refresh_aggregates(start, end)
        return
    recompute_hours(start, end)
    recompute_days(local_dates(start, end, plant_tz()))


def refresh_aggregates(start, end):
    """TimescaleDB: refresh the continuous aggregates' buckets that overlap [start, end)."""
    tz = plant_tz()
    offset = hour_offset(tz)
    for view in timescale.HOURLY_VIEWS:
        timescale.refresh(view, hour_start(start, offset), hour_start(end - timedelta(microseconds=1), offset) + HOUR)
    dates = local_dates(start, end, tz)
    for view in timescale.DAILY_VIEWS:
        timescale.refresh(view, local_day_bounds(min(dates), tz)[0], local_day_bounds(max(dates), tz)[1])


def hour_ranges(hours):
    """Sorted hour starts → [(start, end)] of runs of consecutive hours."""
    ranges = []
    for hour in hours:
        if ranges and ranges[-1][1] == hour:
            ranges[-1][1] = hour + HOUR
        else:
            ranges.append([hour, hour + HOUR])
    return [tuple(r) for r in ranges]


def refresh_dirty_aggregates(*, limit):
    """TimescaleDB: refresh the buckets of the dirty hours. A refresh cannot run inside a
    transaction, so the hours are taken off the list first, and put back should a refresh fail."""
    with transaction.atomic():
        hours = sorted(
            DirtyHour.objects.select_for_update(skip_locked=True).order_by("hour").values_list("hour", flat=True)[:limit]
        )
        DirtyHour.objects.filter(hour__in=hours).delete()
    try:
        for start, end in hour_ranges(hours):
            refresh_aggregates(start, end)
    except Exception:
        DirtyHour.objects.bulk_create([DirtyHour(hour=hour) for hour in hours], ignore_conflicts=True)  # next run retries
        raise
    return len(hours)


def refresh_rollups(*, limit=200):
    """Beat: recompute the rollups of hours that received readings; returns how many hours."""
    if timescale.rollups_are_aggregates():
        return refresh_dirty_aggregates(limit=limit)
    tz = plant_tz()
    with transaction.atomic():
        dirty = list(DirtyHour.objects.select_for_update(skip_locked=True).order_by("hour")[:limit])
        if not dirty:
            return 0
        days = set()
        for hour in dirty:
            recompute_hours(hour.hour, hour.hour + HOUR)
            days |= local_dates(hour.hour, hour.hour + HOUR, tz)
        recompute_days(days)
        DirtyHour.objects.filter(pk__in=[hour.pk for hour in dirty]).delete()
    return len(dirty)
