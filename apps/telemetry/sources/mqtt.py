"""MQTT source: receive QoS 1 messages, acknowledge each only after its batch is stored."""

import logging
import struct
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.exception import MalformedPacket

from iothub.mqtt import mqtt_client

from ..payloads import Message
from .common import hand_over

log = logging.getLogger(__name__)


class ReadAheadSocket:
    """A connected socket read in chunks of up to 64 KiB: paho asks for each packet's first byte,
    its length and its body in separate recv calls, three system calls per message. `pending()`
    tells paho's loop that bytes are waiting here, so that it reads them without waiting in select."""

    CHUNK = 65536

    def __init__(self, sock):
        self.sock = sock
        self.chunk = b""
        self.position = 0

    def recv(self, size):
        if self.position == len(self.chunk):
            self.chunk, self.position = self.sock.recv(self.CHUNK), 0  # b"" at the end of the stream
        data = self.chunk[self.position : self.position + size]
        self.position += len(data)
        return data

    def pending(self):
        inner = getattr(self.sock, "pending", None)  # a TLS socket's decrypted bytes
        return len(self.chunk) - self.position + (inner() if inner else 0)

    def __getattr__(self, name):
        return getattr(self.sock, name)


PUBACK_PACKET = struct.Struct("!BBH")  # fixed header, remaining length 2, message id (reason: success)
TWO_BYTES = struct.Struct("!H")  # a PUBLISH's topic length and its message id


def variable_byte_integer(data, position):
    """MQTT's variable byte integer at `position` → (value, position after it)."""
    value = shift = 0
    while True:
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, position
        shift += 7


class ConsumerClient(mqtt.Client):
    """paho's client for a consumer at a high message rate: its socket reads ahead, the packets
    read ahead are handled in one go (paho's loop would select() once per packet), QoS 1 messages
    are decoded without their properties and handed to `on_qos1_message`, and a batch's PUBACKs go
    out as one write (paho queues, wakes its network thread for and sends each one on its own).
    Relies on paho's `_create_socket`, `_handle_publish`, `_in_packet` and `_packet_queue`
    (paho-mqtt is pinned)."""

    on_qos1_message = None  # (topic, payload, mid), called in the network thread

    def _create_socket(self):
        return ReadAheadSocket(super()._create_socket())

    def loop_read(self, max_packets=1):
        rc = super().loop_read(max_packets)
        while rc == mqtt.MQTT_ERR_SUCCESS and self._sock is not None and self._sock.pending():
            rc = super().loop_read(max_packets)
        return rc

    def _handle_publish(self):
        """A QoS 1 PUBLISH without what paho does for each beside: MQTT 5 properties decoded into a
        Properties object (which the ingest does not read; 13 % of its CPU with gateway arrays), a
        debug log line, an MQTTMessage and the match of its topic against the callbacks (a quarter
        of the network thread's time at 10,000 msg/s in a py-spy profile). Other QoS levels go through paho."""
        command, packet = self._in_packet["command"], self._in_packet["packet"]
        if (command & 0x06) >> 1 != 1:
            return super()._handle_publish()
        try:
            (length,) = TWO_BYTES.unpack_from(packet)
            topic = str(packet[2 : 2 + length], "utf-8")
            (mid,) = TWO_BYTES.unpack_from(packet, 2 + length)
            position = 4 + length
            if self._protocol == mqtt.MQTTv5:
                properties_length, position = variable_byte_integer(packet, position)
                position += properties_length
        except (struct.error, IndexError, UnicodeDecodeError) as e:
            raise MalformedPacket(f"PUBLISH: {e}") from e
        self.on_qos1_message(topic, bytes(packet[position:]), mid)
        return mqtt.MQTT_ERR_SUCCESS if self._manual_ack else self._send_puback(mid)

    def ack_all(self, mids):
        """Acknowledge the QoS 1 messages `mids` (manual_ack=True)."""
        if mids:
            packets = b"".join([PUBACK_PACKET.pack(mqtt.PUBACK, 2, mid) for mid in mids])
            self._packet_queue(mqtt.PUBACK, packets, 0, 0)


