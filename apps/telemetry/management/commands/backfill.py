from datetime import UTC, datetime, timedelta

from django.core.management.base import BaseCommand, CommandError

from apps.telemetry.rollups import recompute_range


def parse_moment(value):
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise CommandError(f"{value!r} is not an ISO 8601 date or time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class Command(BaseCommand):
    help = "Recompute hourly and daily rollups for a time range (e.g. after an import or a bug fix)."

    def add_arguments(self, parser):
        parser.add_argument("--start", required=True, help="ISO 8601, e.g. 2026-10-01 (UTC unless an offset is given)")
        parser.add_argument("--end", required=True, help="ISO 8601, exclusive")
        parser.add_argument("--step-hours", type=int, default=24, help="hours recomputed per step")

    def handle(self, *args, start, end, step_hours, **options):
        start, end = parse_moment(start), parse_moment(end)
        if end <= start:
            raise CommandError("--end must be after --start")
        step = timedelta(hours=step_hours)
        total = (end - start) / step
        cursor = start
        done = 0
        while cursor < end:
            recompute_range(cursor, min(cursor + step, end))
            cursor += step
            done += 1
            self.stdout.write(f"\rbackfill: {cursor:%Y-%m-%d %H:%M} {min(done / total, 1):6.1%}", ending="")
            self.stdout.flush()
        self.stdout.write(f"\nbackfill: rollups recomputed from {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC")
