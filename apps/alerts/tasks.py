"""Celery tasks of the alerts app: thin wrappers, fired on commit with ids."""

import logging

from celery import shared_task
from django.db import OperationalError

from . import notify, services
from .transports import TemporaryError

log = logging.getLogger(__name__)


@shared_task(acks_late=True, autoretry_for=(OperationalError,), retry_backoff=0.5, retry_backoff_max=10, max_retries=10)
def evaluate_batch(*, rows, last_seen, batch_id=""):
    """A stored batch of readings → alert changes. Rows of pairs without a threshold never come here."""
    changes = services.process_stored_batch(rows=rows, last_seen=last_seen)
    log.log(
        logging.INFO if changes else logging.DEBUG,
        "batch evaluated: %d readings, %d alert changes",
        len(rows),
        len(changes),
        extra={"batch_id": batch_id},
    )
    return len(changes)


@shared_task(acks_late=True)
def notify_alert_change(*, alert_id, event):
    notify.notify_alert_change(alert_id=alert_id, event=event)


@shared_task(acks_late=True, autoretry_for=(TemporaryError,), retry_backoff=2, retry_backoff_max=300, max_retries=8)
def deliver_notification(*, notification_id):
    notify.deliver(notification_id=notification_id)


@shared_task
def send_due_summaries():
    return len(notify.send_due_summaries())


@shared_task
def detect_offline():
    return len(services.detect_offline())


@shared_task
def remind_unacknowledged():
    return len(notify.remind_unacknowledged())


@shared_task
def watch_pipeline():
    return len(services.watch_pipeline())


@shared_task
def take_out_of_service():
    return len(services.take_out_of_service())


@shared_task(autoretry_for=(TemporaryError,), retry_backoff=60, retry_backoff_max=3600, max_retries=8)
def send_kpi_report():
    _, recipients = notify.send_kpi_report()
    return len(recipients)


@shared_task
def expire_shelving():
    return len(services.expire_shelving())


@shared_task
def refresh_alarm_rollups():
    return len(services.refresh_alarm_rollups())


@shared_task
def watch_storms():
    return len(services.watch_storms())
