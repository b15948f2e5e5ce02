"""The ingest's MQTT client on the real Mosquitto: reading ahead, acknowledging a batch at once."""

import threading

from django.conf import settings

from apps.telemetry.sources.mqtt import ConsumerClient, mqtt_client

from .conftest import eventually


class Consumer:
    """A persistent-session ConsumerClient on `topic`, collecting (mid, payload) as they arrive."""

    def __init__(self, client_id, topic):
        self.client, connect_kwargs = mqtt_client(
            settings.MQTT_URL, client_id=client_id, session_expiry=60, manual_ack=True, client_class=ConsumerClient
        )
        self.received = []
        self.subscribed = threading.Event()
        self.client.on_message = lambda client, userdata, msg: self.received.append((msg.mid, msg.payload))
        self.client.on_subscribe = lambda *args: self.subscribed.set()
        self.client.on_connect = lambda client, *args: client.subscribe(topic, qos=1)
        self.client.connect(**connect_kwargs)
        self.client.loop_start()
        assert self.subscribed.wait(10), "no SUBACK"

    def settle(self):
        """Return once the broker has read everything sent before: it handles one connection's
        packets in order, so the PUBACK of a publish sent now comes after our PUBACKs took effect.
        (Else a quick reconnect may take the session over before the broker has read them.)"""
        self.client.publish("test/ack/settled", b"", qos=1).wait_for_publish(10)

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


def test_it_acknowledges_a_batch_so_that_only_the_rest_is_redelivered(publisher, unique):
    topic = f"test/ack/{unique}"
    consumer = Consumer(f"test-ack-{unique}", topic)
    try:
        for i in range(50):
            publisher(topic, b"%d" % i)
        # 50 small messages arrive in one read: they reach on_message only if the read-ahead
        # socket tells paho's loop about the bytes it holds (else they wait for the next packet).
        eventually(lambda: len(consumer.received) == 50, timeout=10, message="50 messages")
        consumer.client.ack_all([mid for mid, _ in consumer.received[:30]])
        consumer.settle()
    finally:
        consumer.close()

    again = Consumer(f"test-ack-{unique}", topic)
    try:
        eventually(lambda: len(again.received) == 20, timeout=10, message="20 redelivered messages")
        again.client.ack_all([mid for mid, _ in again.received])
    finally:
        again.close()
    assert [payload for _, payload in again.received] == [b"%d" % i for i in range(30, 50)]
