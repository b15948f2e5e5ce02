"""Celery tasks of telemetry: storage upkeep, run by beat."""

from datetime import UTC, datetime, timedelta

from celery import shared_task
from django.conf import settings

from .models import HourlyRollup, LocationHourlyRollup
from .partitions import drop_partitions_before, ensure_partitions
from .rollups import refresh_rollups
from .timescale import ensure_policies, hypertable_in_use, rollups_are_aggregates


@shared_task
def maintain_storage():
    """Create the coming days' partitions; tiered retention: raw readings by dropping whole
    partitions, hourly rollups after their own period, daily rollups forever. On TimescaleDB its
    compression and retention policies do that, kept in line with the settings here."""
    now = datetime.now(UTC)
    hourly_cutoff = now - timedelta(days=settings.IOTHUB["HOURLY_RETENTION_DAYS"])
    if hypertable_in_use():
        done = {"policies": ensure_policies()}
        if not rollups_are_aggregates():
            done["hourly_deleted"] = delete_hourly_rollups_before(hourly_cutoff)
        return done
    created = ensure_partitions()
    dropped = drop_partitions_before(now.date() - timedelta(days=settings.IOTHUB["RETENTION_DAYS"]))
    return {"created": created, "dropped": dropped, "hourly_deleted": delete_hourly_rollups_before(hourly_cutoff)}


def delete_hourly_rollups_before(cutoff):
    return sum(model.objects.filter(bucket__lt=cutoff).delete()[0] for model in (HourlyRollup, LocationHourlyRollup))


@shared_task
def refresh_dirty_rollups():
    """Recompute the hourly/daily rollups of hours that received readings since the last run."""
    return refresh_rollups()
