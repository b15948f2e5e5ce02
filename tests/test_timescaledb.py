"""The TimescaleDB path on a real TimescaleDB (2.28.3 built from source on PostgreSQL 15.18 by
scripts/services.sh, its job scheduler running): hypertable, rollups as continuous aggregates
(per device and per location, local days across DST), compression, retention and refresh policies
kept in line with the settings, and every job the scheduler ran succeeded.

Each test gets a database of its own on that server; every hub step runs as its own `manage.py`
process. Dates are relative to now: the scheduler applies retention and compression within
seconds, so readings are placed where the settings in force keep them.
"""

import os
import re
import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit, urlunsplit
from zoneinfo import ZoneInfo

import psycopg
import pytest

from .support import eventually, last_fall_back_day, manage, readings_csv

BERLIN = ZoneInfo("Europe/Berlin")
DEVICES = ("sim-00001", "sim-00002", "sim-00012")  # sim-00001 and sim-00012 share a location
# Long enough to keep the last autumn DST change (within a year of any date) in raw readings and rollups.
LONG_RETENTION = {"IOTHUB_RETENTION_DAYS": "400", "IOTHUB_HOURLY_RETENTION_DAYS": "800"}


def create_database():
    server = os.environ["TIMESCALEDB_URL"]
    name = f"test_tsdb_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return urlunsplit(urlsplit(server)._replace(path="/" + name))


def drop_database(url):
    server = os.environ["TIMESCALEDB_URL"]
    with psycopg.connect(server, autocommit=True) as conn:
        # FORCE: the database's TimescaleDB scheduler stays connected to it.
        conn.execute(f"DROP DATABASE {urlsplit(url).path[1:]} WITH (FORCE)")


@pytest.fixture
def timescaledb():
    """A fresh database on the TimescaleDB server; yields its URL."""
    url = create_database()
    yield url
    drop_database(url)


KEY_COLUMNS = """
SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
WHERE i.indrelid = 'telemetry_reading'::regclass AND i.indisprimary ORDER BY array_position(i.indkey::int2[], a.attnum)
"""


def query(url, sql, params=()):
    with psycopg.connect(url, autocommit=True) as conn:
        cursor = conn.execute(sql, params)
        return cursor.fetchall() if cursor.description else None


def brute_force(rows, bucket_of):
    """{(key, bucket start): (min, max, sum, count)} over (key, time, value)."""
    buckets = {}
    for key, at, value in rows:
        buckets.setdefault((key, bucket_of(at)), []).append(value)
    return {k: (min(v), max(v), pytest.approx(sum(v)), len(v)) for k, v in buckets.items()}


def local_day(at):
    return datetime.combine(at.astimezone(BERLIN).date(), datetime.min.time(), tzinfo=BERLIN).astimezone(UTC)


def utc_hour(at):
    return at.replace(minute=0, second=0, microsecond=0)


def view_rows(url, view, key):
    return {
        (row[0], row[1]): row[2:] for row in query(url, f"SELECT {key}, bucket, min, max, sum, count FROM {view} ORDER BY 1, 2")
    }


def jobs_config(url):
    """{(procedure, relation): config} of the policies."""
    rows = query(
        url, "SELECT proc_name, hypertable_name, config FROM timescaledb_information.jobs WHERE hypertable_name IS NOT NULL"
    )
    return {(proc, relation): config for proc, relation, config in rows}


POLICY_JOB_STATS = """FROM timescaledb_information.job_stats JOIN timescaledb_information.jobs USING (job_id)
WHERE jobs.hypertable_name IS NOT NULL"""


def run_every_job_and_check_the_scheduler(url):
    """Have the scheduler run each policy once more; every run it made must have succeeded."""
    jobs = dict(query(url, f"SELECT job_id, coalesce(total_runs, 0) {POLICY_JOB_STATS}"))
    assert len(jobs) >= 2
    for job_id in jobs:
        query(url, "SELECT alter_job(%s, next_start => now())", [job_id])

    def ran_again():
        runs = dict(
            query(
                url, f"SELECT job_id, total_runs {POLICY_JOB_STATS} AND last_run_status IS NOT NULL AND job_status <> 'Running'"
            )
        )
        return all(runs.get(job_id, 0) > before for job_id, before in jobs.items())

    eventually(ran_again, timeout=120, interval=0.5, message="a run of every policy job by the scheduler")
    assert (
        query(
            url,
            "SELECT job_id, last_run_status, total_failures FROM timescaledb_information.job_stats "
            "WHERE total_failures > 0 OR last_run_status <> 'Success'",
        )
        == []
    )
    assert query(url, "SELECT job_id, proc_name, sqlerrcode, err_message FROM timescaledb_information.job_errors") == []


