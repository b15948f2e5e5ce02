"""Celery tasks of telemetry: storage upkeep, run by beat."""

from datetime import UTC, datetime, timedelta

from celery import shared_task
from django.conf import settings

from .partitions import drop_partitions_before, ensure_partitions


@shared_task
def maintain_partitions():
    """Create the coming days' partitions and drop those past the retention period."""
    created = ensure_partitions()
    cutoff = datetime.now(UTC).date() - timedelta(days=settings.IOTHUB["RETENTION_DAYS"])
    dropped = drop_partitions_before(cutoff)
    return {"created": created, "dropped": dropped}
