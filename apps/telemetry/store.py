"""Writes of the ingest path: readings (COPY, idempotent) and dead letters."""

from datetime import UTC, datetime

from django.db import connection

from .models import DeadLetter, Reading

DEAD_LETTER_PAYLOAD_LIMIT = 4096

# Rows land in a per-session temp table through binary COPY, then move with one
# INSERT … ON CONFLICT DO NOTHING: COPY speed, and a redelivered reading is stored once.
# Times travel as epoch seconds and become timestamptz in SQL: no Python datetime per reading.
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
