"""Storage upkeep: run hourly by beat (apps.telemetry.tasks) and on demand by `manage.py
maintain_storage`, so that an operator can apply a changed retention or compression setting at once.

On plain PostgreSQL: the coming days' partitions, raw readings dropped a whole partition at a time,
hourly rollups deleted after their own period, daily rollups kept forever. On TimescaleDB its
compression and retention policies do that work, and here they are kept in line with the settings.
"""

from datetime import UTC, datetime, timedelta

from django.conf import settings

from .models import HourlyRollup, LocationHourlyRollup
from .partitions import drop_partitions_before, ensure_partitions
from .timescale import ensure_policies, hypertable_in_use, rollups_are_aggregates


def maintain_storage():
    """Apply the retention and compression settings; returns one line per change (none when
    everything was already in line)."""
    now = datetime.now(UTC)
    hourly_cutoff = now - timedelta(days=settings.IOTHUB["HOURLY_RETENTION_DAYS"])
    if hypertable_in_use():
        changes = ensure_policies()
        if not rollups_are_aggregates():
            changes += delete_hourly_rollups_before(hourly_cutoff)
        return changes
    changes = [f"partition {name} created" for name in ensure_partitions()]
    retention_cutoff = now.date() - timedelta(days=settings.IOTHUB["RETENTION_DAYS"])
    changes += [f"partition {name} dropped" for name in drop_partitions_before(retention_cutoff)]
    return changes + delete_hourly_rollups_before(hourly_cutoff)


def delete_hourly_rollups_before(cutoff):
    deleted = sum(model.objects.filter(bucket__lt=cutoff).delete()[0] for model in (HourlyRollup, LocationHourlyRollup))
    return [f"{deleted} hourly rollups before {cutoff:%Y-%m-%d %H:%M} UTC deleted"] if deleted else []
