"""One ingest batch: validate, enrich, store, then (on commit) cache, push live and hand to alerts.

Sources (MQTT, Kafka, HTTP) call `ingest_batch` and acknowledge their messages only after it
returns, i.e. after the database commit: delivery is at least once, storage is idempotent.
"""

import logging
import queue
import threading
import time
import uuid
from dataclasses import dataclass
from functools import partial
from itertools import chain, repeat
from operator import itemgetter

import numpy as np
import orjson
from django.conf import settings
from django.db import transaction

from iothub.best_effort import BestEffort

from .calculations import Readings, StateTables, calculate, calculate_past_batch
from .handoff import ALERT_HAND_OFF, alert_rules
from .latest import get_latest_documents, store_latest
from .models import DeadLetter
from .payloads import Rejection, rows_by_pair, validate_messages
from .rollups import hours_of, mark_dirty_hours
from .selectors import stored_inputs
from .store import GIL_HELD_ROWS, ReadingColumns, copy_readings, store_dead_letters

log = logging.getLogger(__name__)


LATENCY_SAMPLES = 1000
TS = itemgetter(2)
HISTORICAL_MAX_AGE = 100 * 365 * 86400


@dataclass(slots=True)
class BatchResult:
    messages: int
    readings: int
    stored: int
    rejections: list
    sample_ts: list  # reading timestamps (epoch s), at most LATENCY_SAMPLES of them

    def latencies(self, committed_at):
        """Reading timestamp → commit, in seconds, for the sampled readings."""
        return [committed_at - ts for ts in self.sample_ts]


def live_item(device, metric_key, ts, value, status):
    """A reading as the latest values and the live push keep it (ts in epoch ms); device: its DeviceInfo."""
    return {"device": device.device_id, "metric": metric_key, "value": value, "ts": int(ts * 1000), "status": status}


def describe_pairs(pairs, *, devices, master, calculated_items=()):
    """Stored rows by (device, metric) — every row of a pair whose metric has thresholds, at least
    the newest of the others — → (live items: the newest reading of each (device, metric) with its
    threshold status, then `calculated_items`; the rows that can move an alert; newest ts per device).

    Thresholds are resolved once per (device, metric), and Celery gets only the readings of pairs
    with a threshold that can change their alert (the alert rules' significant_readings, apps.telemetry.handoff).
    calculated_items: live items of calculated metrics without thresholds (CalculationInputs.newest_calculated),
    whose times are those of the measured readings that triggered them.
    """
    resolve, with_thresholds = master.thresholds.resolve, master.thresholds.metric_pks
    significant_readings = alert_rules().significant_readings
    last_seen = {}
    items = []
    evaluate_rows = []
    for (device_pk, metric_pk), pair_rows in pairs.items():
        device = devices[device_pk]
        bands = None
        if metric_pk in with_thresholds:
            bands = resolve(device_pk=device_pk, location_pk=device.location_pk, type_pk=device.type_pk, metric_pk=metric_pk)
        pair_rows.sort(key=TS)
        _, _, ts, value = pair_rows[-1]
        if ts > last_seen.get(device_pk, 0):
            last_seen[device_pk] = ts
        items.append(live_item(device, master.metric_keys[metric_pk], ts, value, bands.status(value) if bands else None))
        if bands:
            evaluate_rows += [(d, m, t, v, bands.pk) for d, m, t, v in significant_readings(bands, pair_rows)]
    items += calculated_items
    return items, evaluate_rows, last_seen


LATEST_VALUES = BestEffort("latest_values")
CALCULATION_INPUTS = BestEffort("calculation_inputs")


def read_latest_documents(device_ids):
    """{device_id: its latest values document, or None}; every document None while Redis is away
    (then only the readings that the ingest has seen are inputs of calculated metrics)."""
    return dict(zip(device_ids, CALCULATION_INPUTS(get_latest_documents, device_ids) or repeat(None)))


