"""Celery tasks of telemetry: storage upkeep, run by beat."""

from datetime import UTC, datetime, timedelta

from celery import shared_task
from django.conf import settings

from .models import HourlyRollup, LocationHourlyRollup
from .partitions import drop_partitions_before, ensure_partitions
from .rollups import refresh_rollups
from .timescale import ensure_policies, timescale_in_use


@shared_task
def maintain_storage():
    """Create the coming days' partitions; tiered retention: raw readings by dropping whole
    partitions, hourly rollups after their own period, daily rollups forever. On TimescaleDB:
    keep its compression and retention policies in line with the settings."""
    if timescale_in_use():
        return {"policies": ensure_policies()}  # compression and retention run as TimescaleDB jobs
    now = datetime.now(UTC)
    created = ensure_partitions()
    dropped = drop_partitions_before(now.date() - timedelta(days=settings.IOTHUB["RETENTION_DAYS"]))
    hourly_cutoff = now - timedelta(days=settings.IOTHUB["HOURLY_RETENTION_DAYS"])
    hourly_deleted = sum(model.objects.filter(bucket__lt=hourly_cutoff).delete()[0] for model in (HourlyRollup, LocationHourlyRollup))
    return {"created": created, "dropped": dropped, "hourly_deleted": hourly_deleted}


@shared_task
def refresh_dirty_rollups():
    """Recompute the hourly/daily rollups of hours that received readings since the last run."""
    return refresh_rollups()