def test_it_keeps_rollups_as_continuous_aggregates_with_policies(timescaledb, tmp_path):
    url = timescaledb
    env = dict(LONG_RETENTION)
    # A hub of before the aggregates, with readings and rollup tables: the upgrade converts them.
    manage(url, "migrate", "telemetry", "0003", "--verbosity", "0", **env)
    manage(url, "migrate", "alerts", "--verbosity", "0", **env)
    manage(url, "migrate", "devices", "--verbosity", "0", **env)
    manage(url, "seed_demo", "--devices", "12", **env)
    assert query(url, "SELECT hypertable_name FROM timescaledb_information.hypertables") == [("telemetry_reading",)]
    # Readings every 20 minutes across the night Berlin's clocks go back (that day has 25 hours).
    fall_back = last_fall_back_day(datetime.now(UTC).date() - timedelta(days=2))
    first = datetime.combine(fall_back - timedelta(days=1), datetime.min.time(), tzinfo=UTC).replace(hour=20)
    times = [first + timedelta(minutes=20 * i) for i in range(3 * 32)]
    rows = [(device, at, round(20 + n + (at.timestamp() % 997) / 100, 2)) for n, device in enumerate(DEVICES) for at in times]
    path = readings_csv(tmp_path / "readings.csv", rows)
    out = manage(url, "import_readings", path, **env)
    assert f"{len(rows):,} new readings, 0 dead letters" in out
    span = (str(fall_back - timedelta(days=1)), str(fall_back + timedelta(days=2)))
    manage(url, "backfill", "--start", span[0], "--end", span[1], **env)
    assert query(url, "SELECT count(*) > 0 FROM telemetry_dailyrollup") == [(True,)]

    manage(url, "migrate", "telemetry", "0004", "--verbosity", "0", **env)
    # The scheduler compresses chunks past compress_after on its own; make sure all of them are, then
    # the re-key of 0005 (readings by (device, metric, time), no id) runs over compressed chunks.
    query(url, "SELECT compress_chunk(c, if_not_compressed => true) FROM show_chunks('telemetry_reading') c")
    manage(url, "migrate", "--verbosity", "0", **env)
    assert query(url, KEY_COLUMNS) == [("device_id",), ("metric_id",), ("time",)]
    assert query(url, "SELECT count(*) FROM telemetry_reading") == [(len(rows),)]
    assert sorted(query(url, "SELECT view_name FROM timescaledb_information.continuous_aggregates")) == [
        ("telemetry_dailyrollup",),
        ("telemetry_hourlyrollup",),
        ("telemetry_locationdailyrollup",),
        ("telemetry_locationhourlyrollup",),
    ]
    assert "0 new readings" in manage(url, "import_readings", path, **env)  # redelivered: stored once
    manage(url, "backfill", "--start", span[0], "--end", span[1], **env)

    pks = dict(query(url, "SELECT device_id, id FROM devices_device"))
    locations = dict(query(url, "SELECT id, location_id FROM devices_device"))
    by_device = [(pks[device], at, value) for device, at, value in rows]
    by_location = [(locations[pk], at, value) for pk, at, value in by_device]
    assert view_rows(url, "telemetry_hourlyrollup", "device_id") == brute_force(by_device, utc_hour)
    assert view_rows(url, "telemetry_dailyrollup", "device_id") == brute_force(by_device, local_day)
    assert view_rows(url, "telemetry_locationhourlyrollup", "location_id") == brute_force(by_location, utc_hour)
    daily = view_rows(url, "telemetry_locationdailyrollup", "location_id")
    assert daily == brute_force(by_location, local_day)
    fall_back_start = datetime.combine(fall_back, datetime.min.time(), tzinfo=BERLIN).astimezone(UTC)
    assert daily[(locations[pks["sim-00001"]], fall_back_start)][3] == 2 * 25 * 3  # two devices, 25 hours, 3 an hour

    # A late reading: marked dirty with its batch, refreshed by beat's task.
    late_hour = fall_back_start + timedelta(hours=3)
    late = [("sim-00002", late_hour + timedelta(minutes=5), 99.0)]
    manage(url, "import_readings", readings_csv(tmp_path / "late.csv", late), **env)
    manage(url, "shell", "-c", "from apps.telemetry.tasks import refresh_dirty_rollups; refresh_dirty_rollups()", **env)
    hour = query(
        url, "SELECT max, count FROM telemetry_hourlyrollup WHERE device_id = %s AND bucket = %s", [pks["sim-00002"], late_hour]
    )
    assert hour == [(99.0, 4)]

    # Policies as the settings ask.
    jobs = jobs_config(url)
    assert jobs[("policy_compression", "telemetry_reading")]["compress_after"] == "8 days"
    assert jobs[("policy_retention", "telemetry_reading")]["drop_after"] == "400 days"
    assert sum(proc == "policy_refresh_continuous_aggregate" for proc, _ in jobs) == 4
    assert sum(proc == "policy_retention" for proc, _ in jobs) == 3  # readings and both hourly aggregates

    # Compressed chunks still take (and deduplicate) a redelivery and new readings.
    assert query(url, "SELECT count(*) FROM timescaledb_information.chunks WHERE is_compressed") != [(0,)]
    assert "0 new readings" in manage(url, "import_readings", path, **env)
    extra = [("sim-00001", fall_back_start + timedelta(hours=12, minutes=7), 5.0)]
    assert "1 new readings" in manage(url, "import_readings", readings_csv(tmp_path / "extra.csv", extra), **env)
    assert query(url, "SELECT count(*) FROM telemetry_reading") == [(len(rows) + 2,)]

    # A device can still be deleted with aggregates in place.
    manage(
        url, "shell", "-c", "from apps.devices.models import Device; Device.objects.filter(device_id='sim-00005').delete()", **env
    )
    assert query(url, "SELECT count(*) FROM devices_device WHERE device_id = 'sim-00005'") == [(0,)]

    run_every_job_and_check_the_scheduler(url)


