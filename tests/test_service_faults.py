"""Fault suite: each real service restarted, or kept down for several seconds, during a stream of
known readings.

The pipeline must ride it out by itself: no reading lost, none doubled, and every long-running
process still alive and serving afterwards. A threshold crossing sent during the outage opens its
alert in a real worker; a reading sent after it is stored, cached as the latest value and pushed
live; the ingest publishes its pipeline summary again; the web answers and is ready again. Each
test prints its figures (time the service was away, time to recover, lost, duplicated)."""

import asyncio
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import orjson
import paho.mqtt.client as mqtt
import pytest
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import connection
from django.db.utils import Error as DatabaseError

from apps.alerts.models import Alert
from apps.live.broadcast import LIVE_GROUP
from apps.telemetry.latest import get_latest
from apps.telemetry.metrics import pipeline_summaries
from apps.telemetry.models import Reading

from .support import ROOT, eventually, free_port, now_ms

STREAM = 2000
RATE = 400  # messages/s: the stream lasts 5 s and the service goes away in its first half
OUTAGES = {"restart": 0, "outage": 6}  # seconds the service stays down
# What /readyz reports failing at once while each service is down. Its database check waits for the
# connection pool instead (until PostgreSQL is back, or the pool's 10 s timeout); Kafka has none.
READINESS_CHECKS = {"redis": "redis", "mosquitto": "mqtt"}


class ResilientPublisher:
    """A paho client with its own reconnect and resend (QoS 1, persistent client session): what it
    publishes while the broker is away goes out after the reconnect."""

    def __init__(self):
        url = urlsplit(settings.MQTT_URL)
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=f"fault-pub-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv311,
            clean_session=False,
        )
        self.client.max_queued_messages_set(0)
        self.client.max_inflight_messages_set(100)
        self.client.reconnect_delay_set(0.2, 2)
        self.sent, self.acknowledged = set(), set()
        # Counted from PUBACKs: a message published while the broker is down is queued by paho and
        # sent after the reconnect, though its MessageInfo keeps the "not connected" code.
        self.client.on_publish = lambda client, userdata, mid, reason_code, properties: self.acknowledged.add(mid)
        self.client.connect(url.hostname, url.port)
        self.client.loop_start()

    def publish(self, device, payload):
        self.sent.add(self.client.publish(f"sensors/{device}", orjson.dumps(payload), qos=1).mid)

    def all_acknowledged(self):
        return self.sent <= self.acknowledged

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def resilient_publisher():
    """Makes ResilientPublishers; closes them after the test."""
    made = []

    def make():
        made.append(ResilientPublisher())
        return made[-1]

    yield make
    for publisher in made:
        publisher.close()


def stream_in_background(publisher, count=STREAM, rate=RATE):
    """Publish `count` known readings of dev-1 at `rate` in a thread that ends once the broker has
    acknowledged all of them (or after two minutes)."""
    start = now_ms() - count

    def run():
        began = time.monotonic()
        for i in range(count):
            publisher.publish("dev-1", {"ts": start + i, "temperature": i / 10})
            ahead = i / rate - (time.monotonic() - began)
            if ahead > 0:
                time.sleep(ahead)
        deadline = time.monotonic() + 120
        while not publisher.all_acknowledged() and time.monotonic() < deadline:
            time.sleep(0.1)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def stored():
    """Count the stream's readings, riding out the test's own connection breaking when PostgreSQL restarts."""
    try:
        return Reading.objects.filter(device__device_id="dev-1").count()
    except DatabaseError:
        connection.close()
        return -1


def service_address(service):
    if service == "kafka":
        host, port = settings.KAFKA_BOOTSTRAP_SERVERS.split(",")[0].rsplit(":", 1)
        return host, int(port)
    url = urlsplit({"postgres": os.environ["DATABASE_URL"], "redis": settings.REDIS_URL, "mosquitto": settings.MQTT_URL}[service])
    return url.hostname, url.port


def answers(address):
    try:
        socket.create_connection(address, timeout=1).close()
        return True
    except OSError:
        return False


