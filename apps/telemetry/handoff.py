"""The seam between ingest and alert evaluation: the one place where stored readings leave
telemetry for the alerts app.

Dependencies run devices <- telemetry <- alerts, so telemetry names what it needs here
(`AlertRules`) and the alerts app provides it when Django starts (apps.alerts.apps). Ingest uses
the rules to give each latest value its status and to keep only the readings that can move an
alert, and hands every stored batch to the rules' evaluation task.

Unlike the latest values and live pushes, a batch's evaluation must not be lost: while the broker
is away, hand-offs are held in order and sent once it answers again, so that readings stored
during a broker outage still open (or resolve) their alerts after it.
"""

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from kombu.exceptions import OperationalError

from iothub.celery import enqueue

from .metrics import HANDOFFS_DROPPED, HANDOFFS_HELD

log = logging.getLogger(__name__)

# One hand-off per batch, up to 50 a second at the default 20 ms flush interval: the limit covers
# minutes of broker outage. Beyond it the oldest are dropped (and counted): the newest readings
# tell more about the alerts open now.
HELD_LIMIT = 10_000
# A try while the broker is away costs next to nothing (it refuses at once: see
# CELERY_BROKER_TRANSPORT_OPTIONS), so the backoff stays short and a returning broker gets the held
# hand-offs within seconds.
FIRST_RETRY = 0.5
MAX_RETRY = 5.0


@dataclass(frozen=True)
class AlertRules:
    """What ingest needs from alert evaluation."""

    # Models whose changes reload the rules along with the device master.
    tables: tuple
    # () -> an index whose resolve(device_pk=, location_pk=, type_pk=, metric_pk=) gives the bands
    # that apply (bands.status(value), bands.pk), or None where no threshold applies, and whose
    # metric_pks are the metrics that some threshold applies to.
    load: Callable
    # (bands, one pair's rows oldest first) -> the rows among them that can change its alert.
    significant_readings: Callable
    # The Celery task that evaluates a stored batch: kwargs rows, last_seen, batch_id.
    evaluation_task: str


class NoRules:
    """Without an alerts app: no value has a status and no batch is handed on."""

    metric_pks = frozenset()

    def resolve(self, **pair):
        return None


WITHOUT_ALERTS = AlertRules(tables=(), load=NoRules, significant_readings=lambda bands, rows: [], evaluation_task="")
ALERT_RULES = [WITHOUT_ALERTS]


def provide_alert_rules(rules):
    """Called once by the alerts app when Django starts."""
    ALERT_RULES[0] = rules


def alert_rules():
    return ALERT_RULES[0]


def publish(batch_id, rows, last_seen):
    task = alert_rules().evaluation_task
    if not task:
        return
    enqueue(
        task,
        {"rows": rows, "last_seen": list(last_seen.items()), "batch_id": batch_id},
        kwargsrepr=f"{{batch {batch_id}: {len(rows)} rows}}",  # not Celery's repr of every row
        retry=False,  # a refused hand-off is held and retried from the ingest loop, not waited for here
    )


class AlertHandOff:
    """Sends every stored batch's evaluate_batch task, oldest first, holding them while the broker
    is away. `send` is called on commit of each batch; `send_held` also from the ingest loop when it
    is idle, so that what is held goes out soon after the broker returns even if no batch comes."""

    def __init__(self, limit=HELD_LIMIT):
        self.held = deque()
        self.limit = limit
        self.lock = threading.Lock()  # a web process's request threads share one
        self.retry_at = 0.0
        self.retry_in = FIRST_RETRY

    def send(self, *, batch_id, rows, last_seen):
        with self.lock:
            self.held.append((batch_id, rows, last_seen))
            if len(self.held) > self.limit:
                self.held.popleft()
                HANDOFFS_DROPPED.inc()
        self.send_held()

    def send_held(self):
        with self.lock:
            if not self.held or time.monotonic() < self.retry_at:
                return
            sent = 0
            try:
                while self.held:
                    publish(*self.held[0])
                    self.held.popleft()
                    sent += 1
            except OperationalError as e:
                self.back_off(e)
            else:
                if self.retry_in > FIRST_RETRY:
                    log.info("alert hand-off: the broker answers again; %d held batches sent", sent)
                self.retry_in = FIRST_RETRY
            HANDOFFS_HELD.set(len(self.held))

    def back_off(self, error):
        if self.retry_in == FIRST_RETRY:
            log.warning("alert hand-off: broker away, batches held until it answers (%s)", error)
        self.retry_at = time.monotonic() + self.retry_in
        self.retry_in = min(self.retry_in * 2, MAX_RETRY)


# One per process: the ingest loop and a web process's HTTP ingest requests send through it.
ALERT_HAND_OFF = AlertHandOff()
