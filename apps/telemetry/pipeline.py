"""One ingest batch: validate, enrich, store, then (on commit) cache, push live and hand to alerts.

Sources (MQTT, Kafka, HTTP) call `ingest_batch` and acknowledge their messages only after it
returns, i.e. after the database commit: delivery is at least once, storage is idempotent.
"""

import logging
import time
import uuid
from dataclasses import dataclass
from functools import partial
from itertools import groupby
from operator import itemgetter

from django.conf import settings
from django.db import transaction

from iothub.best_effort import BestEffort

from .calculations import calculate_batch, calculate_past_batch
from .handoff import ALERT_HAND_OFF, alert_rules
from .latest import get_latest_documents, store_latest
from .models import DeadLetter
from .payloads import Rejection, validate_messages
from .rollups import mark_dirty_hours
from .selectors import stored_inputs
from .store import copy_readings, store_dead_letters

log = logging.getLogger(__name__)


LATENCY_SAMPLES = 1000
PAIR = itemgetter(0, 1)
TS = itemgetter(2)


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


def describe_rows(rows, *, devices, master):
    """Stored rows → (live items: the newest reading of each (device, metric) with
    its threshold status; the rows that can move an alert; newest ts per device).

    Thresholds are resolved once per (device, metric), and Celery gets only the readings of pairs
    with a threshold that can change their alert (the alert rules' significant_readings, apps.telemetry.handoff).
    """
    resolve = master.thresholds.resolve
    significant_readings = alert_rules().significant_readings
    by_pair = {}
    for pair, run in groupby(rows, key=PAIR):  # a message's readings are mostly of one pair
        by_pair.setdefault(pair, []).extend(run)
    last_seen = {}
    items = []
    evaluate_rows = []
    for (device_pk, metric_pk), pair_rows in by_pair.items():
        device = devices[device_pk]
        bands = resolve(device_pk=device_pk, location_pk=device.location_pk, type_pk=device.type_pk, metric_pk=metric_pk)
        pair_rows.sort(key=TS)
        _, _, ts, value = pair_rows[-1]
        if ts > last_seen.get(device_pk, 0):
            last_seen[device_pk] = ts
        items.append(
            {
                "device": device.device_id,
                "metric": master.metric_keys[metric_pk],
                "value": value,
                "ts": int(ts * 1000),
                "status": bands.status(value) if bands else None,
            }
        )
        if bands:
            evaluate_rows += [(d, m, t, v, bands.pk) for d, m, t, v in significant_readings(bands, pair_rows)]
    return items, evaluate_rows, last_seen


LATEST_VALUES = BestEffort("latest_values")
CALCULATION_INPUTS = BestEffort("calculation_inputs")


def read_calculation_inputs(device_ids):
    return CALCULATION_INPUTS(get_latest_documents, device_ids)


def calculated_rows(batch, *, historical):
    """The calculated readings the batch's readings trigger (apps.telemetry.calculations): from the
    latest values, or for readings of the past from the stored readings. A failed calculation
    becomes a dead letter of its message, whose other readings are stored."""
    if historical:
        calculated, failures = calculate_past_batch(batch.rows, devices=batch.devices, read_stored=stored_inputs)
    else:
        calculated, failures = calculate_batch(batch.rows, devices=batch.devices, read_latest=read_calculation_inputs)
    failed = {}
    for index, key, error in failures:
        message = batch.message_of(index)
        failed.setdefault((id(message), key), Rejection(message, DeadLetter.Reason.CALCULATION_FAILED, f"{key}: {error}"))
    batch.rejections.extend(failed.values())
    return calculated


def after_commit(batch_id, description, publisher):
    """Nothing here may fail the stored batch (its source would store it again): the latest values
    and the live push are skipped while Redis is away, the alert hand-off is held until the broker
    answers."""
    items, evaluate_rows, last_seen = description
    LATEST_VALUES(store_latest, items)
    if publisher is not None:
        publisher.add(items)
    ALERT_HAND_OFF.send(batch_id=batch_id, rows=evaluate_rows, last_seen=last_seen)


HISTORICAL_MAX_AGE = 100 * 365 * 86400


def ingest_batch(messages, *, master_cache, publisher=None, historical=False):
    """Process one batch of Message; returns a BatchResult once the batch is committed.

    historical=True (CSV import): any past timestamp is fine, calculated metrics are computed from
    the stored readings, and the batch is only stored — no latest values, live push or alert
    evaluation for readings of the past.
    """
    config = settings.IOTHUB
    batch_id = uuid.uuid4().hex[:12]  # correlates this batch's log lines in ingest and worker
    master = master_cache.get()
    batch = validate_messages(
        messages,
        master=master,
        now=time.time(),
        max_bytes=config["MAX_PAYLOAD_BYTES"],
        max_future_skew=config["MAX_FUTURE_SKEW"],
        max_past_age=HISTORICAL_MAX_AGE if historical else config["MAX_PAST_AGE"],
    )
    with transaction.atomic():
        # Readings of the past take their inputs from the database: read before it is busy with the COPY.
        calculated = calculated_rows(batch, historical=True) if historical else None
        with copy_readings() as readings:
            readings.write(batch.rows)  # PostgreSQL stores these while the rest of the batch is worked out
            if calculated is None:
                calculated = calculated_rows(batch, historical=False)
            readings.write(calculated)
            rows = batch.rows + calculated
            description = None if historical else describe_rows(rows, devices=batch.devices, master=master)
        mark_dirty_hours(batch.rows)  # a calculated reading has the time of a reading that triggered it
        store_dead_letters(batch.rejections)
        if description is not None:
            transaction.on_commit(partial(after_commit, batch_id, description, publisher))
    stored = readings.stored
    log_level = logging.INFO if batch.rejections else logging.DEBUG
    log.log(
        log_level,
        "batch stored: %d messages, %d readings (%d new), %d rejected",
        len(messages),
        len(rows),
        stored,
        len(batch.rejections),
        extra={"batch_id": batch_id},
    )
    sample = rows[:: max(1, len(rows) // LATENCY_SAMPLES)]
    return BatchResult(
        messages=len(messages),
        readings=len(rows),
        stored=stored,
        rejections=batch.rejections,
        sample_ts=[ts for _, _, ts, _ in sample],
    )
