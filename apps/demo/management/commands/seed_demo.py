from django.core.management.base import BaseCommand

from apps.demo.seed import seed_demo
from apps.devices.models import Device


class Command(BaseCommand):
    help = "Idempotently create demo locations, device types, thresholds and devices sim-00001…"

    def add_arguments(self, parser):
        parser.add_argument("--devices", type=int, default=50)

    def handle(self, *args, devices, **options):
        seed_demo(devices=devices)
        self.stdout.write(f"seed_demo: {Device.objects.filter(device_id__startswith='sim-').count()} demo devices ready")
