"""TimescaleDB, where the extension is installed (the readings table is then a hypertable).

The four rollups become continuous aggregates under the rollup tables' own names and columns, so
every reader (API, dashboard) stays as it is: hourly and daily buckets per device, and per
location through a join with the device master. Compression and retention are TimescaleDB
policies, kept in step with the settings by beat. Beat also refreshes the buckets of the hours
that received readings right away; the refresh policies are the safety net behind it.

Daily buckets are plant-local days of the TIME_ZONE in force when the aggregates were created,
hourly ones start on its local full hours (its odd minutes kept, as on plain PostgreSQL). A
database whose rollups already hold history older than its raw readings keeps rollup tables
(converting would lose that history); its readings still get the policies.
"""

from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction

from .partitions import PARENT, is_hypertable

HOURLY_VIEWS = ("telemetry_hourlyrollup", "telemetry_locationhourlyrollup")
DAILY_VIEWS = ("telemetry_dailyrollup", "telemetry_locationdailyrollup")
STATS = "min(r.value) AS min, max(r.value) AS max, sum(r.value) AS sum, count(*) AS count"
# (key column, its name, FROM): a location's buckets join the readings with the device master.
BY_DEVICE = ("r.device_id", "device_id", f"{PARENT} r")
BY_LOCATION = ("d.location_id", "location_id", f"{PARENT} r JOIN devices_device d ON d.id = r.device_id")
SOURCES = {
    "telemetry_hourlyrollup": BY_DEVICE,
    "telemetry_dailyrollup": BY_DEVICE,
    "telemetry_locationhourlyrollup": BY_LOCATION,
    "telemetry_locationdailyrollup": BY_LOCATION,
}


def hypertable_in_use():
    if connection.vendor != "postgresql":
        return False
    with connection.cursor() as cursor:
        return is_hypertable(cursor)


def rollups_are_aggregates():
    if not hypertable_in_use():
        return False
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM timescaledb_information.continuous_aggregates WHERE view_name = %s", [HOURLY_VIEWS[0]])
        return cursor.fetchone() is not None


def history_beyond_readings(cursor):
    """Do the rollup tables hold buckets older than every raw reading (history that retention has
    already dropped, which continuous aggregates could not rebuild)?"""
    # A whole day before the first reading: its bucket started more than a (25-hour) day before it.
    cursor.execute(
        "SELECT EXISTS (SELECT 1 FROM telemetry_dailyrollup "
        f"WHERE bucket < (SELECT coalesce(min(time), 'infinity') FROM {PARENT}) - interval '26 hours')"
    )
    return cursor.fetchone()[0]


def bucket_expression(view, *, tz_name, odd_minutes):
    if view in HOURLY_VIEWS:
        return f"time_bucket(INTERVAL '1 hour', r.time, \"offset\" => INTERVAL '{odd_minutes} minutes')"
    return f"time_bucket(INTERVAL '1 day', r.time, timezone => '{tz_name}')"


def create_continuous_aggregates(cursor, *, tz_name, odd_minutes):
    """Migration step: the rollup tables (empty or not) become continuous aggregates, filled from the readings."""
    for view, (key, key_name, source) in SOURCES.items():
        cursor.execute(f"DROP TABLE {view}")
        cursor.execute(
            f"CREATE MATERIALIZED VIEW {view} WITH (timescaledb.continuous, timescaledb.materialized_only = true) AS "
            f"SELECT {key} AS {key_name}, r.metric_id, {bucket_expression(view, tz_name=tz_name, odd_minutes=odd_minutes)} AS bucket, "
            f"{STATS} FROM {source} GROUP BY {key}, r.metric_id, bucket WITH DATA"
        )
        cursor.execute(f"CREATE INDEX ON {view} ({key_name}, metric_id, bucket)")


def refresh(view, start, end):
    """Recompute the buckets of `view` inside [start, end) (bucket-aligned) from the readings."""
    with connection.cursor() as cursor:
        cursor.execute("CALL refresh_continuous_aggregate(%s, %s, %s)", [view, start, end])


def settled_after():
    """Chunks older than this receive no more readings (live ingest refuses older ones): compress them,
    and stop refreshing their buckets."""
    return timedelta(seconds=settings.IOTHUB["MAX_PAST_AGE"]) + timedelta(days=1)


class PolicySettingsError(ValueError):
    """Retention or compression settings that the policies cannot follow; nothing was altered."""


