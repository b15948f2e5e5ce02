"""The TimescaleDB path on a real TimescaleDB: hypertable, rollups as continuous aggregates
(per device and per location, local days across DST), compression and retention policies.

The server is TimescaleDB 2.23 in PGlite (PostgreSQL 17 compiled to WebAssembly, from npm; see
scripts/timescaledb/server.mjs): one client at a time and no background scheduler, so every
hub step runs as its own `manage.py` process and the test runs the policies' jobs itself.
"""

import subprocess
import time
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import psycopg
import pytest

from .conftest import ARTIFACTS, ROOT, free_port, manage, readings_csv

SERVER = ROOT / "scripts" / "timescaledb" / "server.mjs"
BERLIN = ZoneInfo("Europe/Berlin")
DEVICES = ("sim-00001", "sim-00002", "sim-00012")  # sim-00001 and sim-00012 share a location


@pytest.fixture
def timescaledb():
    """A fresh in-memory TimescaleDB; yields its URL."""
    port = free_port()
    ARTIFACTS.mkdir(exist_ok=True)
    log = open(ARTIFACTS / "timescaledb-server.log", "wb")
    server = subprocess.Popen(["node", str(SERVER), str(port)], stdout=log, stderr=subprocess.STDOUT)
    url = f"postgresql://postgres:postgres@127.0.0.1:{port}/postgres?sslmode=disable"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                psycopg.connect(url, connect_timeout=2).close()
                break
            except psycopg.OperationalError:
                assert server.poll() is None and time.monotonic() < deadline, "TimescaleDB server did not start"
                time.sleep(0.3)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=10)
        log.close()


KEY_COLUMNS = """
SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
WHERE i.indrelid = 'telemetry_reading'::regclass AND i.indisprimary ORDER BY array_position(i.indkey::int2[], a.attnum)
"""


def query(url, sql, params=()):
    # Short-lived: the server serves one connection at a time, and the hub's processes need it.
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
        (row[0], row[1]): row[2:]
        for row in query(url, f"SELECT {key}, bucket, min, max, sum, count FROM {view} ORDER BY 1, 2")
    }


