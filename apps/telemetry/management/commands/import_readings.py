import csv
import sys
import time
from itertools import islice

import orjson
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from apps.telemetry.device_cache import DeviceMasterCache
from apps.telemetry.payloads import Message
from apps.telemetry.pipeline import ingest_batch

COLUMNS = {"device", "time", "metric", "value"}


def messages_from_csv(rows):
    """CSV rows (device, time as ISO 8601 or epoch ms, metric, value) → Messages like a device would send."""
    for row in rows:
        ts = row["time"]
        try:
            value = float(row["value"])
        except (TypeError, ValueError):
            value = row["value"]  # dead-lettered as a non-numeric value, with the rest of the row
        payload = {"ts": int(ts) if ts.isdigit() else ts, row["metric"]: value}
        yield Message("csv", f"sensors/{row['device']}", orjson.dumps(payload), time.time())


def chunks(iterable, size):
    iterator = iter(iterable)
    while chunk := list(islice(iterator, size)):
        yield chunk


class Command(BaseCommand):
    help = "Load historical readings from CSV (device,time,metric,value) through live ingest's validation and dead letters."

    def add_arguments(self, parser):
        parser.add_argument("path", help="CSV file, or - for standard input")
        parser.add_argument("--batch-size", type=int, default=5000)

    def handle(self, *args, path, batch_size, **options):
        source = sys.stdin if path == "-" else open(path, newline="", encoding="utf-8")
        with source:
            reader = csv.DictReader(source)
            if not set(reader.fieldnames or []) >= COLUMNS:
                raise CommandError(f"CSV needs the columns {', '.join(sorted(COLUMNS))}")
            master_cache = DeviceMasterCache(refresh_seconds=settings.IOTHUB["DEVICE_CACHE_REFRESH"])
            started = time.monotonic()
            stored = rejected = total = 0
            for batch in chunks(messages_from_csv(reader), batch_size):
                result = ingest_batch(batch, master_cache=master_cache, historical=True)
                stored, rejected, total = stored + result.stored, rejected + len(result.rejections), total + len(batch)
                self.stdout.write(f"\rimport: {total:,} rows ({total / (time.monotonic() - started):,.0f}/s)", ending="")
                self.stdout.flush()
        self.stdout.write(
            f"\nimport: {total:,} rows, {stored:,} new readings, {rejected:,} dead letters; "
            "run `manage.py backfill` or wait for beat to refresh the rollups"
        )
