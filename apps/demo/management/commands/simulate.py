from django.conf import settings
from django.core.management.base import BaseCommand

from apps.demo.simulator import SCENARIOS, simulate


class Command(BaseCommand):
    help = "Simulated sensors sim-00001… publishing realistic readings over MQTT (R messages/s in total)."

    def add_arguments(self, parser):
        parser.add_argument("--devices", type=int, help="default: the scenario's")
        parser.add_argument("--rate", type=float, help="messages per second in total; default: the scenario's natural rate")
        parser.add_argument("--duration", type=float, default=60, help="seconds; 0 runs until interrupted")
        parser.add_argument("--scenario", choices=sorted(SCENARIOS), default="factory")
        parser.add_argument("--seed", type=int, default=1)

    def handle(self, *args, devices, rate, duration, scenario, seed, **options):
        profile = SCENARIOS[scenario]
        devices = devices or profile.devices
        rate = rate or profile.natural_rate(devices)
        self.stdout.write(f"simulate: {scenario} for {duration or '∞'} s → {settings.MQTT_URL}")
        try:
            simulate(
                url=settings.MQTT_URL,
                devices=devices,
                rate=rate,
                duration=duration,
                scenario=scenario,
                seed=seed,
                write=self.stdout.write,
            )
        except KeyboardInterrupt:
            pass
