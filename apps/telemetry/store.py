"""Writes of the ingest path: readings (COPY, idempotent) and dead letters."""

from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
from django.db import connection, transaction
from psycopg.errors import UniqueViolation

from .models import DeadLetter, Reading

DEAD_LETTER_PAYLOAD_LIMIT = 4096

# A batch is copied straight into telemetry_reading: one binary COPY (in a savepoint) that the
# batch's rows are written into as they are known, the measured ones first. PostgreSQL stores
# them while ingest works out the rest (the calculated readings, what the live push and the
# alerts get): that Python work and PostgreSQL's run side by side on two cores. A batch with a
# reading that is stored already (a redelivery) fails there as a whole and takes the second way:
# the same binary rows into a per-session temp table, then one INSERT … ON CONFLICT DO NOTHING,
# so that only the new readings are stored. The second way costs PostgreSQL about twice as much
# per row; redeliveries are rare (a consumer restart, a reconnect).
#
# The rows are packed as numpy arrays of the rows' binary form (a timestamptz is sent as
# microseconds since 2000-01-01 in an int8: no Python datetime per reading), not through psycopg's
# write_row, which adapts every field on its own.
#
# numpy releases the GIL in an operation over more than 500 values, and in some whatever the size:
# any sort, take, arange, 2-D fancy indexing. In the ingest process, whose MQTT network thread wants the GIL all the time
# during a backlog, every release then costs the loop up to a switch interval (5 ms) before it has
# the GIL back: next to a thread that wanted the GIL, numpy calls over 2,500 values took 20 to 600
# times as long as alone. The hot path packs, validates and calculates GIL_HELD_ROWS readings at a
# time (a message with more is taken whole; a calculated metric that uses another joins their values).
GIL_HELD_ROWS = 500
PG_EPOCH = 946_684_800  # 2000-01-01T00:00:00Z in Unix seconds
COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # signature, flags, no header extension
COPY_TRAILER = b"\xff\xff"
BINARY_ROW = np.dtype(  # 4 fields, each its length and value: int8, int8, int8 (timestamptz), float8
    [
        ("fields", ">i2"),
        ("device_length", ">i4"),
        ("device", ">i8"),
        ("metric_length", ">i4"),
        ("metric", ">i8"),
        ("time_length", ">i4"),
        ("time", ">i8"),
        ("value_length", ">i4"),
        ("value", ">f8"),
    ]
)
COPY_READINGS = "COPY telemetry_reading (device_id, metric_id, time, value) FROM STDIN (FORMAT BINARY)"
CREATE_STAGING = """
CREATE TEMP TABLE IF NOT EXISTS reading_staging (
    device_id bigint, metric_id bigint, time timestamptz, value double precision
) ON COMMIT DELETE ROWS
"""
COPY_STAGING = "COPY reading_staging (device_id, metric_id, time, value) FROM STDIN (FORMAT BINARY)"
MOVE_STAGING = """
INSERT INTO telemetry_reading (device_id, metric_id, time, value)
SELECT device_id, metric_id, time, value FROM reading_staging
ON CONFLICT (device_id, metric_id, time) DO NOTHING
"""


@dataclass(frozen=True, slots=True)
class ReadingColumns:
    """Readings as arrays, one value of each per reading: device pk, metric pk, time (epoch s), value."""

    devices: np.ndarray
    metrics: np.ndarray
    times: np.ndarray
    values: np.ndarray

    @classmethod
    def of(cls, rows):
        """(device_pk, metric_pk, ts, value) rows → their columns."""
        count = len(rows)
        devices, metrics, times, values = zip(*rows) if rows else ((), (), (), ())
        return cls(
            np.fromiter(devices, np.int64, count),
            np.fromiter(metrics, np.int64, count),
            np.fromiter(times, np.float64, count),
            np.fromiter(values, np.float64, count),
        )

    def __len__(self):
        return len(self.times)

    def rows(self):
        """→ [(device_pk, metric_pk, ts, value)]."""
        return list(zip(self.devices.tolist(), self.metrics.tolist(), self.times.tolist(), self.values.tolist()))


def binary_rows(readings):
    """ReadingColumns → their binary COPY tuples, as one bytes object, GIL_HELD_ROWS at a time.

    A timestamptz is rint((ts − 2000-01-01) × 10⁶), as PostgreSQL's to_timestamp computes it."""
    parts = []
    for start in range(0, len(readings), GIL_HELD_ROWS):
        end = start + GIL_HELD_ROWS
        packed = np.empty(len(readings.times[start:end]), BINARY_ROW)
        packed["fields"] = 4
        for length in ("device_length", "metric_length", "time_length", "value_length"):
            packed[length] = 8
        packed["device"], packed["metric"] = readings.devices[start:end], readings.metrics[start:end]
        packed["time"] = np.rint((readings.times[start:end] - PG_EPOCH) * 1_000_000)
        packed["value"] = readings.values[start:end]
        parts.append(packed.tobytes())
    return b"".join(parts)


def to_datetime(ts):
    return datetime.fromtimestamp(ts, tz=UTC)


class CopiedReadings:
    """The rows written so far into the COPY of copy_readings; `stored` is set when it ends."""

    def __init__(self, copy):
        self.copy = copy  # psycopg Copy, None without PostgreSQL (then the rows are kept until the end)
        self.written = []  # binary rows (PostgreSQL) or the rows themselves
        self.count = 0
        self.stored = None

    def write(self, rows):
        """Write (device_pk, metric_pk, ts, value) rows; returns them as ReadingColumns."""
        readings = ReadingColumns.of(rows)
        self.write_columns([readings])
        return readings

    def write_columns(self, parts):
        """Write ReadingColumns, in one write to the COPY (each write waits for the socket, and
        gives the GIL away while it does)."""
        self.count += sum(map(len, parts))
        if self.copy is None:
            self.written += [row for readings in parts for row in readings.rows()]
        elif data := b"".join(binary_rows(readings) for readings in parts):
            self.copy.write(data)
            self.written.append(data)


@contextmanager
def copy_readings():
    """Store the (device_pk, metric_pk, ts_seconds, value) rows written to the CopiedReadings it
    gives, in one COPY; its `stored`: how many were new. Call inside a transaction (the staging
    table empties itself on commit)."""
    if connection.vendor != "postgresql":
        readings = CopiedReadings(None)
        yield readings
        objs = [Reading(device_id=d, metric_id=m, time=to_datetime(ts), value=v) for d, m, ts, v in readings.written]
        readings.stored = len(Reading.objects.bulk_create(objs, ignore_conflicts=True, batch_size=500))
        return
    with connection.cursor() as cursor:
        try:
            with transaction.atomic(), cursor.copy(COPY_READINGS) as copy:
                copy.write(COPY_HEADER)
                readings = CopiedReadings(copy)
                yield readings
                copy.write(COPY_TRAILER)
            readings.stored = readings.count
            return
        except UniqueViolation:
            pass  # rolled back to the savepoint: stored already, some or all of them
        cursor.execute(CREATE_STAGING)
        with cursor.copy(COPY_STAGING) as copy:
            copy.write(b"".join([COPY_HEADER, *readings.written, COPY_TRAILER]))
        cursor.execute(MOVE_STAGING)
        readings.stored = cursor.rowcount


def store_readings(rows):
    """Store (device_pk, metric_pk, ts_seconds, value) rows (in a transaction); returns how many were new."""
    if not rows:
        return 0
    with copy_readings() as readings:
        readings.write(rows)
    return readings.stored


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
