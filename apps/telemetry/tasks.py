"""Celery tasks of telemetry: storage upkeep, run by beat."""

from celery import shared_task

from . import upkeep
from .rollups import refresh_rollups


@shared_task
def maintain_storage():
    """Partitions, retention and compression in line with the settings (apps.telemetry.upkeep)."""
    return upkeep.maintain_storage()


@shared_task
def refresh_dirty_rollups():
    """Recompute the hourly/daily rollups of hours that received readings since the last run."""
    return refresh_rollups()
