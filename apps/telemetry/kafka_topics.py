"""Kafka topic provisioning: create iothub.readings / iothub.deadletter idempotently, report mismatches."""

import logging

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

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
    metadata = admin.list_topics(timeout=timeout)
    mismatches = []
    for topic in topics:
        found = len(metadata.topics[topic].partitions)
        if found != partitions:
            mismatches.append(f"topic {topic} has {found} partitions, configured {partitions}")
    for message in mismatches:
        log.warning("Kafka: %s", message)
    return mismatches
