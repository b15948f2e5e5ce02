"""What every source does with a received batch: hand it over until it is stored."""

import logging

from django.db import close_old_connections

log = logging.getLogger(__name__)


def hand_over(on_batch, messages, stop, *, max_backoff=30.0):
    """Call on_batch(messages) until it succeeds; True when stored, False if stopped first.

    A failure (the database away) is retried with backoff and nothing is acknowledged meanwhile,
    so the broker keeps every message until it is stored. Redis away fails no batch: what goes
    there after the commit is skipped or held (apps.telemetry.pipeline.after_commit).
    """
    backoff = 0.5
    while True:
        close_old_connections()
        try:
            on_batch(messages)
            return True
        except Exception:
            log.exception("storing a batch of %d messages failed; retrying in %.1f s", len(messages), backoff)
        if stop.wait(backoff):
            return False
        backoff = min(backoff * 2, max_backoff)
