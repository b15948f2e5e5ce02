"""Building blocks of benchmark commands (`manage.py bench_ingest`).

Isolation: a benchmark never disturbs the hub or tests running beside it. It uses its own
PostgreSQL database, its own IOTHUB_NAMESPACE (Redis cache, channel layer, Celery queue), its
own MQTT client ids and shared-subscription groups and its own Kafka topics and consumer
groups, all named after a per-run id. By default it also starts a private Mosquitto with the
settings of scripts/services.sh: every message published to `sensors/...` on the shared broker
would reach every other ingest subscribed to `sensors/#`, whatever its group.

Load generators and bare consumers run in child processes (multiprocessing, spawn), so their
CPU shows as processes of their own and the GIL of the measuring process does not skew them.
Children import this module before Django is set up, so hub modules that import models are
imported inside the functions that need them.
"""

import asyncio
import io
import math
import multiprocessing
import os
import platform
import pstats
import queue
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

import orjson
import psutil
import psycopg

ROOT = Path(__file__).resolve().parents[2]
MB = 1024 * 1024
SESSION_EXPIRY = 600  # s: long enough for any benchmark, short enough to vanish from a shared broker


class BenchError(Exception):
    """A benchmark could not complete (timeout, a process died); the message says why."""


def log_tail(path, lines=25):
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def wait_until(check, *, timeout, what, interval=0.05):
    """Poll `check` until truthy; BenchError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


# --------------------------------------------------------------------------------------------
# Child processes


def _child_entry(results, target, kwargs):
    """Runs in a spawned child: set Django up (for the hub's helpers), run target, send its result back."""
    try:
        import django

        django.setup()
        results.put(("ok", target(**kwargs)))
    except BaseException as e:  # reported to the parent, which raises it as BenchError
        results.put(("error", f"{type(e).__name__}: {e}"))


class Child:
    """`target(**kwargs)` in its own spawned process; `result()` waits for its return value. Always stopped on exit."""

    def __init__(self, target, **kwargs):
        context = multiprocessing.get_context("spawn")
        self.name = target.__name__
        self.results = context.Queue()
        self.process = context.Process(target=_child_entry, args=(self.results, target, kwargs), daemon=True)
        self.process.start()

    def result(self, timeout):
        deadline = time.monotonic() + timeout
        while True:
            try:
                status, value = self.results.get(timeout=1.0)
                break
            except queue.Empty:
                if not self.process.is_alive() and self.results.empty():
                    raise BenchError(f"{self.name} died (exit code {self.process.exitcode})") from None
                if time.monotonic() > deadline:
                    raise BenchError(f"{self.name} did not finish within {timeout:.0f} s") from None
        if status == "error":
            raise BenchError(f"{self.name}: {value}")
        return value

    def stop(self):
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def run_child(target, *, timeout, **kwargs):
    """Run target(timeout=timeout, **kwargs) in a child process and return its result.

    The child bounds its own waits by `timeout`; the parent gives it that plus its duration and a minute."""
    with Child(target, timeout=timeout, **kwargs) as child:
        return child.result(timeout + kwargs.get("duration", 0) + 60)


# --------------------------------------------------------------------------------------------
# Private Mosquitto

# The settings scripts/services.sh writes for the shared broker (queue limits raised).
MOSQUITTO_CONF = """\
# iothub benchmark: a private broker with the settings of scripts/services.sh
{user_line}
persistence true
persistence_location {workdir}/
autosave_interval 60
max_queued_messages 1000000
max_queued_bytes 0
max_inflight_messages 0
max_packet_size 1048576
set_tcp_nodelay true
log_dest file {workdir}/mosquitto.log
log_type error
log_type warning
log_type notice
allow_anonymous true
listener {port} 127.0.0.1
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port):
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@contextmanager
def private_mosquitto(workdir, binary="/usr/sbin/mosquitto"):
    """Start a Mosquitto of our own on a free loopback port; yields its mqtt:// URL; always stopped."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = workdir / "mosquitto.conf"
    user_line = "user root" if os.geteuid() == 0 else ""
    conf.write_text(MOSQUITTO_CONF.format(user_line=user_line, workdir=workdir, port=port))
    with open(workdir / "start.log", "wb") as log:
        process = subprocess.Popen([binary, "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: port_open(port) or process.poll() is not None, timeout=15, what="Mosquitto")
        if process.poll() is not None:
            raise BenchError(f"Mosquitto exited: {log_tail(workdir / 'start.log')}")
        yield f"mqtt://127.0.0.1:{port}"
    finally:
        stop_process(process, timeout=15)
        (workdir / "mosquitto.db").unlink(missing_ok=True)  # the saved backlog: hundreds of MB, of no use


def stop_process(process, *, timeout=30, sig=signal.SIGTERM):
    """Signal a subprocess and wait for it; kill it if it does not exit in time. Returns its exit code."""
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


# --------------------------------------------------------------------------------------------
# The benchmark database


def database_url(server_url, name):
    """The same server and credentials, another database."""
    return urlunsplit(urlsplit(server_url)._replace(path="/" + name))


def run_manage(args, *, env, log_path, timeout=900):
    """Run `manage.py <args>` to completion with its output in log_path; BenchError if it fails."""
    with open(log_path, "ab") as log:
        result = subprocess.run(
            [sys.executable, "manage.py", *args], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=timeout
        )
    if result.returncode:
        raise BenchError(f"manage.py {' '.join(args)} failed:\n{log_tail(log_path)}")


class BenchDatabase:
    """A PostgreSQL database of the benchmark's own: created, migrated and seeded on first use."""

    def __init__(self, server_url, name):
        self.name = name
        self.url = database_url(server_url, name)
        self.admin_url = database_url(server_url, "postgres")

    def create_if_missing(self):
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [self.name]).fetchone():
                conn.execute(f'CREATE DATABASE "{self.name}"')

    def prepare(self, *, devices, env, log_path):
        """Create, migrate, seed `devices` demo devices (idempotent) and empty the readings."""
        self.create_if_missing()
        env = {**env, "DATABASE_URL": self.url}
        run_manage(["migrate", "--noinput"], env=env, log_path=log_path)
        run_manage(["seed_demo", "--devices", str(devices)], env=env, log_path=log_path)
        with self.connect() as conn:
            truncate_readings(conn)

    def drop(self):
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')

    def connect(self):
        return psycopg.connect(self.url, autocommit=True)


def truncate_readings(conn):
    conn.execute("TRUNCATE telemetry_reading, telemetry_deadletter RESTART IDENTITY")


@contextmanager
def without_housekeeping(conn, table="telemetry_reading"):
    """Autovacuum off on the table's partitions for the block, and checkpoint() to call before each
    drain. A drain's few hundred thousand rows trigger an autovacuum and fill WAL towards a
    checkpoint (the bench database's statistics showed both during drains); on 2 cores either
    competes with the one drain of a pair it lands on."""
    partitions = [
        name
        for (name,) in conn.execute("SELECT inhrelid::regclass::text FROM pg_inherits WHERE inhparent = %s::regclass", [table])
    ]
    for partition in partitions:
        conn.execute(f"ALTER TABLE {partition} SET (autovacuum_enabled = off)")
    try:
        yield lambda: conn.execute("CHECKPOINT")
    finally:
        for partition in partitions:
            conn.execute(f"ALTER TABLE {partition} RESET (autovacuum_enabled)")


def count_rows(conn, table):
    return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def demo_device_pks(conn, devices):
    """pk of sim-00001 … sim-<devices>, in that order."""
    rows = conn.execute(
        "SELECT id FROM devices_device WHERE device_id LIKE 'sim-%%' ORDER BY device_id LIMIT %s", [devices]
    ).fetchall()
    if len(rows) < devices:
        raise BenchError(f"the bench database has {len(rows)} demo devices, {devices} needed")
    return [pk for (pk,) in rows]


def metric_pk(conn, key):
    return conn.execute("SELECT id FROM devices_metric WHERE key = %s", [key]).fetchone()[0]


def set_perceived_temperature(conn, *, attached):
    """Put the demo's calculated perceived temperature on the demo device type, or take it off (an
    ingest started afterwards loads the device master with or without it)."""
    device_type = conn.execute("SELECT id FROM devices_devicetype WHERE name = 'env-sensor'").fetchone()[0]
    metric = metric_pk(conn, "perceived_temperature")
    if attached:
        conn.execute(
            "INSERT INTO devices_devicetype_metrics (devicetype_id, metric_id) VALUES (%s, %s) ON CONFLICT DO NOTHING",
            [device_type, metric],
        )
    else:
        conn.execute("DELETE FROM devices_devicetype_metrics WHERE devicetype_id = %s AND metric_id = %s", [device_type, metric])


# --------------------------------------------------------------------------------------------
# Benchmark data: the same readings as MQTT payloads, Kafka records and COPY rows


def backlog_readings(count, devices, per_message, start_ms):
    """Message i of the backlog as (device number, [(ts_ms, value)]); every (device, ts) distinct."""
    for i in range(count):
        base = start_ms + i * per_message
        yield i % devices + 1, [(base + j, 20.0 + (i + j) % 100 / 10) for j in range(per_message)]


def backlog_start_ms(count, per_message):
    """A start so that the whole backlog lies in the recent past (inside the accepted clock window)."""
    return int(time.time() * 1000) - count * per_message - 60_000


def encode_payload(readings, metric="temperature"):
    """One reading → object form {"ts", metric}; several → a gateway array of compact {"ts", "v"} items
    (of the primary metric, temperature)."""
    if len(readings) == 1:
        ts, value = readings[0]
        return orjson.dumps({"ts": ts, metric: value})
    return orjson.dumps([{"ts": ts, "v": value} for ts, value in readings])


def device_topic(n):
    from apps.demo.seed import demo_device_id

    return f"sensors/{demo_device_id(n)}"


def copy_rows(*, count, devices, per_message, start_ms, device_pks, metric):
    """The backlog as the pipeline stores it: (device_pk, metric_pk, time, value)."""
    return [
        (device_pks[n - 1], metric, datetime.fromtimestamp(ts / 1000, tz=UTC), value)
        for n, readings in backlog_readings(count, devices, per_message, start_ms)
        for ts, value in readings
    ]


READING_COLUMNS = "(device_id, metric_id, time, value)"
READING_TYPES = ["int8", "int8", "timestamptz", "float8"]


def copy_into(cursor, table, rows):
    with cursor.copy(f"COPY {table} {READING_COLUMNS} FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(READING_TYPES)
        for row in rows:
            copy.write_row(row)


def timed_copy(conn, table, rows):
    """Seconds for one psycopg binary COPY of rows into table, in one transaction."""
    started = time.monotonic()
    with conn.transaction(), conn.cursor() as cursor:
        copy_into(cursor, table, rows)
    return time.monotonic() - started


def raw_copy_seconds(conn, rows):
    """COPY into an unindexed scratch table with the readings' columns: PostgreSQL's raw write speed."""
    conn.execute("DROP TABLE IF EXISTS bench_copy_scratch")
    conn.execute("CREATE TABLE bench_copy_scratch (device_id bigint, metric_id bigint, time timestamptz, value double precision)")
    try:
        return timed_copy(conn, "bench_copy_scratch", rows)
    finally:
        conn.execute("DROP TABLE bench_copy_scratch")


def direct_copy_seconds(conn, rows):
    """COPY straight into telemetry_reading (partition routing, its key index; no conflict handling)."""
    truncate_readings(conn)
    try:
        return timed_copy(conn, "telemetry_reading", rows)
    finally:
        truncate_readings(conn)


def store_sql_seconds(conn, rows, batch_rows):
    """The pipeline's SQL without its Python: per batch of new readings, one binary COPY into
    telemetry_reading in a transaction (apps.telemetry.store.copy_readings' first way), its rows packed beforehand."""
    from apps.telemetry.store import COPY_HEADER, COPY_READINGS, COPY_TRAILER, ReadingColumns, binary_rows

    staged = [(device, metric, at.timestamp(), value) for device, metric, at, value in rows]
    batches = [binary_rows(ReadingColumns.of(staged[start : start + batch_rows])) for start in range(0, len(staged), batch_rows)]
    truncate_readings(conn)
    started = time.monotonic()
    for data in batches:
        with conn.transaction(), conn.cursor() as cursor, cursor.copy(COPY_READINGS) as copy:
            copy.write(COPY_HEADER + data + COPY_TRAILER)
    seconds = time.monotonic() - started
    truncate_readings(conn)
    return seconds


# --------------------------------------------------------------------------------------------
# MQTT: persistent sessions, publishers, a bare subscriber


def shared_topic(group):
    """What `ingest --source mqtt` subscribes to with IOTHUB_MQTT_SHARED_GROUP=group."""
    return f"$share/{group}/sensors/#"


def open_mqtt(url, client_id, *, session_expiry=0, on_message=None):
    """A connected paho client (network loop running); waits for the CONNACK.

    paho's own inflight limit is off: with one, paho rescans its whole outgoing queue on every
    PUBACK (quadratic: a 100,000-message backlog then stalls)."""
    from iothub.mqtt import mqtt_client

    client, connect_kwargs = mqtt_client(url, client_id=client_id, session_expiry=session_expiry)
    connected = threading.Event()
    client.on_connect = lambda *args: connected.set()
    client.on_message = on_message
    client.max_inflight_messages_set(0)
    client.max_queued_messages_set(0)
    client.connect(**connect_kwargs)
    client.loop_start()
    if not connected.wait(15):
        close_mqtt(client)
        raise BenchError(f"MQTT {url}: no CONNACK for {client_id}")
    return client


def close_mqtt(client):
    client.disconnect()
    client.loop_stop()


def prepare_session(url, client_id, topic):
    """Create a persistent session subscribed to topic (QoS 1) and go offline: the broker queues from now on."""
    subscribed = threading.Event()
    client = open_mqtt(url, client_id, session_expiry=SESSION_EXPIRY)
    try:
        client.on_subscribe = lambda *args: subscribed.set()
        client.subscribe(topic, qos=1)
        if not subscribed.wait(15):
            raise BenchError(f"MQTT: no SUBACK for {client_id} on {topic}")
    finally:
        close_mqtt(client)


def end_session(url, client_id):
    """Discard a persistent session: a clean start without expiry. The broker would otherwise queue
    every later backlog for it until it expires, growing with each pair of drains."""
    close_mqtt(open_mqtt(url, client_id))


def mqtt_packet(kind, body):
    """One MQTT control packet: first byte, remaining length (variable byte integer), body."""
    header, length = bytearray([kind]), len(body)
    while True:
        length, byte = length >> 7, length & 0x7F
        header.append(byte | (0x80 if length else 0))
        if not length:
            return bytes(header) + body


def mqtt_string(text):
    data = text.encode()
    return len(data).to_bytes(2, "big") + data


class RatePublisher:
    """MQTT v5 QoS 1 publishing over a plain (or, for mqtts:, TLS) socket, for the benchmarks' backlogs and fixed-rate loads.

    paho spends ~80 µs of CPU per QoS 1 publish on these 2 cores (message objects, locks, its network
    thread): at 10,000 msg/s the load generator alone took two thirds of a core from the hub it
    measures, and a backlog of 300,000 messages took 45 s to publish. This one writes a window's
    PUBLISH packets in one send and counts the PUBACKs from the same socket. Not a general client:
    no client certificates, no QoS 2, no retransmission (the benchmark fails instead), at most
    `window` messages unacknowledged."""

    def __init__(self, url, client_id, *, window=1000, timeout=60):
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts"):
            raise BenchError(f"the rate publisher speaks mqtt:// and mqtts://, not {parts.scheme}://")
        self.window, self.timeout = window, timeout
        self.sock = socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 1883), timeout=15)
        if parts.scheme == "mqtts":
            from django.conf import settings

            context = ssl.create_default_context(cafile=settings.MQTT_CA or None)
            self.sock = context.wrap_socket(self.sock, server_hostname=parts.hostname)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        flags, credentials = 0x02, b""  # clean start
        if parts.username:
            flags, credentials = flags | 0x80, mqtt_string(unquote(parts.username))
        if parts.password:
            flags, credentials = flags | 0x40, credentials + mqtt_string(unquote(parts.password))
        # protocol name, version 5, flags, keep-alive 0 (off), no properties; payload: client id, credentials
        connect = mqtt_string("MQTT") + bytes([5, flags, 0, 0, 0]) + mqtt_string(client_id) + credentials
        self.sock.sendall(mqtt_packet(0x10, connect))
        self.received = b""
        self.published = self.acknowledged = 0
        kind, body = self.read_packet()
        if kind != 0x20 or body[1] != 0:
            raise BenchError(f"MQTT {url}: CONNACK refused {client_id} (packet {kind:#x}, reason {body[1:2].hex()})")

    def read_packet(self):
        """The next whole packet from the socket (blocking up to the timeout) → (first byte, body)."""
        from apps.telemetry.sources.mqtt import variable_byte_integer

        while True:
            try:
                length, start = variable_byte_integer(self.received, 1)
            except IndexError:  # not even the whole length yet
                length, start = math.inf, 0
            if len(self.received) >= start + length:
                kind, body = self.received[0], self.received[start : start + length]
                self.received = self.received[start + length :]
                return kind, body
            self.sock.settimeout(self.timeout)
            data = self.sock.recv(65536)
            if not data:
                raise BenchError("MQTT: the broker closed the publisher's connection")
            self.received += data

    def read_acks(self, *, until):
        """Count PUBACKs until at most `until` messages are unacknowledged."""
        while self.published - self.acknowledged > until:
            kind, body = self.read_packet()
            if kind != 0x40 or len(body) > 2 and body[2] >= 0x80:
                raise BenchError(f"MQTT: expected a successful PUBACK, got packet {kind:#x} {body.hex()}")
            self.acknowledged += 1

    def publish(self, messages):
        """Send [(topic as mqtt_string, payload), ...] QoS 1, a window's worth per write."""
        for first in range(0, len(messages), self.window):
            chunk = messages[first : first + self.window]
            self.read_acks(until=self.window - len(chunk))
            packets = []
            for topic, payload in chunk:
                packet_id = self.published % 65535 + 1
                self.published += 1
                packets.append(mqtt_packet(0x32, topic + packet_id.to_bytes(2, "big") + b"\x00" + payload))
            self.sock.sendall(b"".join(packets))

    def close(self):
        try:
            self.sock.sendall(b"\xe0\x00")  # DISCONNECT, normal
        finally:
            self.sock.close()


def publish_topics(devices):
    """RatePublisher's encoded topic of device n at index n (n from 1)."""
    return [b""] + [mqtt_string(device_topic(n)) for n in range(1, devices + 1)]


def publish_backlog(*, url, client_id, count, devices, per_message, start_ms, timeout, metric="temperature"):
    """Publish the backlog QoS 1 as fast as the broker acknowledges; returns {published, seconds}."""
    topics = publish_topics(devices)
    messages = [
        (topics[n], encode_payload(readings, metric)) for n, readings in backlog_readings(count, devices, per_message, start_ms)
    ]
    publisher = RatePublisher(url, client_id, timeout=timeout)
    try:
        started = time.monotonic()
        publisher.publish(messages)
        publisher.read_acks(until=0)
        return {"published": count, "seconds": time.monotonic() - started}
    finally:
        publisher.close()


def publish_at_rate(*, url, client_id, rate, duration, devices, timeout):
    """`rate` single-reading messages/s for `duration` s; ts = publish time (epoch ms), distinct per device."""
    topics = publish_topics(devices)
    last_ts = [0] * (devices + 1)
    published = 0
    publisher = RatePublisher(url, client_id, timeout=timeout)
    try:
        started = time.monotonic()
        while (elapsed := time.monotonic() - started) < duration:
            messages = []
            for _ in range(int(elapsed * rate) - published):
                n = published % devices + 1
                ts = last_ts[n] = max(int(time.time() * 1000), last_ts[n] + 1)
                messages.append((topics[n], orjson.dumps({"ts": ts, "temperature": 21.5})))
                published += 1
            if messages:
                publisher.publish(messages)
            time.sleep(0.001)
        seconds = time.monotonic() - started
        publisher.read_acks(until=0)
    finally:
        publisher.close()
    return {"published": published, "seconds": seconds}


class FirstLast:
    """Counts events with the monotonic times of the first and the last; `done` is set at `expected`.

    The rate counts what arrived after the first event (or batch of events) over the time between."""

    def __init__(self, expected):
        self.expected = expected
        self.count = self.first_count = 0
        self.first = self.last = None
        self.done = threading.Event()

    def tick(self, n=1):
        now = time.monotonic()
        if self.first is None:
            self.first, self.first_count = now, n
        self.last = now
        self.count += n
        if self.count >= self.expected:
            self.done.set()

    def result(self):
        if self.first is None or self.last == self.first:
            raise BenchError(f"{self.count:,} arrived at once: too few to measure a rate")
        return {
            "count": self.count,
            "seconds": self.last - self.first,
            "rate": (self.count - self.first_count) / (self.last - self.first),
        }


def ratio(numerator, denominator):
    """numerator / denominator, or None where the denominator is 0 or unknown."""
    return numerator / denominator if denominator else None


def drain_bare(*, url, client_id, expected, timeout):
    """A bare paho subscriber resuming its persistent session: counts messages (automatic PUBACK), nothing else.

    Returns count, seconds, rate and cpu (CPU seconds of this process, all threads, for the drain)."""
    seen = FirstLast(expected)
    cpu = time.process_time()
    client = open_mqtt(url, client_id, session_expiry=SESSION_EXPIRY, on_message=lambda *args: seen.tick())
    try:
        if not seen.done.wait(timeout):
            raise BenchError(f"bare subscriber: {seen.count:,} of {expected:,} messages after {timeout:.0f} s")
        return {**seen.result(), "cpu": time.process_time() - cpu}
    finally:
        close_mqtt(client)


# --------------------------------------------------------------------------------------------
# Kafka: topics, a producer of the backlog, a bare consumer


def create_kafka_topics(servers, topics, partitions, attempts=10):
    """Create the topics with the hub's provisioning; retried while fresh topics are missing from the metadata."""
    from apps.telemetry.kafka_topics import ensure_topics

    for _attempt in range(attempts):
        try:
            mismatches = ensure_topics(servers=servers, topics=topics, partitions=partitions, retention_ms=3_600_000)
            break
        except KeyError:  # ensure_topics lists the topics right after creating them; metadata may lag
            time.sleep(0.5)
    else:
        raise BenchError(f"Kafka topics {', '.join(topics)} still missing from the metadata")
    if mismatches:
        raise BenchError("; ".join(mismatches))


def delete_kafka_topics(servers, topics):
    """Delete the topics; returns a list of failures (a topic already gone is no failure)."""
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": servers})  # keep a reference: a collected client fails its futures
    failures = []
    for topic, future in admin.delete_topics(topics, operation_timeout=30).items():
        try:
            future.result(30)
        except KafkaException as e:
            if e.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                failures.append(f"{topic}: {e}")
    return failures


def produce_backlog(*, servers, topic, count, devices, start_ms):
    """The backlog as the bridge writes it (key = device id, header topic, value = payload); returns seconds."""
    from apps.telemetry.sources.kafka import kafka_producer

    producer = kafka_producer(servers)
    started = time.monotonic()
    for n, readings in backlog_readings(count, devices, 1, start_ms):
        mqtt_topic = device_topic(n)
        record = {
            "key": mqtt_topic.split("/", 1)[1].encode(),
            "value": encode_payload(readings),
            "headers": [("topic", mqtt_topic.encode())],
        }
        while True:
            try:
                producer.produce(topic, **record)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    if producer.flush(120):
        raise BenchError("Kafka producer: records left unsent after 120 s")
    return time.monotonic() - started


def consume_bare(*, servers, topic, group, expected, timeout):
    """A bare confluent-kafka consumer reading the topic from the start; counts records, nothing else."""
    from confluent_kafka import Consumer

    consumer = Consumer(
        {"bootstrap.servers": servers, "group.id": group, "auto.offset.reset": "earliest", "enable.auto.commit": False}
    )
    consumer.subscribe([topic])
    seen = FirstLast(expected)
    cpu = time.process_time()
    deadline = time.monotonic() + timeout
    try:
        while not seen.done.is_set():
            if time.monotonic() > deadline:
                raise BenchError(f"bare Kafka consumer: {seen.count:,} of {expected:,} records after {timeout:.0f} s")
            records = [r for r in consumer.consume(num_messages=1000, timeout=0.5) if not r.error()]
            if records:
                seen.tick(len(records))
        return {**seen.result(), "cpu": time.process_time() - cpu}
    finally:
        consumer.close()


# --------------------------------------------------------------------------------------------
# Draining into PostgreSQL


@dataclass
class Drain:
    """Rows stored between the first and the last observation of the readings table."""

    rows: int
    seconds: float

    @property
    def rate(self):
        return ratio(self.rows, self.seconds)


SAMPLE_DEVICES = 4
SAMPLE_ROWS = "SELECT count(*) FROM telemetry_reading WHERE device_id = ANY(%s) AND metric_id = %s"


class StoredRows:
    """How much of a round-robin backlog (`messages` of `per_message` temperature readings over
    sim-00001 …, from device 1 on) is stored: estimated from the rows of its first few devices, a
    range of the (device, metric, time) key, while it drains; counting the whole table at every poll
    would load the machine being measured. `exact()` counts it."""

    def __init__(self, conn, *, messages, devices, per_message=1):
        self.conn = conn
        sampled = min(SAMPLE_DEVICES, devices, messages)
        self.sample = [demo_device_pks(conn, sampled), metric_pk(conn, "temperature")]
        self.rows = messages * per_message
        # Device n of the round robin gets messages (n − 1), (n − 1 + devices), …
        self.sample_rows = per_message * sum((messages - n) // devices + 1 for n in range(1, sampled + 1))

    def estimate(self):
        """The rows stored, scaled from the sample; exactly `rows` once the sample is complete."""
        (stored,) = self.conn.execute(SAMPLE_ROWS, self.sample).fetchone()
        return self.rows if stored >= self.sample_rows else stored * self.rows // self.sample_rows

    def exact(self):
        """The backlog's rows: its metric's (a calculated metric's rows are not part of it)."""
        return self.conn.execute("SELECT count(*) FROM telemetry_reading WHERE metric_id = %s", [self.sample[1]]).fetchone()[0]


def wait_for_rows(stored, *, timeout, write, label, measure=True, interval=0.1, show_every=2.0):
    """Poll until the table holds the `stored.rows` rows of a backlog; returns the Drain (None if not `measure`).

    The estimate tracks progress; once it says complete, exact counts confirm. The rate counts
    from the first rows seen, so process start-up is not part of it.
    """
    expected = stored.rows
    started = shown = time.monotonic()
    first_at, first_rows, confirming = None, 0, False
    while True:
        rows = stored.exact() if confirming else stored.estimate()
        now = time.monotonic()
        if rows and first_at is None:
            first_at, first_rows = now, rows
        if rows >= expected:
            if confirming:
                if not measure:
                    return None
                if now - first_at < 5 * interval:
                    raise BenchError(f"{label}: {rows:,} rows arrived within one poll: too few to measure a rate")
                return Drain(rows=rows - first_rows, seconds=now - first_at)
            confirming = True
            continue
        if now - started > timeout:
            raise BenchError(f"{label}: {rows:,} of {expected:,} rows after {timeout:.0f} s")
        if now - shown >= show_every:
            rate = f" ({(rows - first_rows) / (now - first_at):,.0f} rows/s)" if first_at and now > first_at else ""
            write(f"    {label}: {rows:,}/{expected:,} rows{rate}")
            shown = now
        time.sleep(interval)


# --------------------------------------------------------------------------------------------
# Ingest processes and profilers


def process_cpu_seconds(pid):
    """User + system CPU seconds of a process (all threads)."""
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def process_memory_mb(pid):
    """{"rss": resident, "peak": peak resident} of a process in MB. psutil has no peak resident
    size on Linux, so that one is VmHWM of /proc/<pid>/status."""
    peak = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("VmHWM:"))
    return {"rss": psutil.Process(pid).memory_info().rss / 2**20, "peak": int(peak.split()[1]) / 1024}


class Profiler:
    """cProfile (ingest runs under `python -m cProfile`) or py-spy (attached by pid, all threads)."""

    def __init__(self, kind, directory, py_spy="py-spy"):
        self.kind = kind
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.py_spy = shutil.which(py_spy) or py_spy

    def python_command(self, label):
        if self.kind == "cprofile":
            return [sys.executable, "-m", "cProfile", "-o", str(self.directory / f"{label}.prof")]
        return [sys.executable]

    def attach(self, pid, label):
        if self.kind != "py-spy":
            return None
        output = self.directory / f"{label}.collapsed"
        log = open(self.directory / f"{label}.py-spy.log", "wb")
        return subprocess.Popen(
            [self.py_spy, "record", "--pid", str(pid), "--rate", "100", "--format", "raw", "--output", str(output)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def summarise(self, label, top=30):
        """Write <label>.txt with the dominant functions; returns its path (None if there is no profile)."""
        source = self.directory / (f"{label}.prof" if self.kind == "cprofile" else f"{label}.collapsed")
        if not source.exists():
            return None
        text = cprofile_summary(source, top) if self.kind == "cprofile" else collapsed_summary(source, top)
        target = self.directory / f"{label}.txt"
        target.write_text(text)
        return target


def cprofile_summary(path, top):
    out = io.StringIO()
    stats = pstats.Stats(str(path), stream=out).strip_dirs()
    for order in ("tottime", "cumulative"):
        out.write(f"==== main thread, top {top} by {order} ====\n")
        stats.sort_stats(order).print_stats(top)
    return out.getvalue()


FRAME_LINE = re.compile(r":\d+\)$")


def collapsed_summary(path, top):
    """py-spy raw output (stack;stack count) → share of samples per function: own (leaf) and inclusive."""
    own, inclusive, total = Counter(), Counter(), 0
    for line in Path(path).read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [FRAME_LINE.sub(")", frame) for frame in stack.split(";")]
        total += int(count)
        own[frames[-1]] += int(count)
        for frame in set(frames):
            inclusive[frame] += int(count)
    lines = [f"{total} samples (all threads, 100 Hz)"]
    for title, counter in (("own time", own), ("inclusive time", inclusive)):
        lines.append(f"==== top {top} by {title} ====")
        lines += [f"{100 * n / max(total, 1):6.1f}%  {frame}" for frame, n in counter.most_common(top)]
    return "\n".join(lines) + "\n"


# What an ingest prints once it is running (MQTT: subscribed; Kafka: about to join its group).
READY_TEXT = {"mqtt": "subscribed", "kafka": "ingest: Kafka"}


class IngestProcess:
    """One `manage.py ingest` subprocess with its own log; optionally profiled; always stopped."""

    def __init__(self, *, label, args, env, log_dir, profiler=None):
        self.label = label
        self.source = args[args.index("--source") + 1] if "--source" in args else "mqtt"
        self.profiler = profiler
        self.log_path = Path(log_dir) / f"{label}.log"
        python = profiler.python_command(label) if profiler else [sys.executable]
        self.log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            [*python, "manage.py", "ingest", *args], cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT
        )
        self.spy = None
        self.cpu_at_ready = 0.0

    @property
    def pid(self):
        return self.process.pid

    def wait_for_output(self, text, timeout=60):
        """Wait until the process has printed `text`; CPU is counted from then on; py-spy attaches if asked."""

        def printed():
            if self.process.poll() is not None:
                raise BenchError(f"{self.label} exited with {self.process.returncode}:\n{log_tail(self.log_path)}")
            return text in self.log_path.read_text(errors="replace")

        wait_until(printed, timeout=timeout, what=f"{text!r} from {self.label}", interval=0.1)
        self.cpu_at_ready = process_cpu_seconds(self.pid)
        if self.profiler and self.spy is None:
            self.spy = self.profiler.attach(self.pid, self.label)

    def wait_ready(self, timeout=60):
        self.wait_for_output(READY_TEXT[self.source], timeout)

    def memory(self):
        return process_memory_mb(self.pid)

    def cpu_since_ready(self):
        """CPU seconds used since the process said it was ready (start-up excluded)."""
        return process_cpu_seconds(self.pid) - self.cpu_at_ready

    def stop(self):
        if self.spy is not None:
            stop_process(self.spy, timeout=30, sig=signal.SIGINT)
        code = stop_process(self.process, timeout=30)
        self.log.close()
        if self.profiler:
            self.profiler.summarise(self.label)
        return code

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


# --------------------------------------------------------------------------------------------
# Latency probes


def percentile(sorted_samples, p):
    """Nearest-rank percentile of an already sorted list (None if empty)."""
    if not sorted_samples:
        return None
    rank = max(1, math.ceil(p / 100 * len(sorted_samples)))
    return sorted_samples[rank - 1]


def cpu_times():
    """(all, steal) CPU seconds of the machine so far."""
    times = psutil.cpu_times()
    # guest time is already counted in user time (proc(5))
    return sum(times) - times.guest - times.guest_nice, times.steal


CPU_SEEN = [(0, 0)]  # (all, steal) at the previous machine_load(): the first call reports since boot


def machine_load():
    """The 1, 5 and 15 minute load averages as `uptime` prints them, and the share of CPU time the
    hypervisor gave to other machines (steal) since the previous call: on a virtual machine with
    busy neighbours every figure of a benchmark moves with it."""
    (total, steal), (total_before, steal_before) = cpu_times(), CPU_SEEN[0]
    CPU_SEEN[0] = (total, steal)
    share = (steal - steal_before) / (total - total_before) if total > total_before else 0.0
    return "load average {:.2f}, {:.2f}, {:.2f}; CPU steal {:.0%}".format(*os.getloadavg(), share)


def latency_stats(samples):
    ordered = sorted(samples)
    return {"n": len(ordered), **{f"p{p}": percentile(ordered, p) for p in (50, 95, 99)}, "max": ordered[-1] if ordered else None}


NEWER_READINGS = """
SELECT s.device, r.time
FROM unnest(%s::bigint[], %s::timestamptz[]) AS s(device, after)
CROSS JOIN LATERAL (
    SELECT time FROM telemetry_reading WHERE device_id = s.device AND metric_id = %s AND time > s.after
    ORDER BY time LIMIT 100000
) r
"""  # the LIMIT keeps the subquery a per-device range scan of the key; flattened, it can become a hash join over whole partitions


class StoredLatencyProbe(threading.Thread):
    """Every `interval` s selects the readings of the sampled devices newer than the newest seen of
    each (ranges of the (device, metric, time) key) and records now − time (ms).

    Measures publish → visible in PostgreSQL (after commit), plus up to `interval` of polling delay.
    Exact for one ingest process, which stores each device's readings in order."""

    def __init__(self, url, *, device_pks, metric, interval=0.01):
        super().__init__(daemon=True, name="stored-latency")
        self.url = url
        self.device_pks = device_pks
        self.metric = metric
        self.interval = interval
        self.samples = []
        self.stopped = threading.Event()
        self.error = None

    def run(self):
        try:
            with psycopg.connect(self.url, autocommit=True) as conn:
                # One plan for every poll: planning the lateral join over ~30 daily partitions took
                # 3–4 ms, which 100 polls a second turned into half a core taken from the hub measured.
                conn.execute("SET plan_cache_mode = force_generic_plan")
                newest = dict.fromkeys(self.device_pks, datetime.fromtimestamp(0, tz=UTC))
                while not self.stopped.is_set():
                    rows = conn.execute(
                        NEWER_READINGS, [list(newest), list(newest.values()), self.metric], prepare=True
                    ).fetchall()
                    now = time.time()
                    for device, at in rows:
                        self.samples.append((now - at.timestamp()) * 1000)
                        newest[device] = max(newest[device], at)
                    self.stopped.wait(self.interval)
        except Exception as e:  # reported by stop()
            self.error = e

    def stop(self):
        self.stopped.set()
        self.join(10)
        if self.error:
            raise BenchError(f"stored-latency probe: {self.error}")
        return self.samples


class LiveGroupProbe(threading.Thread):
    """A channel-layer client in the group `live` of a bench namespace; subclasses say what they
    keep of each message in `on_message(message, now_ms)`."""

    name_of_probe = "live probe"

    def __init__(self, namespace):
        super().__init__(daemon=True, name=self.name_of_probe)
        self.namespace = namespace
        self.ready = threading.Event()
        self.stopped = threading.Event()
        self.error = None

    def layer(self):
        from channels_redis.core import RedisChannelLayer
        from django.conf import settings

        config = dict(settings.CHANNEL_LAYERS["default"].get("CONFIG", {}))
        if "hosts" not in config:
            raise BenchError(f"the {self.name_of_probe} needs REDIS_URL (channels-redis)")
        return RedisChannelLayer(**{**config, "prefix": f"{self.namespace}:asgi"})

    def run(self):
        try:
            asyncio.run(self.listen())
        except Exception as e:  # reported by stop()
            self.error = e
            self.ready.set()

    async def listen(self):
        from apps.live.broadcast import LIVE_GROUP

        layer = self.layer()
        channel = await layer.new_channel()
        await layer.group_add(LIVE_GROUP, channel)
        self.ready.set()
        try:
            while not self.stopped.is_set():
                try:
                    message = await asyncio.wait_for(layer.receive(channel), 0.5)
                except TimeoutError:
                    continue
                self.on_message(message, time.time() * 1000)
        finally:
            await layer.group_discard(LIVE_GROUP, channel)
            await layer.close_pools()

    def on_message(self, message, now_ms):
        """What to keep of one message of the group (nothing, here)."""

    def __enter__(self):
        self.start()
        self.ready.wait(15)
        if self.error or not self.ready.is_set():
            self.stop()
            raise BenchError(f"{self.name_of_probe} did not join the group: {self.error}")
        return self

    def __exit__(self, *exc):
        self.stop()

    def stop(self):
        self.stopped.set()
        self.join(10)
        if self.error:
            raise BenchError(f"{self.name_of_probe}: {self.error}")


class LiveLatencyProbe(LiveGroupProbe):
    """now − ts (ms) of every pushed reading: publish → channel layer (what daphne forwards to every
    dashboard WebSocket), including the coalescing interval IOTHUB_LIVE_PUSH_INTERVAL."""

    name_of_probe = "live-latency probe"

    def __init__(self, namespace):
        super().__init__(namespace)
        self.samples = []

    def on_message(self, message, now_ms):
        if message.get("type") == "live.readings":
            self.samples.extend(now_ms - item["ts"] for item in message["items"])

    def take(self):
        """The samples so far; starts a new list."""
        samples, self.samples = self.samples, []
        return samples


# --------------------------------------------------------------------------------------------
# One benchmark run: names, environment, processes, clean-up


@dataclass
class BenchRun:
    """Names and places of one run; everything it creates in shared services is named after run_id."""

    database: BenchDatabase
    mqtt_url: str
    kafka_servers: str
    redis_url: str
    log_dir: Path
    timeout: float
    write: object
    profiler: Profiler | None = None
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    @property
    def namespace(self):
        return f"bench-{self.run_id}"

    def name(self, label):
        """A run-unique name for a client id, group or topic."""
        return f"bench-{self.run_id}-{label}"

    def env(self, database=None, **overrides):
        """Environment of hub subprocesses: the bench database and namespace, run-unique groups and topics."""
        return {
            **os.environ,
            "DATABASE_URL": (database or self.database).url,
            "IOTHUB_NAMESPACE": self.namespace,
            "MQTT_URL": self.mqtt_url,
            "IOTHUB_MQTT_SHARED_GROUP": self.name("mqtt"),
            "IOTHUB_MQTT_SESSION_EXPIRY": str(SESSION_EXPIRY),
            "IOTHUB_KAFKA_TOPIC": self.name("readings"),
            "IOTHUB_KAFKA_DEADLETTER_TOPIC": self.name("deadletter"),
            "IOTHUB_KAFKA_GROUP": self.name("ingest"),
            "PYTHONUNBUFFERED": "1",
            **overrides,
        }

    def ingest(self, label, *args, database=None, **env):
        """Start `manage.py ingest <args>` (stop it with `with`)."""
        return IngestProcess(label=label, args=args, env=self.env(database, **env), log_dir=self.log_dir, profiler=self.profiler)

    def mqtt_ingest(self, label, *, group, database=None):
        """An MQTT ingest in shared group `group` whose client id is the run name of `label`."""
        return self.ingest(
            label, "--source", "mqtt", "--client-id", self.name(label), database=database, IOTHUB_MQTT_SHARED_GROUP=group
        )

    def clear_redis(self):
        """Delete this run's cache and channel-layer keys and its Celery queue (no worker consumes it)."""
        import redis

        client = redis.Redis.from_url(self.redis_url)
        keys = [self.namespace, f"_kombu.binding.{self.namespace}", *client.scan_iter(f"{self.namespace}:*", count=1000)]
        for start in range(0, len(keys), 1000):
            client.delete(*keys[start : start + 1000])


# --------------------------------------------------------------------------------------------
# Reporting


@dataclass
class Figure:
    section: str
    name: str
    value: float
    unit: str
    target: tuple | None = None  # (">=" | "<=", limit)
    note: str = ""

    def verdict(self):
        if self.target is None or self.value is None:
            return ""
        op, limit = self.target
        met = self.value >= limit if op == ">=" else self.value <= limit
        off = (self.value / limit - 1) * 100
        return f"met ({off:+.0f}%)" if met else f"NOT met ({off:+.0f}%)"


def format_value(value, unit):
    if value is None:
        return "n/a"
    if unit in ("ms", "MB", "s", "µs"):
        return f"{value:,.1f} {unit}"
    if unit == "×":
        return f"{value:.2f}×"
    return f"{value:,.0f} {unit}"


class Summary:
    """Figures collected while the benchmarks run, printed as one table at the end."""

    def __init__(self):
        self.figures = []

    def add(self, section, name, value, unit, target=None, note=""):
        self.figures.append(Figure(section, name, value, unit, target, note))

    def table(self):
        header = ("benchmark", "figure", "value", "target", "verdict")
        rows = [
            (
                f.section,
                f.name + (f" ({f.note})" if f.note else ""),
                format_value(f.value, f.unit),
                f"{f.target[0]} {format_value(f.target[1], f.unit)}" if f.target else "",
                f.verdict(),
            )
            for f in self.figures
        ]
        widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
        line = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
        return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def machine_description(database_url_, redis_url, mqtt_binary="/usr/sbin/mosquitto"):
    """Lines describing the machine and the versions of everything measured."""
    import confluent_kafka
    import django
    import paho.mqtt
    import redis

    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "?")
    with psycopg.connect(database_url_, autocommit=True) as conn:
        postgres = conn.execute("SHOW server_version").fetchone()[0]
    redis_version = redis.Redis.from_url(redis_url).info("server")["redis_version"] if redis_url else "n/a"
    mosquitto = subprocess.run([mqtt_binary, "-h"], capture_output=True, text=True).stdout.splitlines()[:1]
    kafka_jars = sorted(p.name for p in (ROOT / "var" / "kafka" / "libs").glob("kafka-server-*.jar"))
    free = subprocess.run(["free", "-h"], capture_output=True, text=True).stdout.rstrip()
    return [
        f"cpu: {len(os.sched_getaffinity(0))} cores usable (nproc), {os.cpu_count()} online, {cpu}",
        *free.splitlines(),
        f"kernel {platform.release()}; Python {platform.python_version()}; Django {django.__version__}; "
        f"psycopg {psycopg.__version__} (libpq {psycopg.pq.version()}); paho-mqtt {paho.mqtt.__version__}; "
        f"confluent-kafka {confluent_kafka.version()} (librdkafka {confluent_kafka.libversion()[0]})",
        f"PostgreSQL {postgres}; Redis {redis_version}; {(mosquitto or ['mosquitto ?'])[0]}; "
        f"Kafka {kafka_jars[0].removeprefix('kafka-server-').removesuffix('.jar') if kafka_jars else '?'}",
    ]
