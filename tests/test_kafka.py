"""The Kafka path on the real KRaft broker started by scripts/services.sh."""

import uuid

from confluent_kafka import Consumer, Producer
from django.conf import settings

from apps.telemetry.models import DeadLetter, Reading

from .support import eventually, now_ms


def consume_all(topic, count, timeout=30):
    consumer = Consumer(
        {
            "bootstrap.servers": settings.KAFKA_BOOTSTRAP_SERVERS,
            "group.id": f"test-reader-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([topic])
    records = []
    try:
        eventually(
            lambda: records.extend(r for r in consumer.consume(count, 1.0) if not r.error()) or len(records) >= count,
            timeout=timeout,
            message=f"{count} records on {topic}",
        )
    finally:
        consumer.close()
    return records


def test_it_round_trips_a_message_through_the_broker(unique):
    topic = f"test-roundtrip-{unique}"
    producer = Producer({"bootstrap.servers": settings.KAFKA_BOOTSTRAP_SERVERS})
    producer.produce(topic, key=b"dev-1", value=b'{"v": 1}', headers=[("topic", b"sensors/dev-1")])
    assert producer.flush(30) == 0
    [record] = consume_all(topic, 1)
    assert (record.key(), record.value(), record.headers()) == (b"dev-1", b'{"v": 1}', [("topic", b"sensors/dev-1")])


def test_it_bridges_mqtt_into_kafka_and_ingests_from_kafka(plant, hub, publisher, unique):
    bridge = hub.start("bridge", "--client-id", f"bridge-{unique}")
    hub.wait_for_output(bridge, "subscribed")
    hub.ingest("--source", "kafka")
    ts = now_ms()
    publisher("sensors/dev-1", {"ts": ts, "temperature": 22.5})
    publisher("sensors/dev-2/zone-b", [{"ts": ts, "v": 23.0}, {"ts": ts + 1000, "v": 23.5}])
    publisher("sensors/dev-2", {"ts": ts, "pressure": 1.0})

    def stored():
        return sorted(Reading.objects.values_list("device__device_id", "value"))

    eventually(lambda: len(stored()) >= 3, timeout=40, message="3 readings via Kafka")
    assert stored() == [("dev-1", 22.5), ("dev-2", 23.0), ("dev-2", 23.5)]
    dead = eventually(lambda: list(DeadLetter.objects.values_list("source", "reason")), message="dead letter")
    assert dead == [("kafka", "unknown_metric")]

    # The bridge keyed each message by device id and kept the MQTT topic as a header.
    records = consume_all(hub.env["IOTHUB_KAFKA_TOPIC"], 3)
    assert sorted((r.key(), dict(r.headers())["topic"]) for r in records) == [
        (b"dev-1", b"sensors/dev-1"),
        (b"dev-2", b"sensors/dev-2"),
        (b"dev-2", b"sensors/dev-2/zone-b"),
    ]
    # Rejected input also lands on the dead-letter topic, with its reason.
    [dead_record] = consume_all(hub.env["IOTHUB_KAFKA_DEADLETTER_TOPIC"], 1)
    assert dict(dead_record.headers())["reason"] == b"unknown_metric"


def test_it_provisions_topics_idempotently_and_reports_mismatches(unique):
    from confluent_kafka.admin import AdminClient, NewTopic

    from apps.telemetry.kafka_topics import ensure_topics

    servers = settings.KAFKA_BOOTSTRAP_SERVERS
    topics = [f"test-prov-{unique}", f"test-prov-dl-{unique}"]
    assert ensure_topics(servers=servers, topics=topics, partitions=3, retention_ms=3_600_000) == []
    assert ensure_topics(servers=servers, topics=topics, partitions=3, retention_ms=3_600_000) == []  # again: no-op
    other = f"test-prov-other-{unique}"
    admin = AdminClient({"bootstrap.servers": servers})
    admin.create_topics([NewTopic(other, num_partitions=1, replication_factor=1)])[other].result(30)
    mismatches = ensure_topics(servers=servers, topics=[other], partitions=3, retention_ms=3_600_000)
    assert f"topic {other} has 1 partitions, configured 3" in mismatches
    assert any("compression.type" in m for m in mismatches) and any("retention.ms" in m for m in mismatches)
