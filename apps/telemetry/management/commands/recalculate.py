from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError

from apps.devices.models import Metric
from apps.telemetry.management.commands.backfill import parse_moment
from apps.telemetry.recalculation import recalculate

SHOWN_FAILURES = 10


class Command(BaseCommand):
    help = (
        "Recompute a calculated metric over a time range from the stored readings of its inputs (e.g. after "
        "its expression changed), then refresh the rollups of the range."
    )

    def add_arguments(self, parser):
        parser.add_argument("--metric", required=True, help="key of the calculated metric")
        parser.add_argument("--start", required=True, help="ISO 8601, e.g. 2026-10-01 (UTC unless an offset is given)")
        parser.add_argument("--end", required=True, help="ISO 8601, exclusive")
        parser.add_argument("--step-hours", type=int, default=6, help="hours recomputed per transaction")

    def handle(self, *args, metric, start, end, step_hours, **options):
        start, end = parse_moment(start), parse_moment(end)
        if end <= start:
            raise CommandError("--end must be after --start")
        calculated = Metric.objects.filter(key=metric).first()
        if calculated is None or not calculated.is_calculated:
            raise CommandError(f"{metric!r} is not a calculated metric")
        total = (end - start).total_seconds()
        stored = failed = 0
        for step in recalculate(metric=calculated, start=start, end=end, step=timedelta(hours=step_hours)):
            stored += step.stored
            for device_id, ts, error in step.failures:
                if failed < SHOWN_FAILURES:
                    self.stdout.write(f"\n  {device_id}: calculation failed near {ts:.0f}: {error}")
                failed += 1
            done = (step.end - start).total_seconds() / total
            self.stdout.write(f"\rrecalculate {metric}: {step.end:%Y-%m-%d %H:%M} {done:6.1%}, {stored:,} values", ending="")
            self.stdout.flush()
        self.stdout.write(
            f"\nrecalculate {metric}: {stored:,} values stored from {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC, "
            f"{failed:,} failed calculations; rollups refreshed"
        )
