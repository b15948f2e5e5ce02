"""The ingest's MQTT client on the real Mosquitto: reading ahead, acknowledging a batch at once."""

import threading
import time
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from django.conf import settings
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from apps.telemetry.sources.mqtt import MqttSource

from .support import Consumer, eventually


def test_it_acknowledges_a_batch_so_that_only_the_rest_is_redelivered(publisher, unique):
    topic = f"test/ack/{unique}"
    consumer = Consumer(f"test-ack-{unique}", topic)
    try:
        for i in range(50):
            publisher(topic, b"%d" % i)
        # 50 small messages arrive in one read: they reach the consumer only if the read-ahead
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


def test_it_reads_topic_and_payload_past_a_publishs_properties(unique):
    topic = f"test/properties/{unique}"
    consumer = Consumer(f"test-props-{unique}", topic)
    url = urlsplit(settings.MQTT_URL)
    sender = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-props-pub-{unique}", protocol=mqtt.MQTTv5)
    sender.connect(url.hostname, url.port)
    sender.loop_start()
    try:
        properties = Properties(PacketTypes.PUBLISH)
        properties.ContentType = "application/json"
        properties.UserProperty = ("gateway", "g" * 200)  # properties over 127 bytes: a two-byte length
        for payload, props in ((b'{"v": 1}', properties), (b'{"v": 2}', None)):
            sender.publish(topic, payload, qos=1, properties=props).wait_for_publish(10)
        eventually(lambda: len(consumer.received) == 2, timeout=10, message="2 messages")
        assert [payload for _, payload in consumer.received] == [b'{"v": 1}', b'{"v": 2}']
        assert consumer.topics == [topic, topic]
        consumer.client.ack_all([mid for mid, _ in consumer.received])
        consumer.settle()
    finally:
        sender.disconnect()
        sender.loop_stop()
        consumer.close()


def test_it_stores_what_arrived_during_a_slow_batch_without_waiting_another_interval(publisher, unique):
    topic, client_id = f"test/flush/{unique}", f"test-flush-{unique}"
    Consumer(client_id, topic).close()  # the persistent session: the broker queues "first" for the source
    publisher(topic, b"first")
    source = MqttSource(url=settings.MQTT_URL, client_id=client_id, topic=topic, session_expiry=60)
    stop = threading.Event()
    batches, first_done = [], []

    def on_batch(messages):
        batches.append([m.payload for m in messages])
        if len(batches) == 1:
            publisher(topic, b"second")  # arrives while the first batch is being stored
            time.sleep(1.5)
            first_done.append(time.monotonic())
        else:
            batches[-1].append(time.monotonic() - first_done[0])
            stop.set()

    runner = threading.Thread(
        target=source.run, args=(on_batch,), kwargs={"batch_size": 100, "flush_interval": 1.0, "stop": stop}
    )
    runner.start()
    runner.join(15)
    assert not runner.is_alive(), "the source did not stop"
    assert [batch[:1] for batch in batches] == [[b"first"], [b"second"]]
    # "second" is 1.5 s old when the first batch is done: due at once, not after another second's wait
    assert batches[1][1] < 0.5


def test_it_holds_no_more_unacknowledged_messages_than_its_receive_maximum(unique):
    """Mosquitto sends past the Receive Maximum once a batch's acknowledgements are in (over 1,500
    in flight at 300, measured): the source stops reading until a stored batch makes room."""
    topic, client_id = f"test/inflight/{unique}", f"test-inflight-{unique}"
    Consumer(client_id, topic).close()  # the persistent session: the broker queues the backlog for the source
    url = urlsplit(settings.MQTT_URL)
    sender = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-inflight-pub-{unique}", protocol=mqtt.MQTTv5)
    sender.connect(url.hostname, url.port)
    sender.loop_start()
    try:
        sent = [sender.publish(topic, b"%d" % i, qos=1) for i in range(2000)]
        sent[-1].wait_for_publish(20)
    finally:
        sender.disconnect()
        sender.loop_stop()
    source = MqttSource(url=settings.MQTT_URL, client_id=client_id, topic=topic, session_expiry=60, receive_maximum=300)
    stop = threading.Event()
    received, in_flight = [], []

    def on_batch(messages):
        received.extend(m.payload for m in messages)
        if len(received) == len(messages):
            time.sleep(1.5)  # a slow first batch: the broker must wait for its acknowledgements
        with source.lock:  # this batch (its size depends on timing) and what arrived meanwhile
            in_flight.append(len(messages) + len(source.buffer))
        if len(received) >= 2000:
            stop.set()

    runner = threading.Thread(
        target=source.run, args=(on_batch,), kwargs={"batch_size": 100, "flush_interval": 0.05, "stop": stop}
    )
    runner.start()
    runner.join(30)
    assert not runner.is_alive(), "the source did not stop"
    assert in_flight[0] == 300 and max(in_flight) == 300
    assert sorted(received, key=int) == [b"%d" % i for i in range(2000)]
