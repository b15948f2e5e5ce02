"""The ingest process: a source (MQTT or Kafka) feeding batches to the pipeline, with progress
lines, Prometheus metrics and a summary for the dashboard's pipeline-health view."""

import gc
import time

from confluent_kafka import KafkaException
from django.conf import settings
from prometheus_client import start_http_server

from apps.live.broadcast import LivePublisher
from iothub.best_effort import BestEffort
from iothub.runtime import tune_garbage_collector

from .device_cache import DeviceMasterCache
from .handoff import ALERT_HAND_OFF
from .kafka_topics import ensure_topics
from .metrics import PipelineStats
from .pipeline import AfterCommitThread, CalculationInputs, ingest_batch
from .sources.kafka import KafkaSource
from .sources.mqtt import MqttSource

PIPELINE_SUMMARY = BestEffort("pipeline_summary")
# Allocations between two collections of the garbage collector's youngest generation (Python's
# default: 700). A batch keeps tens of thousands of new objects (messages, readings, rows,
# calculated rows) alive until it is stored: with 700 they outlive young collections, move on to
# the older generations and are walked again by theirs. Measured on ingest_batch alone with the
# data of bench_ingest --only calculated: 0.9 of its 7 µs of CPU per message with a calculated
# metric, 0.2 of 4.5 without. Ingest's objects are freed by reference counting; the collector
# only has cycles to find.
YOUNG_COLLECTION_THRESHOLD = 50_000
KAFKA_LAG_READ = BestEffort("kafka_lag", errors=KafkaException)


class Progress:
    """Prints a line about the process's counters every `every` seconds."""

    def __init__(self, write, stats, every=10.0):
        self.write = write
        self.stats = stats
        self.every = every
        self.shown_at = time.monotonic()
        self.shown_messages = 0

    def show_due(self):
        now = time.monotonic()
        if now - self.shown_at < self.every:
            return
        s = self.stats
        rate = (s.messages - self.shown_messages) / (now - self.shown_at)
        self.write(
            f"ingest: {s.messages:,} messages ({rate:,.0f}/s), {s.readings:,} readings, "
            f"{s.stored:,} new rows, {s.rejected:,} dead letters"
        )
        self.shown_at, self.shown_messages = now, s.messages


def provision_kafka_topics():
    config = settings.IOTHUB
    return ensure_topics(
        servers=settings.KAFKA_BOOTSTRAP_SERVERS,
        topics=[config["KAFKA_TOPIC"], config["KAFKA_DEADLETTER_TOPIC"]],
        partitions=config["KAFKA_PARTITIONS"],
        retention_ms=config["KAFKA_RETENTION_MS"],
    )


def build_source(*, source, client_id, mqtt_protocol, write, batch_size):
    config = settings.IOTHUB
    if source == "mqtt":
        group = config["MQTT_SHARED_GROUP"]
        topic = f"$share/{group}/sensors/#" if group and mqtt_protocol == 5 else "sensors/#"
        write(f"ingest: MQTT {settings.MQTT_URL} topic {topic}")
        return MqttSource(
            url=settings.MQTT_URL,
            client_id=client_id,
            topic=topic,
            protocol=mqtt_protocol,
            session_expiry=config["MQTT_SESSION_EXPIRY"],
            receive_maximum=min(2 * batch_size, 65535),  # one batch being stored, the next one arriving
        )
    for mismatch in provision_kafka_topics():
        write(f"ingest: {mismatch}")
    write(f"ingest: Kafka {settings.KAFKA_BOOTSTRAP_SERVERS} topic {config['KAFKA_TOPIC']} group {config['KAFKA_GROUP']}")
    return KafkaSource(
        servers=settings.KAFKA_BOOTSTRAP_SERVERS,
        group=config["KAFKA_GROUP"],
        topic=config["KAFKA_TOPIC"],
        deadletter_topic=config["KAFKA_DEADLETTER_TOPIC"],
    )


def run_ingest(*, source, client_id, batch_size, flush_interval, mqtt_protocol, stop, write, metrics_port=0):
    """Receive from the source until `stop` is set, handing every batch to ingest_batch."""
    config = settings.IOTHUB
    master_cache = DeviceMasterCache(refresh_seconds=config["DEVICE_CACHE_REFRESH"])
    publisher = LivePublisher(interval=config["LIVE_PUSH_INTERVAL"])
    # Without a broker (the one-process demo) Celery evaluates a batch's alerts in the hand-off
    # itself, writing to the database, which AfterCommitThread's work must not do: it stays on the
    # loop, between batches.
    after_commits = AfterCommitThread() if settings.CELERY_BROKER_URL else None
    calculation_inputs = CalculationInputs()
    stats = PipelineStats(name=client_id, source=source, window_seconds=config["PIPELINE_WINDOW"])
    progress = Progress(write, stats)
    if metrics_port:
        start_http_server(metrics_port, addr=config["METRICS_ADDR"])
        write(f"ingest: Prometheus metrics on http://{config['METRICS_ADDR']}:{metrics_port}/")
    receiver = build_source(source=source, client_id=client_id, mqtt_protocol=mqtt_protocol, write=write, batch_size=batch_size)
    tune_garbage_collector()
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, *gc.get_threshold()[1:])

    def on_batch(messages):
        result = ingest_batch(
            messages,
            master_cache=master_cache,
            publisher=publisher,
            after_commits=after_commits,
            calculation_inputs=calculation_inputs,
        )
        stats.record(result, committed_at=time.time())
        after_batch()
        return result

    def after_batch():
        """Also called when the source is idle. Must not raise: after a batch, its source would store it again."""
        progress.show_due()
        ALERT_HAND_OFF.send_held()
        if stats.summary_due():
            if source == "kafka":
                stats.set_kafka_lag(KAFKA_LAG_READ(receiver.lag))
            PIPELINE_SUMMARY(stats.publish)

    write(f"ingest: batches of {batch_size} messages or {flush_interval * 1000:.0f} ms")
    receiver.run(on_batch, batch_size=batch_size, flush_interval=flush_interval, stop=stop, on_idle=after_batch)
    if after_commits is not None:
        after_commits.wait()
    write(f"ingest: stopped after {stats.messages:,} messages")