def test_it_keeps_rollups_as_continuous_aggregates_with_policies(timescaledb, tmp_path):
    url = timescaledb
    # A hub of before the aggregates, with readings and rollup tables: the upgrade converts them.
    manage(url, "migrate", "telemetry", "0003", "--verbosity", "0")
    manage(url, "migrate", "alerts", "--verbosity", "0")
    manage(url, "migrate", "devices", "--verbosity", "0")
    manage(url, "seed_demo", "--devices", "12")
    assert query(url, "SELECT hypertable_name FROM timescaledb_information.hypertables") == [("telemetry_reading",)]
    # Readings every 20 minutes across the night Berlin's clocks go back (Oct 25 has 25 hours).
    times = [datetime(2026, 10, 24, 20, tzinfo=UTC) + timedelta(minutes=20 * i) for i in range(3 * 32)]
    rows = [(device, at, round(20 + n + (at.timestamp() % 997) / 100, 2)) for n, device in enumerate(DEVICES) for at in times]
    path = readings_csv(tmp_path / "readings.csv", rows)
    out = manage(url, "import_readings", path)
    assert f"{len(rows):,} new readings, 0 dead letters" in out
    manage(url, "backfill", "--start", "2026-10-24", "--end", "2026-10-27")
    assert query(url, "SELECT count(*) > 0 FROM telemetry_dailyrollup") == [(True,)]

    manage(url, "migrate", "telemetry", "0004", "--verbosity", "0")
    # Compressed chunks, then the re-key of 0005 (readings by (device, metric, time), no id).
    query(url, "SELECT compress_chunk(c) FROM show_chunks('telemetry_reading') c")
    manage(url, "migrate", "--verbosity", "0")
    assert query(url, KEY_COLUMNS) == [("device_id",), ("metric_id",), ("time",)]
    assert query(url, "SELECT count(*) FROM telemetry_reading") == [(len(rows),)]
    assert sorted(query(url, "SELECT view_name FROM timescaledb_information.continuous_aggregates")) == [
        ("telemetry_dailyrollup",), ("telemetry_hourlyrollup",), ("telemetry_locationdailyrollup",), ("telemetry_locationhourlyrollup",),
    ]
    assert "0 new readings" in manage(url, "import_readings", path)  # redelivered: stored once
    manage(url, "backfill", "--start", "2026-10-24", "--end", "2026-10-27")

    pks = dict(query(url, "SELECT device_id, id FROM devices_device"))
    locations = dict(query(url, "SELECT id, location_id FROM devices_device"))
    by_device = [(pks[device], at, value) for device, at, value in rows]
    by_location = [(locations[pk], at, value) for pk, at, value in by_device]
    assert view_rows(url, "telemetry_hourlyrollup", "device_id") == brute_force(by_device, utc_hour)
    assert view_rows(url, "telemetry_dailyrollup", "device_id") == brute_force(by_device, local_day)
    assert view_rows(url, "telemetry_locationhourlyrollup", "location_id") == brute_force(by_location, utc_hour)
    daily = view_rows(url, "telemetry_locationdailyrollup", "location_id")
    assert daily == brute_force(by_location, local_day)
    fall_back_day = datetime(2026, 10, 25, tzinfo=BERLIN).astimezone(UTC)
    assert daily[(locations[pks["sim-00001"]], fall_back_day)][3] == 2 * 25 * 3  # two devices, 25 hours, 3 an hour

    # A late reading: marked dirty with its batch, refreshed by beat's task.
    late = [("sim-00002", datetime(2026, 10, 25, 1, 5, tzinfo=UTC), 99.0)]
    manage(url, "import_readings", readings_csv(tmp_path / "late.csv", late))
    manage(url, "shell", "-c", "from apps.telemetry.tasks import refresh_dirty_rollups; refresh_dirty_rollups()")
    hour = query(url, "SELECT max, count FROM telemetry_hourlyrollup WHERE device_id = %s AND bucket = %s",
                 [pks["sim-00002"], datetime(2026, 10, 25, 1, tzinfo=UTC)])
    assert hour == [(99.0, 4)]

    # Policies as the settings ask; beat brings them in line when a setting changes.
    jobs = {(proc, relation): config for proc, relation, config in query(
        url, "SELECT proc_name, hypertable_name, config FROM timescaledb_information.jobs WHERE hypertable_name IS NOT NULL")}
    assert jobs[("policy_compression", "telemetry_reading")]["compress_after"] == "8 days"
    assert jobs[("policy_retention", "telemetry_reading")]["drop_after"] == "30 days"
    assert sum(proc == "policy_refresh_continuous_aggregate" for proc, _ in jobs) == 4
    assert sum(proc == "policy_retention" for proc, _ in jobs) == 3  # readings and both hourly aggregates
    out = manage(url, "shell", "-c", "from apps.telemetry.tasks import maintain_storage; print(maintain_storage())",
                 IOTHUB_RETENTION_DAYS="90")
    assert "policy_retention on telemetry_reading: drop_after now 90 days" in out
    assert query(url, "SELECT config->>'drop_after' FROM timescaledb_information.jobs "
                      "WHERE proc_name = 'policy_retention' AND hypertable_name = 'telemetry_reading'") == [("90 days",)]

    # Compressed chunks still take (and deduplicate) a redelivery and new readings.
    (job,) = query(url, "SELECT job_id FROM timescaledb_information.jobs WHERE proc_name = 'policy_compression'")
    query(url, "SELECT compress_chunk(c) FROM show_chunks('telemetry_reading') c")
    assert query(url, "SELECT count(*) FROM timescaledb_information.chunks WHERE is_compressed") != [(0,)]
    query(url, f"CALL run_job({job[0]})")
    assert "0 new readings" in manage(url, "import_readings", path)
    extra = [("sim-00001", datetime(2026, 10, 25, 12, 7, tzinfo=UTC), 5.0)]
    assert "1 new readings" in manage(url, "import_readings", readings_csv(tmp_path / "extra.csv", extra))
    assert query(url, "SELECT count(*) FROM telemetry_reading") == [(len(rows) + 2,)]

    # A device can still be deleted with aggregates in place.
    manage(url, "shell", "-c", "from apps.devices.models import Device; Device.objects.filter(device_id='sim-00005').delete()")
    assert query(url, "SELECT count(*) FROM devices_device WHERE device_id = 'sim-00005'") == [(0,)]


def test_it_keeps_rollup_tables_that_hold_history_the_readings_no_longer_have(timescaledb, tmp_path):
    url = timescaledb
    manage(url, "migrate", "telemetry", "0003", "--verbosity", "0")  # a hub of before the aggregates
    manage(url, "migrate", "alerts", "--verbosity", "0")
    manage(url, "migrate", "devices", "--verbosity", "0")
    manage(url, "seed_demo", "--devices", "2")
    (device, metric) = query(url, "SELECT d.id, m.id FROM devices_device d, devices_metric m "
                                  "WHERE d.device_id = 'sim-00001' AND m.key = 'temperature'")[0]
    old_day = datetime(2025, 1, 1, tzinfo=BERLIN).astimezone(UTC)
    query(url, "INSERT INTO telemetry_dailyrollup (device_id, metric_id, bucket, min, max, sum, count) "
               "VALUES (%s, %s, %s, 1, 3, 4, 2)", [device, metric, old_day])
    assert "they stay tables" in manage(url, "migrate")
    assert query(url, "SELECT count(*) FROM timescaledb_information.continuous_aggregates") == [(0,)]
    assert query(url, "SELECT proc_name FROM timescaledb_information.jobs WHERE hypertable_name IS NOT NULL ORDER BY 1") == [
        ("policy_compression",), ("policy_retention",),
    ]
    # Rollups keep being recomputed into the tables, the old day stays.
    at = datetime(2026, 10, 25, 9, 30, tzinfo=UTC)
    manage(url, "import_readings", readings_csv(tmp_path / "r.csv", [("sim-00001", at, 21.0)]))
    manage(url, "backfill", "--start", "2026-10-25", "--end", "2026-10-26")
    assert query(url, "SELECT bucket, count FROM telemetry_dailyrollup ORDER BY bucket") == [
        (old_day, 2), (datetime(2026, 10, 25, tzinfo=BERLIN).astimezone(UTC), 1),
    ]
