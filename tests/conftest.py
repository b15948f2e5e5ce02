"""Fixtures for tests on the real services started by scripts/services.sh (see scripts/test.sh)."""

import os
import re
import uuid
from datetime import datetime, timedelta
from urllib.parse import urlsplit, urlunsplit
from zoneinfo import ZoneInfo

import orjson
import paho.mqtt.client as mqtt
import pytest
import redis
from django.conf import settings

from .support import HubProcesses, api_client, free_port

REQUIRED = ["DATABASE_URL", "TIMESCALEDB_URL", "REDIS_URL", "MQTT_URL", "KAFKA_BOOTSTRAP_SERVERS"]
# Modules whose tests need no service (pure functions); every other module is marked `services`,
# so `pytest -m "not services"` runs these in seconds on a machine with nothing started.
SERVICE_FREE_MODULES = {"test_payloads", "test_payload_properties", "test_units", "test_settings_guard", "test_expressions"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.module.__name__.rsplit(".", 1)[-1] not in SERVICE_FREE_MODULES:
            item.add_marker(pytest.mark.services)


def pytest_collection_finish(session):
    """After -m and -k have chosen: tests on the services need them configured."""
    if not any("services" in item.keywords for item in session.items):
        return
    missing = [name for name in REQUIRED if not os.environ.get(name)]
    if missing or not os.environ["DATABASE_URL"].startswith("postgres"):
        pytest.exit(
            f"These tests run on real services; {', '.join(missing) or 'DATABASE_URL (PostgreSQL)'} not set. "
            'Run scripts/test.sh, or: eval "$(scripts/services.sh env)"; or only the tests that need none: -m "not services"',
            returncode=2,
        )


@pytest.fixture(scope="session")
def django_db_modify_db_settings():
    """A test database per run, so two runs on one machine (a developer's and CI's) never collide."""
    settings.DATABASES["default"].setdefault("TEST", {})["NAME"] = f"test_iothub_{os.getpid()}"


@pytest.fixture(scope="session", autouse=True)
def close_stray_connections(request):
    """Threads of in-process WebSocket tests keep database connections; end them before the test database is dropped."""
    if not any("services" in item.keywords for item in request.session.items):
        yield
        return
    request.getfixturevalue("django_db_setup")
    django_db_blocker = request.getfixturevalue("django_db_blocker")
    yield
    from django.db import connection

    with django_db_blocker.unblock(), connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )


@pytest.fixture(autouse=True)
def clean_cache(request):
    """Empty this run's cache namespace (latest values, hold timers) before each test on the services."""
    if "services" not in request.keywords:
        yield
        return
    client = redis.Redis.from_url(settings.REDIS_URL)
    keys = list(client.scan_iter(f"{settings.NAMESPACE}:*", count=1000))
    if keys:
        client.delete(*keys)
    yield


@pytest.fixture
def redis_client():
    return redis.Redis.from_url(settings.REDIS_URL)


@pytest.fixture
def unique():
    return uuid.uuid4().hex[:10]


@pytest.fixture
def hub_env(transactional_db, unique):
    """Environment for hub subprocesses: the test database, private topics/groups for this test."""
    db = settings.DATABASES["default"]
    url = urlsplit(os.environ["DATABASE_URL"])
    env = dict(os.environ)
    env.update(
        DATABASE_URL=urlunsplit(url._replace(path="/" + db["NAME"])),
        IOTHUB_MQTT_SHARED_GROUP=f"test-{unique}",
        IOTHUB_MQTT_SESSION_EXPIRY="120",
        IOTHUB_KAFKA_TOPIC=f"test-readings-{unique}",
        IOTHUB_KAFKA_DEADLETTER_TOPIC=f"test-deadletter-{unique}",
        IOTHUB_KAFKA_GROUP=f"test-ingest-{unique}",
        IOTHUB_DEVICE_CACHE_REFRESH="0.5",
        IOTHUB_LIVE_PUSH_INTERVAL="0.1",
        PYTHONUNBUFFERED="1",
    )
    return env


@pytest.fixture
def hub(hub_env, request):
    procs = HubProcesses(hub_env, request.node.name[:60])
    yield procs
    procs.stop_all()


@pytest.fixture
def publisher():
    """A paho client publishing QoS 1 to the services' Mosquitto; publish() waits for the PUBACK."""
    url = urlsplit(settings.MQTT_URL)
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-pub-{uuid.uuid4().hex[:8]}", protocol=mqtt.MQTTv5)
    client.connect(url.hostname, url.port)
    client.loop_start()

    def publish(topic, payload):
        body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
        info = client.publish(topic, body, qos=1)
        info.wait_for_publish(10)
        assert info.is_published()

    yield publish
    client.disconnect()
    client.loop_stop()