def policy_intervals():
    """(compress after, raw retention, hourly-rollup retention, refresh window) as the settings ask,
    refused before any policy is touched where TimescaleDB would take them but act wrongly
    (alter_job accepts a negative or zero interval)."""
    config = settings.IOTHUB
    if config["MAX_PAST_AGE"] < 0:
        raise PolicySettingsError(f"IOTHUB_MAX_PAST_AGE must not be negative (it is {config['MAX_PAST_AGE']})")
    if config["RETENTION_DAYS"] < 2:
        raise PolicySettingsError(
            f"IOTHUB_RETENTION_DAYS must be at least 2 (it is {config['RETENTION_DAYS']}): "
            "a daily rollup is refreshed from a whole local day of raw readings"
        )
    settled = settled_after()
    retention = timedelta(days=config["RETENTION_DAYS"])
    hourly_retention = timedelta(days=config["HOURLY_RETENTION_DAYS"])
    # Never refresh further back than the raw readings are kept: that would empty the buckets.
    refresh_window = min(settled, retention - timedelta(hours=1))
    if hourly_retention <= refresh_window:
        raise PolicySettingsError(
            f"IOTHUB_HOURLY_RETENTION_DAYS ({config['HOURLY_RETENTION_DAYS']}) must be longer than the "
            f"aggregates' refresh window ({refresh_window.days} days, from IOTHUB_MAX_PAST_AGE and "
            "IOTHUB_RETENTION_DAYS): each refresh would rebuild the hours retention has just dropped"
        )
    return settled, retention, hourly_retention, refresh_window


def wanted_policies():
    """(relation, job procedure, config key, interval, SQL adding the policy) as the settings ask."""
    compress_after, retention, hourly_retention, refresh_window = policy_intervals()
    policies = [
        (
            PARENT,
            "policy_compression",
            "compress_after",
            compress_after,
            "SELECT add_compression_policy(%s, compress_after => %s, if_not_exists => true)",
        ),
        (
            PARENT,
            "policy_retention",
            "drop_after",
            retention,
            "SELECT add_retention_policy(%s, drop_after => %s, if_not_exists => true)",
        ),
    ]
    if not rollups_are_aggregates():
        return policies
    for view in HOURLY_VIEWS:
        policies.append(
            (
                view,
                "policy_retention",
                "drop_after",
                hourly_retention,
                "SELECT add_retention_policy(%s, drop_after => %s, if_not_exists => true)",
            )
        )
    for view in (*HOURLY_VIEWS, *DAILY_VIEWS):
        policies.append(
            (
                view,
                "policy_refresh_continuous_aggregate",
                "start_offset",
                refresh_window,
                "SELECT add_continuous_aggregate_policy(%s, start_offset => %s, end_offset => NULL, "
                "schedule_interval => INTERVAL '1 minute', if_not_exists => true)",
            )
        )
    return policies


# A policy's job names its relation in `hypertable_name`: for a continuous aggregate that is the
# aggregate's view since TimescaleDB 2.22.1, its materialization hypertable before; match either.
JOB_OF = """
SELECT wanted.text, j.job_id, j.config ->> %(key)s, (j.config ->> %(key)s)::interval = %(interval)s
FROM (SELECT %(interval)s::interval::text) AS wanted (text)
LEFT JOIN timescaledb_information.jobs j ON j.proc_name = %(proc)s AND j.hypertable_name IN (
    %(relation)s,
    (SELECT materialization_hypertable_name FROM timescaledb_information.continuous_aggregates WHERE view_name = %(relation)s))
"""
ALTER_JOB = """
SELECT alter_job(job_id, config => jsonb_set(config, ARRAY[%(key)s], to_jsonb(%(interval)s::interval::text)))
FROM timescaledb_information.jobs WHERE job_id = %(job_id)s
"""


def ensure_policies():
    """Add the missing policies and bring changed ones in line with the settings; returns a line
    per change. Settings are checked before anything is altered, and all changes are one
    transaction: a refusal, ours or TimescaleDB's, leaves every policy as it was."""
    changed = []
    policies = wanted_policies()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT compression_enabled FROM timescaledb_information.hypertables WHERE hypertable_name = %s", [PARENT])
        if not cursor.fetchone()[0]:
            # Segments per (device, metric), newest first: what charts and the last-hour query read.
            cursor.execute(
                f"ALTER TABLE {PARENT} SET (timescaledb.compress, "
                "timescaledb.compress_segmentby = 'device_id, metric_id', timescaledb.compress_orderby = 'time DESC')"
            )
            changed.append(f"compression enabled on {PARENT}")
        for relation, proc, key, interval, add_sql in policies:
            cursor.execute(JOB_OF, {"key": key, "interval": interval, "proc": proc, "relation": relation})
            wanted, job_id, current, in_line = cursor.fetchone()
            if job_id is None:
                cursor.execute(add_sql, [relation, interval])
                changed.append(f"{proc} on {relation}: added, {key} {wanted}")
            elif not in_line:
                cursor.execute(ALTER_JOB, {"job_id": job_id, "key": key, "interval": interval})
                changed.append(f"{proc} on {relation}: {key} {current} -> {wanted}")
    return changed