# Policy reconciliation: one migrated database, each setting changed in turn and put back.
DEFAULT_POLICIES = {
    ("policy_compression", "telemetry_reading"): ("compress_after", "8 days"),
    ("policy_retention", "telemetry_reading"): ("drop_after", "30 days"),
    ("policy_retention", "telemetry_hourlyrollup"): ("drop_after", "365 days"),
    ("policy_retention", "telemetry_locationhourlyrollup"): ("drop_after", "365 days"),
    **{
        ("policy_refresh_continuous_aggregate", view): ("start_offset", "8 days")
        for view in (
            "telemetry_hourlyrollup",
            "telemetry_locationhourlyrollup",
            "telemetry_dailyrollup",
            "telemetry_locationdailyrollup",
        )
    },
}


def policies(url):
    return {job: config[DEFAULT_POLICIES[job][0]] for job, config in jobs_config(url).items()}


@pytest.fixture(scope="module")
def migrated_timescaledb():
    url = create_database()
    manage(url, "migrate", "--verbosity", "0")
    yield url
    drop_database(url)


def test_it_creates_every_policy_and_a_second_run_changes_nothing(migrated_timescaledb):
    url = migrated_timescaledb
    assert policies(url) == {job: value for job, (_, value) in DEFAULT_POLICIES.items()}
    assert manage(url, "maintain_storage") == "maintain_storage: storage already matches the settings, nothing changed\n"
    run_every_job_and_check_the_scheduler(url)