@contextmanager
def outage(service, seconds_down):
    """`scripts/services.sh restart` in the background: the block runs once the service no longer
    answers (or once a quick restart is over already, if it was quicker than our polling). The
    service is back when the block is left, failed or not; the figure is the seconds it was away."""
    began = time.monotonic()
    restart = subprocess.Popen(
        ["scripts/services.sh", "restart", service, str(seconds_down)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    away = {}
    try:
        address = service_address(service)
        eventually(
            lambda: not answers(address) or restart.poll() is not None, timeout=120, interval=0.05, message=f"{service} down"
        )
        yield away
    finally:
        output, _ = restart.communicate(timeout=180)
        away["seconds"] = time.monotonic() - began
        connection.close()  # this test's own connection does not outlive a PostgreSQL restart
    assert restart.returncode == 0, output


def readyz_fails(web, check):
    status, body = get(f"{web}/readyz")
    return status == 503 and orjson.loads(body)["checks"][check].startswith("error")


def get(url):
    """(status, body) of a GET, error statuses included."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def live_push_of(send, device, metric, value, timeout=30):
    """Subscribe to the live group, `send()`, and wait until a push carries `value` of (device, metric)."""

    async def scenario():
        layer = get_channel_layer()
        channel = await layer.new_channel()
        await layer.group_add(LIVE_GROUP, channel)
        try:
            send()
            async with asyncio.timeout(timeout):
                while True:
                    message = await layer.receive(channel)
                    if any((i["device"], i["metric"], i["value"]) == (device, metric, value) for i in message.get("items", [])):
                        return True
        finally:
            await layer.group_discard(LIVE_GROUP, channel)

    return asyncio.run(scenario())


def published_since(name, since):
    return any(s["name"] == name and s["at"] > since for s in pipeline_summaries())


def scrape(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return response.read().decode()


def start_pipeline(hub, service, name, metrics_port, schedule):
    """The long-running processes that talk to `service`, with a worker and the web."""
    if service != "kafka":
        # One MQTT ingest process, as deployed by default: a plain subscription in a persistent session.
        # (Mosquitto 2.0 does not restore shared subscriptions after its restart: docs/deploy.md.)
        hub.env["IOTHUB_MQTT_SHARED_GROUP"] = ""
    if service in ("mosquitto", "kafka"):  # the bridge talks to both
        bridge = hub.start("bridge", "--client-id", f"{name}-bridge")
        hub.wait_for_output(bridge, "subscribed")
    source = "kafka" if service == "kafka" else "mqtt"
    hub.ingest("--source", source, "--client-id", name, "--metrics-port", str(metrics_port))
    hub.celery_worker()
    if service == "redis":  # beat talks to the broker only
        beat = hub.start(
            "-A", "iothub", "beat", "--schedule", str(schedule), "--loglevel", "INFO", program=[sys.executable, "-m", "celery"]
        )
        hub.wait_for_output(beat, "beat: Starting")
    return hub.web()


@pytest.mark.parametrize("seconds_down", OUTAGES.values(), ids=OUTAGES.keys())
@pytest.mark.parametrize("service", ["mosquitto", "redis", "postgres", "kafka"])
def test_it_survives_a_service_outage_without_loss_or_duplicates(
    plant,
    hub,
    unique,
    resilient_publisher,
    tmp_path,
    service,
    seconds_down,
    capsys,
):
    name, metrics_port = f"svc-ingest-{unique}", free_port()
    web = start_pipeline(hub, service, name, metrics_port, tmp_path / "beat-schedule")
    sender = stream_in_background(resilient_publisher())
    probe = resilient_publisher()
    time.sleep(STREAM / RATE / 3)
    with outage(service, seconds_down) as away:
        probe.publish("dev-2", {"ts": now_ms(), "temperature": 40.0})  # beyond the critical 35 °C
        if seconds_down and service in READINESS_CHECKS:
            check = READINESS_CHECKS[service]
            eventually(lambda: readyz_fails(web, check), timeout=5, message=f"/readyz reporting {check} away")
        assert get(f"{web}/healthz") == (200, b"ok")
    back_at, back_monotonic = time.time(), time.monotonic()

    sender.join(180)
    eventually(lambda: stored() >= STREAM, timeout=120, interval=0.2, message=f"{STREAM} readings")
    recovered_after = time.monotonic() - back_monotonic
    time.sleep(1)  # anything redelivered late would land now
    count = stored()
    distinct = len(set(Reading.objects.filter(device__device_id="dev-1").values_list("value", flat=True)))
    with capsys.disabled():
        print(
            f"\n  {service} away {away['seconds']:.1f} s (down for {seconds_down} s): all stored {recovered_after:.1f} s "
            f"after it; stored {count}/{STREAM}, lost {STREAM - distinct}, duplicated {count - distinct}"
        )
    assert (count, distinct) == (STREAM, STREAM)

    for proc, _ in hub.procs:
        assert proc.poll() is None, f"{proc.args[1:5]} exited:\n{Path(proc.log_path).read_text()[-4000:]}"
    eventually(
        lambda: Alert.objects.filter(device__device_id="dev-2", state=Alert.State.OPEN).exists(),
        timeout=60,
        message="the alert of the crossing sent during the outage, opened by the worker",
    )
    assert live_push_of(lambda: probe.publish("dev-2", {"ts": now_ms(), "humidity": 55.5}), "dev-2", "humidity", 55.5)
    eventually(
        lambda: Reading.objects.filter(device__device_id="dev-2", metric__key="humidity").exists(),
        message="a reading sent after the outage, stored",
    )
    eventually(
        lambda: get_latest(["dev-2"]).get("dev-2", {}).get("humidity", {}).get("value") == 55.5, message="its latest value"
    )
    eventually(lambda: published_since(name, back_at), message="a pipeline summary published after the outage")
    assert get(f"{web}/healthz") == (200, b"ok")
    eventually(lambda: get(f"{web}/readyz")[0] == 200, timeout=30, message="/readyz ready again")
    if seconds_down and service == "redis":  # what could not reach Redis was skipped and counted, none held
        metrics = scrape(metrics_port)
        assert 'iothub_best_effort_skipped_total{write="latest_values"} 0.0' not in metrics, metrics
        assert "iothub_ingest_alert_handoffs_held 0.0" in metrics
