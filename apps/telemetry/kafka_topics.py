"""Kafka administration: create iothub.readings / iothub.deadletter idempotently (reporting
mismatches), and measure a consumer group's lag from outside the group."""

import logging
import time

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

log = logging.getLogger(__name__)


def ensure_topics(*, servers, topics, partitions, retention_ms, timeout=30):
    """Create missing topics (lz4, retention); returns a list of human-readable mismatches for existing ones."""
    admin = AdminClient({"bootstrap.servers": servers})
    config = {"compression.type": "lz4", "retention.ms": str(retention_ms)}
    futures = admin.create_topics(
        [NewTopic(t, num_partitions=partitions, replication_factor=1, config=config) for t in topics],
        operation_timeout=timeout,
    )
    for topic, future in futures.items():
        try:
            future.result(timeout)
            log.info("Kafka topic %s created with %d partitions", topic, partitions)
        except KafkaException as e:
            if e.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
    metadata = wait_for_topics(admin, topics, timeout)
    mismatches = []
    for topic in topics:
        found = len(metadata.topics[topic].partitions)
        if found != partitions:
            mismatches.append(f"topic {topic} has {found} partitions, configured {partitions}")
    described = admin.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, t) for t in topics])
    for resource, future in described.items():
        entries = future.result(timeout)
        for name, wanted in config.items():
            if entries[name].value != wanted:
                mismatches.append(f"topic {resource.name} has {name}={entries[name].value}, configured {wanted}")
    for message in mismatches:
        log.warning("Kafka: %s", message)
    return mismatches


def wait_for_topics(admin, topics, timeout):
    """Cluster metadata once it lists every topic: a topic created a moment ago may not show yet."""
    deadline = time.monotonic() + timeout
    while True:
        metadata = admin.list_topics(timeout=timeout)
        if all(topic in metadata.topics for topic in topics) or time.monotonic() > deadline:
            return metadata
        time.sleep(0.2)


def consumer_group_lag(*, servers, group, topic, timeout=10):
    """Messages in `topic` not yet committed by `group`: measurable even while every consumer is down."""
    consumer = Consumer({"bootstrap.servers": servers, "group.id": group, "enable.auto.commit": False})
    try:
        metadata = consumer.list_topics(topic, timeout=timeout).topics[topic]
        if metadata.error is not None:
            if metadata.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                return 0  # nothing was ever published, so nothing is waiting
            raise KafkaException(metadata.error)
        partitions = [TopicPartition(topic, p) for p in metadata.partitions]
        lag = 0
        for committed in consumer.committed(partitions, timeout=timeout):
            low, high = consumer.get_watermark_offsets(committed, timeout=timeout)
            lag += high - (committed.offset if committed.offset >= 0 else low)
        return lag
    finally:
        consumer.close()