@pytest.mark.parametrize(
    ("settings", "changed"),
    [
        ({"IOTHUB_RETENTION_DAYS": "90"}, {("policy_retention", "telemetry_reading"): "90 days"}),
        (
            {"IOTHUB_HOURLY_RETENTION_DAYS": "400"},
            {
                ("policy_retention", "telemetry_hourlyrollup"): "400 days",
                ("policy_retention", "telemetry_locationhourlyrollup"): "400 days",
            },
        ),
        (
            {"IOTHUB_MAX_PAST_AGE": "172800"},
            {
                ("policy_compression", "telemetry_reading"): "3 days",
                **{(proc, view): "3 days" for proc, view in DEFAULT_POLICIES if proc == "policy_refresh_continuous_aggregate"},
            },
        ),
        # Refresh windows never reach further back than raw readings are kept.
        (
            {"IOTHUB_RETENTION_DAYS": "5"},
            {
                ("policy_retention", "telemetry_reading"): "5 days",
                **{
                    (proc, view): "4 days 23:00:00"
                    for proc, view in DEFAULT_POLICIES
                    if proc == "policy_refresh_continuous_aggregate"
                },
            },
        ),
        # Every policy at once, hourly-aggregate retention included.
        (
            {"IOTHUB_MAX_PAST_AGE": "172800", "IOTHUB_HOURLY_RETENTION_DAYS": "400", "IOTHUB_RETENTION_DAYS": "60"},
            {
                ("policy_compression", "telemetry_reading"): "3 days",
                ("policy_retention", "telemetry_reading"): "60 days",
                ("policy_retention", "telemetry_hourlyrollup"): "400 days",
                ("policy_retention", "telemetry_locationhourlyrollup"): "400 days",
                **{(proc, view): "3 days" for proc, view in DEFAULT_POLICIES if proc == "policy_refresh_continuous_aggregate"},
            },
        ),
    ],
    ids=["retention", "hourly-retention", "max-past-age", "short-retention", "all-at-once"],
)
def test_it_applies_a_changed_setting_to_every_policy_it_touches(migrated_timescaledb, settings, changed):
    url = migrated_timescaledb
    defaults = {job: value for job, (_, value) in DEFAULT_POLICIES.items()}
    out = manage(url, "maintain_storage", **settings)
    lines = out.splitlines()
    assert len(lines) == len(changed), out
    for (proc, relation), value in changed.items():
        key, before = DEFAULT_POLICIES[(proc, relation)]
        assert f"maintain_storage: {proc} on {relation}: {key} {before} -> {value}" in lines
    assert policies(url) == {**defaults, **changed}
    assert "nothing changed" in manage(url, "maintain_storage", **settings)  # idempotent

    manage(url, "maintain_storage")  # back to the defaults
    assert policies(url) == defaults


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"IOTHUB_RETENTION_DAYS": "90", "IOTHUB_HOURLY_RETENTION_DAYS": "3"}, "IOTHUB_HOURLY_RETENTION_DAYS (3) must be longer"),
        ({"IOTHUB_MAX_PAST_AGE": "172800", "IOTHUB_RETENTION_DAYS": "1"}, "IOTHUB_RETENTION_DAYS must be at least 2"),
        ({"IOTHUB_RETENTION_DAYS": "90", "IOTHUB_MAX_PAST_AGE": "-1"}, "IOTHUB_MAX_PAST_AGE must not be negative"),
    ],
    ids=["hourly-retention-inside-refresh-window", "retention-under-two-days", "negative-max-past-age"],
)
def test_it_refuses_settings_the_policies_cannot_follow_and_changes_nothing(migrated_timescaledb, settings, named):
    """TimescaleDB's alter_job takes any interval, a negative one included: the hub checks first."""
    url = migrated_timescaledb
    before = policies(url)
    with pytest.raises(AssertionError, match=re.escape(named)) as refused:
        manage(url, "maintain_storage", **settings)
    assert "nothing was changed" in str(refused.value)
    assert policies(url) == before


def test_it_keeps_rollup_tables_that_hold_history_the_readings_no_longer_have(timescaledb, tmp_path):
    url = timescaledb
    manage(url, "migrate", "telemetry", "0003", "--verbosity", "0")  # a hub of before the aggregates
    manage(url, "migrate", "alerts", "--verbosity", "0")
    manage(url, "migrate", "devices", "--verbosity", "0")
    manage(url, "seed_demo", "--devices", "2")
    (device, metric) = query(
        url, "SELECT d.id, m.id FROM devices_device d, devices_metric m WHERE d.device_id = 'sim-00001' AND m.key = 'temperature'"
    )[0]
    today = datetime.now(BERLIN).date()
    old_day = datetime.combine(today - timedelta(days=500), datetime.min.time(), tzinfo=BERLIN).astimezone(UTC)
    query(
        url,
        "INSERT INTO telemetry_dailyrollup (device_id, metric_id, bucket, min, max, sum, count) VALUES (%s, %s, %s, 1, 3, 4, 2)",
        [device, metric, old_day],
    )
    assert "they stay tables" in manage(url, "migrate")
    assert query(url, "SELECT count(*) FROM timescaledb_information.continuous_aggregates") == [(0,)]
    assert query(url, "SELECT proc_name FROM timescaledb_information.jobs WHERE hypertable_name IS NOT NULL ORDER BY 1") == [
        ("policy_compression",),
        ("policy_retention",),
    ]
    # Rollups keep being recomputed into the tables, the old day stays.
    day = today - timedelta(days=2)
    at = datetime.combine(day, datetime.min.time(), tzinfo=BERLIN).replace(hour=11, minute=30)
    manage(url, "import_readings", readings_csv(tmp_path / "r.csv", [("sim-00001", at, 21.0)]))
    manage(url, "backfill", "--start", str(day), "--end", str(day + timedelta(days=1)))
    assert query(url, "SELECT bucket, count FROM telemetry_dailyrollup ORDER BY bucket") == [
        (old_day, 2),
        (datetime.combine(day, datetime.min.time(), tzinfo=BERLIN).astimezone(UTC), 1),
    ]
    run_every_job_and_check_the_scheduler(url)
