"""The hand-off of stored batches to alert evaluation (Celery).

Unlike the latest values and live pushes, a batch's evaluation must not be lost: while the broker
is away, hand-offs are held in order and sent once it answers again, so that readings stored
during a broker outage still open (or resolve) their alerts after it.
"""

import logging
import threading
import time
from collections import deque

from kombu.exceptions import OperationalError

from apps.alerts.tasks import evaluate_batch

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


def publish(batch_id, rows, last_seen):
    evaluate_batch.apply_async(
        kwargs={"rows": rows, "last_seen": list(last_seen.items()), "batch_id": batch_id},
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