class MqttSource:
    """Subscribes to the readings topic and yields batches to `on_batch`."""

    def __init__(self, *, url, client_id, topic, protocol=5, session_expiry=86400, receive_maximum=10000):
        self.client, self.connect_kwargs = mqtt_client(
            url,
            client_id=client_id,
            protocol=protocol,
            session_expiry=session_expiry,
            manual_ack=True,
            client_class=ConsumerClient,
        )
        if protocol == 5:
            # Back-pressure: at most this many unacknowledged messages in flight to us (we acknowledge
            # after the commit), so a backlog cannot flood the process's memory. `receive` holds to it
            # as well: Mosquitto sends past it once acknowledgements come in.
            self.connect_kwargs["properties"].ReceiveMaximum = receive_maximum
        self.topic = topic
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.has_room = threading.Condition(self.lock)
        self.buffer = []
        self.receive_maximum = receive_maximum
        self.buffer_limit = receive_maximum
        self.closing = False
        self.generation = 0  # message ids are per connection: never acknowledge across a reconnect
        self.batch_size = 1
        self.client.on_connect = self.on_connect
        self.client.on_message = self.on_message
        self.client.on_qos1_message = self.receive

    def on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            log.error("MQTT connect refused: %s", reason_code)
            return
        with self.lock:
            self.generation += 1
        client.subscribe(self.topic, qos=1)
        log.info("MQTT connected, subscribed to %s", self.topic)

    def on_message(self, client, userdata, msg):
        self.receive(msg.topic, msg.payload, msg.mid, msg.qos)

    def receive(self, topic, payload, mid, qos=1):
        message = Message("mqtt", topic, payload, time.time())
        with self.lock:
            self.buffer.append((message, mid, qos, self.generation))
            if len(self.buffer) >= self.batch_size:
                self.wake.set()
            # Mosquitto sends past our Receive Maximum once acknowledgements come in (a backlog of
            # 400,000 messages was in this buffer whole). Not reading on (this is the network thread)
            # leaves the rest in the socket and then in the broker until a stored batch makes room.
            while len(self.buffer) >= self.buffer_limit and not self.closing:
                self.has_room.wait()

    def seconds_until_due(self, flush_interval):
        """Until the oldest buffered message is `flush_interval` old: what arrived while the last
        batch was being stored has waited that long already."""
        with self.lock:
            oldest = self.buffer[0][0].received_at if self.buffer else None
        return flush_interval if oldest is None else max(0.0, oldest + flush_interval - time.time())

    def run(self, on_batch, *, batch_size, flush_interval, stop, on_idle=None):
        """Until `stop` is set: batch by size or age, store, then acknowledge."""
        self.batch_size = batch_size
        self.buffer_limit = max(batch_size, self.receive_maximum - batch_size)  # and one batch being stored
        self.client.connect_async(**self.connect_kwargs)
        self.client.loop_start()
        try:
            while True:
                stopping = stop.is_set()
                self.wake.wait(self.seconds_until_due(flush_interval))
                self.wake.clear()
                with self.lock:
                    batch, self.buffer = self.buffer[:batch_size], self.buffer[batch_size:]
                    if len(self.buffer) >= batch_size:
                        self.wake.set()  # a backlog: the next batch is full already
                    self.has_room.notify()
                if batch:
                    if not hand_over(on_batch, [m for m, *_ in batch], stop):
                        break
                    # After a reconnect the broker redelivers the earlier ones itself (stored once anyway).
                    self.client.ack_all([mid for _, mid, qos, generation in batch if qos == 1 and generation == self.generation])
                elif on_idle:
                    on_idle()
                if stopping:
                    break
        finally:
            with self.lock:
                self.closing = True
                self.has_room.notify()
            self.client.disconnect()
            self.client.loop_stop()
