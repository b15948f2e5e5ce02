"""Time partitioning of telemetry_reading on PostgreSQL (a TimescaleDB hypertable where present).

Plain PostgreSQL: daily range partitions created ahead of time, plus a DEFAULT partition so a
reading for a day without a partition is never lost; creating a day whose rows already sit in
the default partition moves them first (otherwise PostgreSQL refuses the new partition).
Retention drops whole partitions, never deletes rows from the hot table. (On TimescaleDB a
retention policy drops whole chunks: apps.telemetry.timescale.)
"""

from datetime import UTC, date, datetime, timedelta

from django.db import connection, transaction

PARENT = "telemetry_reading"


def timescaledb_available(cursor):
    cursor.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'")
    return cursor.fetchone() is not None


def is_hypertable(cursor):
    cursor.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'")
    if cursor.fetchone() is None:
        return False
    cursor.execute("SELECT 1 FROM timescaledb_information.hypertables WHERE hypertable_name = %s", [PARENT])
    return cursor.fetchone() is not None


def partition_name(day):
    return f"{PARENT}_p{day:%Y%m%d}"


def existing_partitions(cursor):
    cursor.execute(
        """
        SELECT c.relname FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent
        WHERE p.relname = %s
        """,
        [PARENT],
    )
    return {name for (name,) in cursor.fetchall()}


def create_day_partition(cursor, day):
    name = partition_name(day)
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    end = start + timedelta(days=1)
    with transaction.atomic():
        cursor.execute(f"LOCK TABLE {PARENT}_default IN ACCESS EXCLUSIVE MODE")
        cursor.execute(f"CREATE TABLE {name} (LIKE {PARENT} INCLUDING DEFAULTS)")
        cursor.execute(
            f"WITH moved AS (DELETE FROM {PARENT}_default WHERE time >= %s AND time < %s RETURNING *) "
            f"INSERT INTO {name} SELECT * FROM moved",
            [start, end],
        )
        cursor.execute(f"ALTER TABLE {PARENT} ATTACH PARTITION {name} FOR VALUES FROM (%s) TO (%s)", [start, end])


def ensure_partitions(*, days_back=8, days_ahead=7, today=None):
    """Create the daily partitions from days_back ago to days_ahead; returns the names created."""
    if connection.vendor != "postgresql":
        return []
    today = today or datetime.now(UTC).date()
    created = []
    with connection.cursor() as cursor:
        if is_hypertable(cursor):
            return []
        existing = existing_partitions(cursor)
        for offset in range(-days_back, days_ahead + 1):
            day = today + timedelta(days=offset)
            if partition_name(day) not in existing:
                create_day_partition(cursor, day)
                created.append(partition_name(day))
    return created


def drop_partitions_before(cutoff: date):
    """Retention: drop every daily partition that ends on or before `cutoff`."""
    if connection.vendor != "postgresql":
        return []
    dropped = []
    with connection.cursor() as cursor:
        for name in sorted(existing_partitions(cursor)):
            suffix = name.rsplit("_p", 1)[-1]
            if suffix.isdigit() and datetime.strptime(suffix, "%Y%m%d").date() < cutoff:
                cursor.execute(f"DROP TABLE {name}")
                dropped.append(name)
    return dropped


CREATE_PARTITIONED = f"""
CREATE TABLE {PARENT} (
    time timestamptz NOT NULL,
    device_id bigint NOT NULL,
    metric_id bigint NOT NULL,
    value double precision NOT NULL,
    PRIMARY KEY (device_id, metric_id, time)
)
"""


def create_reading_table(schema_editor, model):
    """Migration step: the readings table as a hypertable, a partitioned table, or (SQLite) plain."""
    if schema_editor.connection.vendor != "postgresql":
        schema_editor.create_model(model)
        return
    with schema_editor.connection.cursor() as cursor:
        if timescaledb_available(cursor):
            cursor.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
            cursor.execute(CREATE_PARTITIONED)
            cursor.execute("SELECT create_hypertable(%s, 'time', chunk_time_interval => interval '1 day')", [PARENT])
            return
        cursor.execute(CREATE_PARTITIONED + " PARTITION BY RANGE (time)")
        cursor.execute(f"CREATE TABLE {PARENT}_default PARTITION OF {PARENT} DEFAULT")


def rekey_reading_table(schema_editor, model):
    """Migration step: readings keyed by (device, metric, time) alone, without the surrogate id of
    before (tables created since have that layout already). Rebuilds the key's index once."""
    if schema_editor.connection.vendor != "postgresql":
        # SQLite changes a key by copying the table; Django's schema editor has no step for a composite one.
        schema_editor.execute(f'ALTER TABLE "{PARENT}" RENAME TO "{PARENT}_with_id"')
        schema_editor.create_model(model)
        schema_editor.execute(
            f'INSERT INTO "{PARENT}" (time, device_id, metric_id, value) '
            f'SELECT time, device_id, metric_id, value FROM "{PARENT}_with_id"'
        )
        schema_editor.execute(f'DROP TABLE "{PARENT}_with_id"')
        return
    with schema_editor.connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM information_schema.columns WHERE table_name = %s AND column_name = 'id'", [PARENT])
        if cursor.fetchone() is None:
            return
        # Dropping id drops the old primary key (id, time) with it, in every partition or chunk.
        cursor.execute(f"ALTER TABLE {PARENT} DROP COLUMN id")
        cursor.execute(
            f"ALTER TABLE {PARENT} DROP CONSTRAINT reading_device_metric_time, ADD PRIMARY KEY (device_id, metric_id, time)"
        )
