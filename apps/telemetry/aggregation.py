"""Reads of aggregated telemetry: min / max / avg / count per time bucket and location, from the rollups.

Hourly and daily rollups are refreshed by beat (every 30 s) from the hours that received
readings, so an answer covers everything stored until the last refresh. Locations are read from
their own rollups (one row per location and bucket), one device from its rollups. A location's
bucket counts the devices that were there when the bucket was last computed: after a move, a
device's past stays with its old location (its own rollups go with it, under its new one).
"""

from collections.abc import Callable
from datetime import datetime
from typing import NamedTuple

import psycopg
from django.db import connection
from django.db.models import BigIntegerField, Func

from apps.devices.models import Location
from apps.devices.selectors import location_json

from .models import DailyRollup, HourlyRollup, LocationDailyRollup, LocationHourlyRollup

INTERVALS = ("hour", "day")
DEVICE_ROLLUPS = {"hour": HourlyRollup, "day": DailyRollup}
LOCATION_ROLLUPS = {"hour": LocationHourlyRollup, "day": LocationDailyRollup}
STATS = ("start", "min", "max", "sum", "count")


class EpochSeconds(Func):
    """A datetime column as whole seconds since 1970 (rollup buckets are whole hours). Rows then
    load as integers: Django's timestamptz loader costs microseconds a value, 40 ms for the
    7,920 buckets of a month of hours at 11 locations."""

    output_field = BigIntegerField()

    def as_postgresql(self, compiler, connection, **extra):
        return self.as_sql(compiler, connection, template="EXTRACT(EPOCH FROM %(expressions)s)::bigint", **extra)

    def as_sqlite(self, compiler, connection, **extra):
        # %%%%: one % for the template, one for the cursor's parameter style (as Django's Now does).
        return self.as_sql(compiler, connection, template="CAST(strftime('%%%%s', %(expressions)s) AS INTEGER)", **extra)

    def get_db_converters(self, connection):
        return []  # the database gives an int already: no int() per value (SQLite; PostgreSQL rows skip converters in fetch_rows)


def fetch_rows(rows):
    """The rows of a values_list queryset. On PostgreSQL they come in binary form, so that numbers
    arrive without text to parse: half the cost of reading the 7,920 buckets of a month of hours
    at 11 locations (Django's own cursors bind parameters client-side, which has no binary results)."""
    if connection.vendor != "postgresql":
        return list(rows)
    sql, params = rows.query.sql_with_params()
    connection.ensure_connection()
    with psycopg.Cursor(connection.connection) as cursor:
        return cursor.execute(sql, params, binary=True).fetchall()


class BucketShape(NamedTuple):
    """How an answer writes its buckets: `start(epoch seconds, tz)`, called once per bucket start
    (the locations share them), and `bucket(start, min, max, sum, count)`, once per bucket."""

    start: Callable
    bucket: Callable


HUB_BUCKETS = BucketShape(
    start=lambda epoch, tz: datetime.fromtimestamp(epoch, tz),
    bucket=lambda start, low, high, total, count: {"start": start, "min": low, "max": high, "avg": total / count, "count": count},
)


def aggregate_readings(*, metric, start, end, interval, tz, locations, device_id=None, shape=HUB_BUCKETS):
    """Buckets of `metric` in [start, end) at `locations` (a queryset or list), or only of the device
    `device_id` there, grouped per location.

    → [{"location": {location json}, "buckets": [bucket]}], locations in plant order, buckets oldest
    first, written by `shape`: by default {"start", "min", "max", "avg", "count"}, "start" an aware
    datetime in `tz`.
    """
    span = {"metric": metric, "bucket__gte": start, "bucket__lt": end}
    if device_id is None:
        rollups, location = LOCATION_ROLLUPS[interval].objects.filter(location__in=locations, **span), "location_id"
    else:
        rollups = DEVICE_ROLLUPS[interval].objects.filter(device__device_id=device_id, device__location__in=locations, **span)
        location = "device__location_id"
    rows = rollups.annotate(start=EpochSeconds("bucket")).values_list(location, *STATS).order_by("bucket")
    buckets, starts = {}, {}  # the locations share their buckets' starts: one each
    start_of, bucket = shape
    for location_pk, epoch, low, high, total, count in fetch_rows(rows):
        start = starts.get(epoch) or starts.setdefault(epoch, start_of(epoch, tz))
        buckets.setdefault(location_pk, []).append(bucket(start, low, high, total, count))
    return [
        {"location": location_json(location), "buckets": buckets[location.pk]}
        for location in Location.objects.filter(pk__in=buckets)
    ]
