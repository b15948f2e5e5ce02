import signal
import socket
import threading

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from apps.telemetry.bridge import forward_to_kafka
from apps.telemetry.ingest import provision_kafka_topics
from apps.telemetry.sources.kafka import kafka_producer
from apps.telemetry.sources.mqtt import MqttSource


def bridge_topic(group):
    """Several bridges share the stream in their own group; one bridge subscribes plainly."""
    return f"$share/{group}-bridge/sensors/#" if group else "sensors/#"


class Command(BaseCommand):
    help = "Move MQTT readings into Kafka topic iothub.readings, keyed by device id."

    def add_arguments(self, parser):
        parser.add_argument("--client-id", default=f"iothub-bridge-{socket.gethostname()}")
        parser.add_argument("--batch-size", type=int, default=settings.IOTHUB["BATCH_SIZE"])
        parser.add_argument("--flush-interval", type=float, default=settings.IOTHUB["FLUSH_INTERVAL"])

    def handle(self, *args, client_id, batch_size, flush_interval, **options):
        if not settings.KAFKA_BOOTSTRAP_SERVERS:
            raise CommandError("KAFKA_BOOTSTRAP_SERVERS is not set")
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        for mismatch in provision_kafka_topics():
            self.stderr.write(f"bridge: {mismatch}")
        producer = kafka_producer(settings.KAFKA_BOOTSTRAP_SERVERS)
        topic = settings.IOTHUB["KAFKA_TOPIC"]
        source = MqttSource(
            url=settings.MQTT_URL,
            client_id=client_id,
            topic=bridge_topic(settings.IOTHUB["MQTT_SHARED_GROUP"]),
            session_expiry=settings.IOTHUB["MQTT_SESSION_EXPIRY"],
        )
        forwarded = 0

        def on_batch(messages):
            nonlocal forwarded
            forward_to_kafka(messages, producer=producer, topic=topic)
            forwarded += len(messages)

        self.stdout.write(f"bridge: {settings.MQTT_URL} → Kafka {settings.KAFKA_BOOTSTRAP_SERVERS} topic {topic}")
        source.run(on_batch, batch_size=batch_size, flush_interval=flush_interval, stop=stop)
        self.stdout.write(f"bridge: stopped after {forwarded:,} messages")
