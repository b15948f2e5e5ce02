from celery import shared_task

from . import services


@shared_task(acks_late=True)
def evaluate_batch(*, rows, last_seen):
    """A stored batch of readings → alert changes. Rows of pairs without a threshold never come here."""
    changed = services.process_stored_batch(rows=rows, last_seen=last_seen)
    return len(changed)
