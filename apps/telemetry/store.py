"""Writes of the ingest path: readings (COPY, idempotent) and dead letters."""

from datetime import UTC, datetime

from django.db import connection, transaction
from psycopg.errors import UniqueViolation

from .models import DeadLetter, Reading

DEAD_LETTER_PAYLOAD_LIMIT = 4096

# A batch is first copied straight into telemetry_reading (binary COPY, in a savepoint). A batch
# with a reading that is stored already (a redelivery) fails there as a whole and takes the
# second way: a per-session temp table by binary COPY, then one INSERT … ON CONFLICT DO NOTHING,
# so that only the new readings are stored. The second way costs PostgreSQL about twice as much
# per row; redeliveries are rare (a consumer restart, a reconnect).
#
# No Python datetime per reading either way: the direct COPY sends timestamptz in its binary
# form, microseconds since 2000-01-01 as an int8, and the temp table takes epoch seconds that
# to_timestamp() turns into the same microseconds (both round the same double the same way).
PG_EPOCH = 946_684_800  # 2000-01-01T00:00:00Z in Unix seconds
COPY_READINGS = "COPY telemetry_reading (device_id, metric_id, time, value) FROM STDIN (FORMAT BINARY)"
CREATE_STAGING = """
CREATE TEMP TABLE IF NOT EXISTS reading_staging_epoch (
    device_id bigint, metric_id bigint, epoch double precision, value double precision
) ON COMMIT DELETE ROWS
"""
COPY_STAGING = "COPY reading_staging_epoch (device_id, metric_id, epoch, value) FROM STDIN (FORMAT BINARY)"
MOVE_STAGING = """
INSERT INTO telemetry_reading (device_id, metric_id, time, value)
SELECT device_id, metric_id, to_timestamp(epoch), value FROM reading_staging_epoch
ON CONFLICT (device_id, metric_id, time) DO NOTHING
"""


def binary_timestamptz(ts):
    """Epoch seconds → timestamptz as binary COPY sends it (rint((ts − 2000-01-01) × 10⁶), as to_timestamp does)."""
    return round((ts - PG_EPOCH) * 1_000_000)


def to_datetime(ts):
    return datetime.fromtimestamp(ts, tz=UTC)


def store_readings(rows):
    """Store (device_pk, metric_pk, ts_seconds, value) rows; returns how many were new.

    Call inside a transaction: the staging table empties itself on commit.
    """
    if not rows:
        return 0
    if connection.vendor != "postgresql":
        objs = [Reading(device_id=d, metric_id=m, time=to_datetime(ts), value=v) for d, m, ts, v in rows]
        return len(Reading.objects.bulk_create(objs, ignore_conflicts=True, batch_size=500))
    with connection.cursor() as cursor:
        try:
            with transaction.atomic(), cursor.copy(COPY_READINGS) as copy:
                copy.set_types(["int8", "int8", "int8", "float8"])
                for device, metric, ts, value in rows:
                    copy.write_row((device, metric, binary_timestamptz(ts), value))
            return len(rows)
        except UniqueViolation:
            pass  # rolled back to the savepoint: stored already, some or all of them
        cursor.execute(CREATE_STAGING)
        with cursor.copy(COPY_STAGING) as copy:
            copy.set_types(["int8", "int8", "float8", "float8"])
            for row in rows:
                copy.write_row(row)
        cursor.execute(MOVE_STAGING)
        return cursor.rowcount


def store_dead_letters(rejections):
    DeadLetter.objects.bulk_create(
        [
            DeadLetter(
                source=r.message.source,
                topic=r.message.topic[:255],
                received_at=to_datetime(r.message.received_at),
                payload=r.message.payload[:DEAD_LETTER_PAYLOAD_LIMIT].decode("utf-8", "replace"),
                reason=r.reason,
                detail=r.detail[:255],
            )
            for r in rejections
        ]
    )
