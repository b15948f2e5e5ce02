"""Upgrades of a hub with data, on a database of its own: readings re-keyed by (device, metric, time)."""

import os
import sqlite3
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from .support import manage, readings_csv

KEY_COLUMNS = """
SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
WHERE i.indrelid = 'telemetry_reading'::regclass AND i.indisprimary ORDER BY array_position(i.indkey::int2[], a.attnum)
"""
READINGS = (
    "SELECT d.device_id, r.time, r.value FROM telemetry_reading r JOIN devices_device d ON d.id = r.device_id ORDER BY 1, 2"
)


@pytest.fixture
def postgres_database(unique):
    """An empty PostgreSQL database beside the test database; yields (url, query, key columns)."""
    server = os.environ["DATABASE_URL"].rsplit("/", 1)[0]
    name = f"iothub_upgrade_{unique}"
    with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = f"{server}/{name}"

    def query(sql):
        with psycopg.connect(url) as conn:
            return [tuple(row) for row in conn.execute(sql).fetchall()]

    yield url, query, lambda: query(KEY_COLUMNS)
    with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.fixture
def sqlite_database(tmp_path):
    """The embedded default's database, a SQLite file; yields (url, query, key columns)."""
    path = tmp_path / "hub.sqlite3"

    def query(sql):
        with sqlite3.connect(path) as conn:
            return conn.execute(sql).fetchall()

    def key_columns():
        columns = query("PRAGMA table_info(telemetry_reading)")
        return [(name,) for *_, name in sorted((pk, name) for _, name, _, _, _, pk in columns if pk)]

    yield f"sqlite:///{path}", query, key_columns


@pytest.mark.parametrize("database", ["postgres_database", "sqlite_database"])
def test_it_rekeys_stored_readings_by_device_metric_and_time(database, request, tmp_path):
    url, query, key_columns = request.getfixturevalue(database)
    manage(url, "migrate", "telemetry", "0004", "--verbosity", "0")  # a hub of before: readings with an id
    manage(url, "migrate", "alerts", "--verbosity", "0")
    manage(url, "migrate", "devices", "--verbosity", "0")
    manage(url, "seed_demo", "--devices", "2")
    recent = datetime.now(UTC).replace(microsecond=250_000) - timedelta(hours=1)
    rows = [(device, recent - timedelta(minutes=m), 20.0 + m) for device in ("sim-00001", "sim-00002") for m in range(5)]
    path = readings_csv(tmp_path / "readings.csv", rows)
    assert "10 new readings" in manage(url, "import_readings", path)
    before = query(READINGS)
    assert len(before) == 10

    manage(url, "migrate", "--verbosity", "0")
    assert key_columns() == [("device_id",), ("metric_id",), ("time",)]
    assert query(READINGS) == before
    assert "0 new readings" in manage(url, "import_readings", path)  # a redelivery, on the new key
    late = [("sim-00001", recent + timedelta(seconds=1), 1.0)]
    assert "1 new readings" in manage(url, "import_readings", readings_csv(tmp_path / "late.csv", late))
