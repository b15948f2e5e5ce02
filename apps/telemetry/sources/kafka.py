"""Kafka source: consume `iothub.readings` in a consumer group; commit offsets after storing."""

import logging
import time

from confluent_kafka import Consumer, KafkaException, Producer

from ..payloads import Message, device_id_from_topic
from .common import hand_over

log = logging.getLogger(__name__)


def kafka_producer(servers, **extra):
    return Producer(
        {
            "bootstrap.servers": servers,
            "enable.idempotence": True,  # broker-side dedup of producer retries
            "acks": "all",
            "compression.type": "lz4",
            "linger.ms": 5,
            **extra,
        }
    )


def mqtt_topic_of(kafka_message):
    for name, value in kafka_message.headers() or []:
        if name == "topic":
            return value.decode("utf-8", "replace")
    key = kafka_message.key()
    return f"sensors/{key.decode('utf-8', 'replace')}" if key else ""


class KafkaSource:
    """Yields batches from a consumer group to `on_batch`; rejected messages also go to the dead-letter topic."""

    def __init__(self, *, servers, group, topic, deadletter_topic):
        self.consumer = Consumer(
            {
                "bootstrap.servers": servers,
                "group.id": group,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "partition.assignment.strategy": "cooperative-sticky",
                # A crashed consumer's partitions move to the others after 10 s, not the default 45 s.
                "session.timeout.ms": 10000,
                "heartbeat.interval.ms": 2000,
            }
        )
        self.producer = kafka_producer(servers)
        self.topic = topic
        self.deadletter_topic = deadletter_topic

    def run(self, on_batch, *, batch_size, flush_interval, stop, on_idle=None):
        self.consumer.subscribe([self.topic], on_assign=self.on_assign)
        try:
            while not stop.is_set():
                records = self.consumer.consume(num_messages=batch_size, timeout=flush_interval)
                received_at = time.time()
                batch = []
                for record in records:
                    if record.error():
                        log.warning("Kafka: %s", record.error())
                        continue
                    batch.append(Message("kafka", mqtt_topic_of(record), record.value() or b"", received_at))
                if not batch:
                    if on_idle:
                        on_idle()
                    continue
                result = []
                if not hand_over(lambda messages, result=result: result.append(on_batch(messages)), batch, stop):
                    break
                self.publish_dead_letters(result[0].rejections)
                try:
                    self.consumer.commit(asynchronous=False)
                except KafkaException as e:
                    # A rebalance took the partitions away: their new owner re-reads, storage is idempotent.
                    log.warning("Kafka offset commit failed: %s", e)
        finally:
            self.producer.flush(10)
            self.consumer.close()

    def lag(self):
        """Messages behind the end of the partitions assigned to this consumer."""
        total = 0
        for partition in self.consumer.position(self.consumer.assignment()):
            low, high = self.consumer.get_watermark_offsets(partition, timeout=1, cached=False)
            position = partition.offset if partition.offset >= 0 else low
            total += max(high - position, 0)
        return total

    @staticmethod
    def on_assign(consumer, partitions):
        log.info("Kafka partitions assigned: %s", ", ".join(f"{p.topic}[{p.partition}]" for p in partitions))

    def publish_dead_letters(self, rejections):
        for r in rejections:
            device_id = device_id_from_topic(r.message.topic) or ""
            self.producer.produce(
                self.deadletter_topic,
                key=device_id.encode(),
                value=r.message.payload,
                headers=[("topic", r.message.topic.encode()), ("reason", r.reason.encode()), ("detail", r.detail.encode())],
            )
        self.producer.poll(0)
