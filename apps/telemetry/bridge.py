"""MQTT → Kafka bridge: each batch of MQTT messages is acknowledged only once Kafka confirmed it."""

from confluent_kafka import KafkaException

from .payloads import device_id_from_topic


def forward_to_kafka(messages, *, producer, topic, timeout=30.0):
    """Produce messages keyed by device id (the MQTT payload unchanged, header `topic`); raise unless all were delivered."""
    failures = []

    def delivered(err, _msg):
        if err is not None:
            failures.append(err)

    for message in messages:
        device_id = device_id_from_topic(message.topic) or ""
        producer.produce(
            topic,
            key=device_id.encode(),
            value=message.payload,
            headers=[("topic", message.topic.encode())],
            on_delivery=delivered,
        )
        producer.poll(0)
    remaining = producer.flush(timeout)
    if remaining or failures:
        raise KafkaException(failures[0] if failures else f"{remaining} messages not delivered in {timeout} s")