@pytest.fixture
def plant(transactional_db):
    """A small device master: one location, the env-sensor type, devices dev-1/dev-2 and a temperature threshold."""
    from apps.alerts.models import Threshold
    from apps.devices.models import Device, DeviceType, Location, Metric

    temperature = Metric.objects.create(key="temperature", unit="°C")
    humidity = Metric.objects.create(key="humidity", unit="%")
    device_type = DeviceType.objects.create(name="env", primary_metric=temperature, expected_interval=10)
    device_type.metrics.add(temperature, humidity)
    location = Location.objects.create(loc_id="N-ASM-1-LA", factory="North", building="Assembly", floor="1", area="Line A")
    devices = [Device.objects.create(device_id=f"dev-{n}", device_type=device_type, location=location) for n in (1, 2)]
    threshold = Threshold.objects.create(metric=temperature, warning_max=30, critical_max=35, hysteresis=1)
    return {
        "temperature": temperature,
        "humidity": humidity,
        "type": device_type,
        "location": location,
        "devices": devices,
        "threshold": threshold,
    }


@pytest.fixture
def smtp_sink():
    """A real SMTP server (aiosmtpd) on loopback; yields (port, list of received messages)."""
    from email import message_from_bytes

    from aiosmtpd.controller import Controller

    received = []

    class Handler:
        async def handle_DATA(self, server, session, envelope):
            received.append((envelope.rcpt_tos, message_from_bytes(envelope.content)))
            return "250 OK"

    port = free_port()
    controller = Controller(Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    yield port, received
    controller.stop()


@pytest.fixture
def http_sink(httpserver):
    """A real HTTP server on loopback (pytest-httpserver) recording JSON POSTs; `statuses` lists the
    codes to answer, then 200."""
    from werkzeug import Response

    received = []
    statuses = []

    def record(request):
        received.append((request.path, orjson.loads(request.get_data())))
        return Response(status=statuses.pop(0) if statuses else 200)

    httpserver.expect_request(re.compile(".*"), method="POST").respond_with_handler(record)
    yield httpserver.url_for("").rstrip("/"), received, statuses


@pytest.fixture
def eager_celery():
    """Run tasks inline in this process (for tests of task logic, not of the worker)."""
    from iothub.celery import app

    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = False


@pytest.fixture
def admin_api():
    return api_client("admin")


@pytest.fixture
def staff_api():
    return api_client("staff")


@pytest.fixture
def alarm_history(plant, settings):
    """One plant day (a Monday at least two weeks back, Berlin) of alarms: a flood with chatter on
    dev-1, three on dev-2, one in South. The days around it (two before, the week after) have no
    daylight-saving change, so every day of the figures has 24 hours."""
    from apps.alerts import services
    from apps.alerts.models import Alert, AlertEvent
    from apps.devices.models import Device, Location

    settings.TIME_ZONE = "Europe/Berlin"
    berlin = ZoneInfo("Europe/Berlin")
    dev1, dev2 = plant["devices"]
    dev3 = Device.objects.create(
        device_id="dev-3", device_type=plant["type"], location=Location.objects.create(loc_id="S-1", factory="South")
    )
    day = datetime.combine(datetime.now(berlin).date(), datetime.min.time(), tzinfo=berlin)
    day -= timedelta(days=day.weekday() + 14)
    while (day - timedelta(days=2)).utcoffset() != (day + timedelta(days=8)).utcoffset():
        day -= timedelta(days=7)

    def openings(device, times):
        alert = Alert.objects.create(
            device=device, metric=plant["temperature"], level="warning", state="resolved", opened_at=times[0]
        )
        for at in times:
            AlertEvent.objects.create(alert=alert, kind="opened", at=at, level="warning")
        return alert

    flood_start = day + timedelta(hours=10)
    openings(dev1, [flood_start + timedelta(seconds=s) for s in [0, 20, 40, *range(120, 480, 40)]])
    shelved = openings(dev2, [day + timedelta(hours=h) for h in (14, 15, 16)])
    AlertEvent.objects.create(alert=shelved, kind="shelved", at=day + timedelta(hours=16, minutes=5), level="warning")
    openings(dev3, [day + timedelta(hours=23, minutes=59)])
    AlertEvent.objects.create(
        alert=openings(dev3, [day - timedelta(hours=1)]), kind="suppressed", at=day - timedelta(minutes=1), level="warning"
    )  # the day before
    suppressed = Alert.objects.create(device=dev1, metric=plant["humidity"], level="warning", state="suppressed", opened_at=day)
    AlertEvent.objects.create(alert=suppressed, kind="suppressed", at=day + timedelta(hours=3), level="warning")
    Alert.objects.create(device=dev2, metric=plant["humidity"], level="critical", opened_at=day - timedelta(days=2))  # stale
    Alert.objects.create(device=dev1, metric=None, level="offline", opened_at=day + timedelta(hours=12))  # active, not stale
    assert services.refresh_alarm_rollups() == [
        day.date() - timedelta(days=1),
        day.date(),
    ]  # beat's rollups of the days with events
    return day
