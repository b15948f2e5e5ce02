"""The benchmarks' own load generator on the real Mosquitto: what it claims to have published arrived."""

import os
from urllib.parse import urlsplit, urlunsplit

import orjson
import psycopg
import pytest
from django.conf import settings

from apps.bench.benchmarks import (
    BenchError,
    RatePublisher,
    end_session,
    mqtt_string,
    prepare_session,
    publish_backlog,
    without_housekeeping,
)

from .support import Consumer, eventually


def test_it_publishes_every_message_in_order_within_its_window(unique):
    topic = f"test/rate/{unique}"
    consumer = Consumer(f"test-rate-{unique}", topic)
    publisher = RatePublisher(settings.MQTT_URL, f"test-rate-pub-{unique}", window=100, timeout=10)
    try:
        payloads = [orjson.dumps({"n": n, "pad": "x" * (n % 300)}) for n in range(1000)]  # some over 127 bytes
        for first in range(0, 1000, 250):  # more than a window per call
            publisher.publish([(mqtt_string(topic), payload) for payload in payloads[first : first + 250]])
            assert publisher.published - publisher.acknowledged <= 100
        publisher.read_acks(until=0)
        assert publisher.acknowledged == 1000
        eventually(lambda: len(consumer.received) == 1000, timeout=10, message="1,000 messages")
        assert [payload for _, payload in consumer.received] == payloads
        consumer.client.ack_all([mid for mid, _ in consumer.received])
        consumer.settle()
    finally:
        publisher.close()
        consumer.close()


def test_a_backlog_waits_in_its_session_until_the_session_is_ended(unique):
    client_id, topic = f"test-backlog-{unique}", f"$share/test-{unique}/sensors/#"

    def publish(count):
        result = publish_backlog(
            url=settings.MQTT_URL,
            client_id=f"test-backlog-pub-{unique}",
            count=count,
            devices=7,
            per_message=1,
            start_ms=10**12,
            timeout=10,
        )
        assert result["published"] == count

    prepare_session(settings.MQTT_URL, client_id, topic)
    publish(300)
    consumer = Consumer(client_id, topic)  # takes the session over, with what it queued
    try:
        eventually(lambda: len(consumer.received) == 300, timeout=10, message="the backlog")
        assert orjson.loads(consumer.received[-1][1]) == {"ts": 10**12 + 299, "temperature": 20.0 + 299 % 100 / 10}
        consumer.client.ack_all([mid for mid, _ in consumer.received])
        consumer.settle()
    finally:
        consumer.close()
    end_session(settings.MQTT_URL, client_id)
    publish(20)
    consumer = Consumer(client_id, topic)  # a new session: nothing was queued for it
    try:
        consumer.settle()
        assert consumer.received == []
    finally:
        consumer.close()


def test_it_says_when_the_broker_refuses_the_connection(unique):
    url = urlsplit(os.environ["MQTT_SECURE_URL"])
    wrong = urlunsplit(url._replace(netloc=f"nobody-{unique}:wrong@{url.hostname}:{url.port}"))
    with pytest.raises(BenchError, match="CONNACK refused"):
        RatePublisher(wrong, f"test-refused-{unique}", timeout=10)


def test_every_benchmark_command_loads_with_this_projects_apps():
    """A benchmark command that no longer imports (a module moved or renamed since it was written)
    fails here, not when someone runs it."""
    from django.core.management import get_commands, load_command_class

    benchmarks = sorted(name for name, app in get_commands().items() if app == "apps.bench")
    assert {"bench_ingest", "bench_alerts", "bench_alarm_kpis", "bench_import", "gallery"} <= set(benchmarks)
    for name in benchmarks:
        assert load_command_class("apps.bench", name).help, name


def test_autovacuum_is_off_on_the_readings_partitions_for_the_block_only(hub_env):
    options = """
        SELECT count(*), count(*) FILTER (WHERE 'autovacuum_enabled=off' = ANY(c.reloptions))
        FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'telemetry_reading'::regclass
    """
    with psycopg.connect(hub_env["DATABASE_URL"], autocommit=True) as conn:
        with without_housekeeping(conn) as checkpoint:
            checkpoint()
            partitions, off = conn.execute(options).fetchone()
            assert partitions > 0 and off == partitions
        assert conn.execute(options).fetchone() == (partitions, 0)
