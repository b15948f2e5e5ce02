import signal
import socket
import threading

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from apps.telemetry.ingest import run_ingest


class Command(BaseCommand):
    help = "Consume readings from MQTT or Kafka; validate, enrich, store in batches, cache, push live, evaluate alerts."

    def add_arguments(self, parser):
        parser.add_argument("--source", choices=["mqtt", "kafka"], default="mqtt")
        parser.add_argument(
            "--client-id",
            default=f"iothub-ingest-{socket.gethostname()}",
            help="MQTT client id; keep it stable across restarts to resume a persistent session.",
        )
        parser.add_argument("--batch-size", type=int, default=settings.IOTHUB["BATCH_SIZE"])
        parser.add_argument("--flush-interval", type=float, default=settings.IOTHUB["FLUSH_INTERVAL"])
        parser.add_argument(
            "--metrics-port",
            type=int,
            default=settings.IOTHUB["INGEST_METRICS_PORT"],
            help="serve Prometheus metrics on 127.0.0.1:PORT (0: off)",
        )
        parser.add_argument(
            "--mqtt-protocol",
            type=int,
            choices=[4, 5],
            default=5,
            help="5 (default) allows a shared subscription; 4 = MQTT 3.1.1 for brokers without v5.",
        )

    def handle(self, *args, source, client_id, batch_size, flush_interval, mqtt_protocol, metrics_port, **options):
        stop = threading.Event()
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: stop.set())
        if source == "kafka" and not settings.KAFKA_BOOTSTRAP_SERVERS:
            raise CommandError("--source kafka needs KAFKA_BOOTSTRAP_SERVERS")
        run_ingest(
            source=source,
            client_id=client_id,
            batch_size=batch_size,
            flush_interval=flush_interval,
            mqtt_protocol=mqtt_protocol,
            stop=stop,
            write=self.stdout.write,
            metrics_port=metrics_port,
        )
