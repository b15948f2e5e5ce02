"""In-process copies of the device master that follow admin edits.

Hot paths (ingest enrichment, the realtime answer of a whole factory) read dicts instead of the
database. A copy is reloaded only when a table it is made of changed, which one cheap query
tells: the row count and newest `updated_at` of each table (deletes move the count, saves move
`updated_at`, and the hub's own bulk updates set it). Missed: an edit whose `updated_at` is older
than one already seen when it commits (two long admin transactions at once), and writes that
bypass `updated_at` (raw SQL, `loaddata`); the next edit brings them in.
"""

import threading
import time

from django.db import connection

from iothub.runtime import keep_out_of_garbage_collection


def change_marks(tables):
    """(count, newest updated_at) of each model in `tables`, in one round trip; count alone for a
    table without `updated_at` (a many-to-many table)."""
    columns = []
    for model in tables:
        table = connection.ops.quote_name(model._meta.db_table)
        columns.append(f"(SELECT count(*) FROM {table})")
        if any(field.name == "updated_at" for field in model._meta.concrete_fields):
            columns.append(f"(SELECT max(updated_at) FROM {table})")
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {', '.join(columns)}")
        return cursor.fetchone()


class MasterSnapshot:
    """The result of `load()`, loaded again when the change marks of `tables` moved; they are
    checked at most every `refresh_seconds` (0: on every `get()`, so a copy is never stale).
    Safe to share between threads: a reader sees one whole snapshot. A value must hold no reference
    cycles: it is frozen out of the garbage collector's sight and freed by reference counting."""

    def __init__(self, *, load, tables, refresh_seconds):
        self.load = load
        self.tables = tables
        self.refresh_seconds = refresh_seconds
        self._current = None  # (marks, value), replaced whole
        self._checked_at = 0.0
        self._lock = threading.Lock()  # one reload at a time; readers wait only while a changed copy loads

    def get(self):
        current = self._current
        now = time.monotonic()
        if current is not None and now - self._checked_at < self.refresh_seconds:
            return current[1]
        marks = change_marks(self.tables)
        if current is not None and current[0] == marks:
            self._checked_at = now
            return current[1]
        with self._lock:
            # Read again: another thread may have loaded a newer copy while this one waited.
            marks, current = change_marks(self.tables), self._current
            if current is None or current[0] != marks:
                # Marks read before the load: an edit in between only causes one more reload.
                current = self._current = (marks, self.load())
                keep_out_of_garbage_collection()
            self._checked_at = now
        return current[1]

    def invalidate(self):
        self._current = None
