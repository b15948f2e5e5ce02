import asyncio
import secrets
import signal
import threading
import time
from urllib.parse import urlsplit

from asgiref.sync import sync_to_async
from daphne.endpoints import build_endpoint_description_strings
from daphne.server import Server
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand
from twisted.internet import reactor  # the asyncio reactor daphne.server installs

from apps.demo.embedded_broker import port_answers, start_embedded_broker
from apps.demo.seed import seed_demo
from apps.demo.simulator import simulate
from apps.telemetry.ingest import run_ingest
from iothub.celery import run_beat_inline

REMIND_EVERY = 30  # seconds between two reprints of the addresses and login under the progress lines


class Reminding:
    """The console of the demo: progress lines, and every `every` seconds the addresses and the
    login again, so they never scroll out of sight."""

    def __init__(self, write, reminder, *, every):
        self.out, self.reminder, self.every = write, reminder, every
        self.reminded_at = time.monotonic()

    def write(self, line):
        self.out(line)
        if time.monotonic() - self.reminded_at >= self.every:
            self.reminded_at = time.monotonic()
            self.out(self.reminder)


class Command(BaseCommand):
    help = (
        "The whole hub in one process on embedded defaults: web, ingest, simulated sensors (and an MQTT broker if none answers)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--devices", type=int, default=50)
        parser.add_argument("--rate", type=float, default=25, help="simulated messages per second")
        parser.add_argument("--no-simulate", action="store_true")

    def handle(self, *args, port, devices, rate, no_simulate, **options):
        call_command("migrate", verbosity=0)
        seed_demo(devices=devices)
        password = self.demo_login()
        mqtt = urlsplit(settings.MQTT_URL)
        host, mqtt_port = mqtt.hostname or "127.0.0.1", mqtt.port or 1883
        protocol = 5
        if not port_answers(host, mqtt_port):
            start_embedded_broker(host, mqtt_port)
            protocol = 4  # amqtt speaks MQTT 3.1.1 only
            broker = (
                f"runhub: embedded MQTT broker on {host}:{mqtt_port}, MQTT 3.1.1 only (it refuses MQTT v5 clients); "
                "for a real broker start with MQTT_URL=mqtt://HOST:PORT"
            )
        else:
            broker = f"runhub: MQTT broker {settings.MQTT_URL}"
        self.stdout.write(broker)
        base = f"http://127.0.0.1:{port}"
        welcome = (
            f"runhub: dashboard {base}/  admin {base}/admin/  API docs {base}/api/docs/\nrunhub: log in as admin / {password}"
        )
        console = Reminding(self.stdout.write, welcome, every=REMIND_EVERY)
        stop = threading.Event()

        def background(target, **kwargs):
            # In a sync_to_async thread, async_to_sync calls reach daphne's event loop, where the
            # in-memory channel layer lives: live pushes work without Redis.
            return sync_to_async(target, thread_sensitive=False)(stop=stop, write=console.write, **kwargs)

        tasks = []

        def started():
            loop = asyncio.get_event_loop()
            tasks.append(
                loop.create_task(
                    background(
                        run_ingest,
                        source="mqtt",
                        client_id="iothub-runhub-ingest",
                        batch_size=settings.IOTHUB["BATCH_SIZE"],
                        flush_interval=settings.IOTHUB["FLUSH_INTERVAL"],
                        mqtt_protocol=protocol,
                    )
                )
            )
            tasks.append(loop.create_task(background(run_beat_inline)))
            if not no_simulate:
                tasks.append(
                    loop.create_task(
                        background(simulate, url=settings.MQTT_URL, devices=devices, rate=rate, duration=0, protocol=protocol)
                    )
                )
            self.stdout.write(f"\n{welcome}\nrunhub: {devices} simulated sensors, {rate:g} msg/s; Ctrl+C stops\n")

        def shut_down(*_):
            # The background threads push into this event loop until they return: stop them first,
            # and the reactor only once they are done (stopping it first would leave them hanging).
            self.stdout.write("runhub: stopping…")
            stop.set()
            loop = asyncio.get_event_loop()

            async def finish():
                await asyncio.gather(*tasks, return_exceptions=True)
                reactor.stop()

            loop.call_soon_threadsafe(lambda: loop.create_task(finish()))

        from iothub.asgi import application

        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, shut_down)
        Server(
            application=application,
            endpoints=build_endpoint_description_strings(host="127.0.0.1", port=port),
            ready_callable=started,
            signal_handlers=False,
            verbosity=0,
        ).run()

    def demo_login(self):
        """A fresh random password for the demo admin at every start, printed on the console."""
        password = secrets.token_urlsafe(9)
        user, _ = get_user_model().objects.get_or_create(username="admin", defaults={"is_staff": True, "is_superuser": True})
        user.set_password(password)
        user.save()
        return password
