"""The ingest process: a source (MQTT or Kafka) feeding batches to the pipeline, with progress."""

import time

from django.conf import settings

from apps.live.broadcast import LivePublisher

from .device_cache import DeviceMasterCache
from .kafka_topics import ensure_topics
from .pipeline import ingest_batch
from .sources.kafka import KafkaSource
from .sources.mqtt import MqttSource


class Progress:
    """Counts batches and prints a line every `every` seconds."""

    def __init__(self, write, every=10.0):
        self.write = write
        self.every = every
        self.started = self.shown_at = time.monotonic()
        self.messages = self.readings = self.stored = self.rejected = 0
        self.shown_messages = 0

    def add(self, result):
        self.messages += result.messages
        self.readings += result.readings
        self.stored += result.stored
        self.rejected += len(result.rejections)
        self.show_due()

    def show_due(self):
        now = time.monotonic()
        if now - self.shown_at >= self.every:
            rate = (self.messages - self.shown_messages) / (now - self.shown_at)
            self.write(
                f"ingest: {self.messages:,} messages ({rate:,.0f}/s), {self.readings:,} readings, "
                f"{self.stored:,} new rows, {self.rejected:,} dead letters"
            )
            self.shown_at, self.shown_messages = now, self.messages



def provision_kafka_topics():
    config = settings.IOTHUB
    return ensure_topics(
        servers=settings.KAFKA_BOOTSTRAP_SERVERS,
        topics=[config["KAFKA_TOPIC"], config["KAFKA_DEADLETTER_TOPIC"]],
        partitions=config["KAFKA_PARTITIONS"],
        retention_ms=config["KAFKA_RETENTION_MS"],
    )


def run_ingest(*, source, client_id, batch_size, flush_interval, mqtt_protocol, stop, write):
    """Receive from the source until `stop` is set, handing every batch to ingest_batch."""
    config = settings.IOTHUB
    master_cache = DeviceMasterCache(refresh_seconds=config["DEVICE_CACHE_REFRESH"])
    publisher = LivePublisher(interval=config["LIVE_PUSH_INTERVAL"])
    progress = Progress(write)

    def on_batch(messages):
        result = ingest_batch(messages, master_cache=master_cache, publisher=publisher)
        progress.add(result)
        return result

    def on_idle():
        publisher.flush_due()
        progress.show_due()

    if source == "mqtt":
        group = config["MQTT_SHARED_GROUP"]
        topic = f"$share/{group}/sensors/#" if group and mqtt_protocol == 5 else "sensors/#"
        mqtt_source = MqttSource(
            url=settings.MQTT_URL,
            client_id=client_id,
            topic=topic,
            protocol=mqtt_protocol,
            session_expiry=config["MQTT_SESSION_EXPIRY"],
        )
        write(f"ingest: MQTT {settings.MQTT_URL} topic {topic}, batches of {batch_size} or {flush_interval * 1000:.0f} ms")
        mqtt_source.run(on_batch, batch_size=batch_size, flush_interval=flush_interval, stop=stop, on_idle=on_idle)
    else:
        provision_kafka_topics()
        kafka_source = KafkaSource(
            servers=settings.KAFKA_BOOTSTRAP_SERVERS,
            group=config["KAFKA_GROUP"],
            topic=config["KAFKA_TOPIC"],
            deadletter_topic=config["KAFKA_DEADLETTER_TOPIC"],
        )
        write(f"ingest: Kafka {settings.KAFKA_BOOTSTRAP_SERVERS} topic {config['KAFKA_TOPIC']} group {config['KAFKA_GROUP']}")
        kafka_source.run(on_batch, batch_size=batch_size, flush_interval=flush_interval, stop=stop, on_idle=on_idle)
    write(f"ingest: stopped after {progress.messages:,} messages")
