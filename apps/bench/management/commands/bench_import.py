"""`manage.py bench_import --devices 10000`: a plant's device master imported through the admin.

Generates a CSV of --devices devices spread over the demo locations and imports it the way an
admin does, through the admin's own views (django-import-export's import page, then its confirm
page) in this process with Django's test client, as a superuser: upload → preview (a dry run in a
rolled-back transaction, with what will change and every row's errors) → confirm (the import
itself). Three files in turn: every device new, every device renamed, nothing changed. Each step
is timed against the target: the preview and the confirm of a plant together under 60 s.
"""

import csv
import io
import re
import time

from django.contrib.auth import get_user_model
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse

from apps.bench.benchmarks import BenchError
from apps.bench.support import BenchCommand, in_bench
from apps.devices.models import Device, DeviceType, Location

TARGET_S = 60
DEVICE_PREFIX = "bench-import-"
BENCH_USER = "bench-import"
CONFIRM_FIELDS = re.compile(r'<input type="hidden" name="(\w+)" value="([^"]*)"')


def plant_csv(*, devices, device_type, loc_ids, name):
    """The device master of a plant as an admin would export it: one row per device."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["device_id", "name", "device_type", "location", "is_active"])
    for n in range(1, devices + 1):
        writer.writerow([f"{DEVICE_PREFIX}{n:05d}", f"{name} {n}", device_type, loc_ids[n % len(loc_ids)], 1])
    return out.getvalue().encode()


def preview(client, content):
    """Upload to the admin's import page → (seconds, the confirm form's fields)."""
    upload = SimpleUploadedFile("plant.csv", content, content_type="text/csv")
    started = time.perf_counter()
    response = client.post(reverse("admin:devices_device_import"), {"resource": "0", "format": "0", "import_file": upload})
    seconds = time.perf_counter() - started
    page = response.content.decode()
    confirm = dict(CONFIRM_FIELDS.findall(page))
    if response.status_code != 200 or "import_file_name" not in confirm:
        raise BenchError(f"the preview offers no confirmation (status {response.status_code}):\n{page[:2000]}")
    return seconds, confirm


def confirm(client, fields):
    """Post the preview's confirm form → seconds until the admin redirects to the device list."""
    started = time.perf_counter()
    response = client.post(reverse("admin:devices_device_process_import"), fields)
    seconds = time.perf_counter() - started
    if response.status_code != 302:
        raise BenchError(f"the confirmed import failed (status {response.status_code}):\n{response.content[:2000]!r}")
    return seconds


class Command(BenchCommand):
    help = "Time a plant's device import (CSV) through the admin's preview and confirm pages against the 60 s target."
    default_database = "iothub_bench_import"

    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.add_argument("--devices", type=int, default=10_000, help="devices in the imported file")

    def run_benchmark(self, run, stack):
        devices = self.options["devices"]
        self.prepare_database(run, 0)  # demo locations, metrics and device type; no devices
        with in_bench(self.database, run.namespace), self.database.connect() as conn:
            self.empty_tables(conn)
            user = get_user_model().objects.create_superuser(BENCH_USER, password=None)
            client = Client()
            client.force_login(user)
            loc_ids = list(Location.objects.values_list("loc_id", flat=True))
            device_type = DeviceType.objects.get(name="env-sensor").name
            self.say(f"\n  {devices:,} devices over {len(loc_ids)} locations, imported as the admin does (preview, confirm)")
            self.say(f"  {'file':<26}{'preview s':>11}{'confirm s':>11}{'total s':>10}   target < {TARGET_S} s")
            for label, name in [("new plant", "Sensor"), ("every device renamed", "Renamed"), ("unchanged", "Renamed")]:
                content = plant_csv(devices=devices, device_type=device_type, loc_ids=loc_ids, name=name)
                dry_run, fields = preview(client, content)
                saved = confirm(client, fields)
                stored = Device.objects.filter(device_id__startswith=DEVICE_PREFIX, name__startswith=name).count()
                if stored != devices:
                    raise BenchError(f"{label}: {stored:,} of {devices:,} devices stored as imported")
                total = dry_run + saved
                self.say(f"  {label:<26}{dry_run:>11.1f}{saved:>11.1f}{total:>10.1f}")
                self.summary.add("import", f"{label}, {devices:,} devices: preview", dry_run, "s")
                self.summary.add("import", f"{label}, {devices:,} devices: confirm", saved, "s")
                self.summary.add("import", f"{label}, {devices:,} devices: preview + confirm", total, "s", ("<=", TARGET_S))

    def empty_tables(self, conn):
        """The imported devices, the bench user and its admin log entries."""
        user = "SELECT id FROM auth_user WHERE username = %s"
        conn.execute(f"DELETE FROM django_admin_log WHERE user_id IN ({user})", [BENCH_USER])
        conn.execute("DELETE FROM devices_device WHERE device_id LIKE %s", [DEVICE_PREFIX + "%"])
        conn.execute(f"DELETE FROM auth_user WHERE id IN ({user})", [BENCH_USER])