class CalculationInputs(StateTables):
    """The ingest loop's memory of its devices' inputs of calculated metrics, beyond a batch's own
    readings: the StateTables its batches moved on and, merged into them, each device's latest
    values document, read at most every `refresh` seconds (the newer value of each input counts). A
    batch that does not commit leaves nothing behind (begin_batch).

    Reading every batch's documents after the batch before it had merged its latest values kept the
    loop waiting for Redis, busy with those merges, for 6–7 % of a drain (timed inside an ingest
    during bench_ingest --only calculated). The tables are newer than the documents where the merges
    of the loop's own batches are still to come (they run on the AfterCommitThread); readings that
    other ingest processes store reach the calculations here within `refresh` seconds. The inputs of
    every device with calculated metrics that the process has seen are kept: a few numbers each."""

    def __init__(self, refresh=1.0):
        super().__init__()
        self.refresh = refresh
        self.master = None
        self.changes = []  # (table, its cells as they were) of the batch being ingested

    def begin_batch(self, master):
        """Call inside a batch's transaction, before it calculates: undoes what the batch before it
        changed if that one did not commit. master: the batch's DeviceMaster (a new one may have
        other calculations for a device)."""
        for table, before in reversed(self.changes):
            table.restore(before)
        changes = self.changes = []
        transaction.on_commit(changes.clear)
        if master is not self.master:
            self.master = master
            self.forget_kinds()

    def table_rows(self, calculations, device_pks, devices):
        table, rows = super().table_rows(calculations, device_pks, devices)
        now = time.monotonic()
        unread = table.read_at[rows] < now - self.refresh
        if unread.any():
            unread_rows = dict(zip(rows[unread].tolist(), device_pks[unread].tolist()))  # once each
            self.read_documents(table, calculations, unread_rows, devices)
            table.read_at[list(unread_rows)] = now
        return table, rows

    def read_documents(self, table, calculations, device_pks, devices):
        """Merge the latest values documents of the devices into their rows of the table.

        device_pks: row → device pk; devices: device pk → DeviceInfo."""
        columns = {key: int(calculations.column_by_pk[pk]) for key, pk in calculations.input_keys.items()}
        device_ids = [devices[pk].device_id for pk in device_pks.values()]
        documents = read_latest_documents(device_ids)
        found = []
        for row, device_id in zip(device_pks, device_ids):
            if document := documents[device_id]:
                latest = orjson.loads(document)
                found += [
                    (row, column, item["ts"] / 1000, item["value"])
                    for key, column in columns.items()
                    if (item := latest.get(key))
                ]
        for start in range(0, len(found), GIL_HELD_ROWS):
            table_rows, table_columns, times, values = zip(*found[start : start + GIL_HELD_ROWS])
            table.keep_newer(
                Readings(np.array(table_rows), np.array(table_columns), np.array(times), np.array(values, np.float64))
            )

    def advance(self, table, readings):
        self.changes.append((table, table.keep_newer(readings)))

    def newest_calculated(self, *, leaving_out, devices, metric_keys):
        """Live items (live_item, no status) of the newest value of each calculated metric of each
        device that the batch changed (the tables' own: a value older than the one they hold
        changes nothing), the metrics `leaving_out` left out.

        devices: device pk → DeviceInfo; metric_keys: metric pk → key (the batch's DeviceMaster)."""
        cells_by_table = {}  # StateTable → {cell: None}, each cell once
        for table, (cells, _, _) in self.changes:
            calculated = cells[table.calculated[cells % table.width]]
            cells_by_table.setdefault(table, {}).update(dict.fromkeys(calculated.tolist()))
        items = []
        for table, cells in cells_by_table.items():
            cells = list(cells)
            for start in range(0, len(cells), GIL_HELD_ROWS):
                part = np.array(cells[start : start + GIL_HELD_ROWS], np.int64)
                items += [
                    live_item(devices[device_pk], metric_keys[metric_pk], ts, value, None)
                    for device_pk, metric_pk, ts, value in zip(
                        table.device_pks[part // table.width].tolist(),
                        table.metric_pks[part % table.width].tolist(),
                        table.times[part].tolist(),
                        table.values[part].tolist(),
                    )
                    if metric_pk not in leaving_out
                ]
        return items


def reject_failed_calculations(batch, failures):
    """A failed calculation [(device_pk, ts, metric key, error)] becomes a dead letter of its
    message, whose other readings are stored."""
    if not failures:
        return
    message_of = batch.messages_by_reading()
    failed = {}
    for device_pk, ts, key, error in failures:
        message = message_of[(device_pk, ts)]
        failed.setdefault((id(message), key), Rejection(message, DeadLetter.Reason.CALCULATION_FAILED, f"{key}: {error}"))
    batch.rejections.extend(failed.values())


class BatchWriter:
    """validate_messages' `store` for one batch: writes the validated readings into the COPY of
    `readings` (a CopiedReadings) and, where device types have calculated metrics (states: the
    batch's CalculationInputs, else None), calculates from each part and writes the values computed
    with it. PostgreSQL then stores them while the next part is validated, where values written at
    the end of the batch kept ingest waiting for PostgreSQL at the end of the COPY (bench_ingest
    --only calculated). A part's calculations start from the input values the parts before it brought."""

    def __init__(self, readings, states):
        self.readings = readings
        self.states = states
        self.calculated = []  # ReadingColumns
        self.failures = []  # (device_pk, ts, metric key, error)

    def __call__(self, rows, devices):
        measured = ReadingColumns.of(rows)
        calculated = []
        if self.states is not None:
            calculated, failures = calculate(measured, devices=devices, states=self.states)
            self.calculated += calculated
            self.failures += failures
        self.readings.write_columns([measured, *calculated])

    def calculated_rows(self, metric_pks):
        """The calculated rows of these metrics."""
        return list(chain.from_iterable(part.rows() for part in self.calculated if part.metrics[0] in metric_pks))


def after_commit(batch_id, description, publisher):
    """Nothing here may fail the stored batch (its source would store it again): the latest values
    and the live push are skipped while Redis is away, the alert hand-off is held until the broker
    answers."""
    items, evaluate_rows, last_seen = description
    LATEST_VALUES(store_latest, items)
    if publisher is not None:
        publisher.add(items)
    ALERT_HAND_OFF.send(batch_id=batch_id, rows=evaluate_rows, last_seen=last_seen)


class AfterCommitThread:
    """Runs each committed batch's after_commit on a thread of its own, in commit order: the ingest
    loop goes on with the next batch while Redis and the broker answer (the batch is stored and its
    messages are acknowledged, nothing waits for this). At most `limit` pieces of work wait for it,
    so an unanswering Redis slows the loop down instead of piling batches up."""

    def __init__(self, limit=2):
        self.queue = queue.Queue(maxsize=limit)
        threading.Thread(target=self.run_forever, name="after-commit", daemon=True).start()

    def submit(self, work):
        """Run work() after the work submitted before it."""
        self.queue.put(work)

    def run_forever(self):
        while True:
            work = self.queue.get()
            try:
                work()
            except Exception:  # a bug must not stop the live values and alerts of the batches after it
                log.exception("after commit failed")
            finally:
                self.queue.task_done()

    def wait(self):
        """Return once all the work submitted so far has run."""
        self.queue.join()


def ingest_batch(messages, *, master_cache, publisher=None, historical=False, after_commits=None, calculation_inputs=None):
    """Process one batch of Message; returns a BatchResult once the batch is committed.

    after_commits: an AfterCommitThread to run after_commit on, or None to run it when the batch
    commits, before this returns. calculation_inputs: the ingest loop's CalculationInputs, or None
    to read the latest values documents when the batch needs them.

    historical=True (CSV import): any past timestamp is fine, calculated metrics are computed from
    the stored readings, and the batch is only stored — no latest values, live push or alert
    evaluation for readings of the past.
    """
    config = settings.IOTHUB
    batch_id = uuid.uuid4().hex[:12]  # correlates this batch's log lines in ingest and worker
    master = master_cache.get()
    validate = partial(
        validate_messages,
        master=master,
        now=time.time(),
        max_bytes=config["MAX_PAYLOAD_BYTES"],
        max_future_skew=config["MAX_FUTURE_SKEW"],
        max_past_age=HISTORICAL_MAX_AGE if historical else config["MAX_PAST_AGE"],
    )
    with transaction.atomic():
        if historical:  # readings of the past take their inputs from the database: read before it is busy with the COPY
            batch = validate(messages)
            calculated, failures = calculate_past_batch(batch.rows, devices=batch.devices, read_stored=stored_inputs)
            reject_failed_calculations(batch, failures)
        with copy_readings() as readings:
            if historical:
                readings.write(batch.rows)
                readings.write_columns(calculated)
            else:
                states = None
                if master.calculating:
                    states = CalculationInputs() if calculation_inputs is None else calculation_inputs
                    states.begin_batch(master)
                writer = BatchWriter(readings, states)
                batch = validate(messages, store=writer, store_rows=GIL_HELD_ROWS)
                reject_failed_calculations(batch, writer.failures)
                pairs, calculated_items = rows_by_pair(batch.rows), []
                if states is not None:
                    # describe_pairs needs the rows of a pair where a threshold applies, the newest value elsewhere
                    with_thresholds = master.thresholds.metric_pks
                    pairs |= rows_by_pair(writer.calculated_rows(with_thresholds))
                    calculated_items = states.newest_calculated(
                        leaving_out=with_thresholds, devices=batch.devices, metric_keys=master.metric_keys
                    )
            description = None
            if not historical:
                description = describe_pairs(pairs, devices=batch.devices, master=master, calculated_items=calculated_items)
            # Worked out while PostgreSQL still stores the last rows. A calculated reading has the
            # time of a reading that triggered it.
            dirty_hours = hours_of(batch.rows)
        mark_dirty_hours(dirty_hours)
        store_dead_letters(batch.rejections)
        if description is not None:
            work = partial(after_commit, batch_id, description, publisher)
            transaction.on_commit(work if after_commits is None else partial(after_commits.submit, work))
    stored = readings.stored
    log_level = logging.INFO if batch.rejections else logging.DEBUG
    log.log(
        log_level,
        "batch stored: %d messages, %d readings (%d new), %d rejected",
        len(messages),
        readings.count,
        stored,
        len(batch.rejections),
        extra={"batch_id": batch_id},
    )
    sample = batch.rows[:: max(1, len(batch.rows) // LATENCY_SAMPLES)]  # a calculated reading has its trigger's time
    return BatchResult(
        messages=len(messages),
        readings=readings.count,
        stored=stored,
        rejections=batch.rejections,
        sample_ts=[ts for _, _, ts, _ in sample],
    )
