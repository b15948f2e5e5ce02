"""The whole MQTT path on real services: Mosquitto → ingest process → PostgreSQL, Redis,
a /ws/live/ WebSocket, and an alert from a real Celery worker."""

import asyncio

import orjson
from channels.testing import WebsocketCommunicator
from django.conf import settings

from apps.alerts.models import Alert, AlertEvent
from apps.telemetry.models import DeadLetter, Reading
from iothub.asgi import application

from .support import alerts_of, collect_ws, eventually, now_ms, session_cookie


def readings_of(messages, device):
    return [i for m in messages if m["type"] == "readings" for i in m["items"] if i["device"] == device]


def test_it_stores_caches_pushes_and_alerts_end_to_end(plant, hub, publisher, redis_client, unique):
    hub.ingest("--source", "mqtt", "--client-id", f"e2e-ingest-{unique}")
    hub.celery_worker()
    cookie = session_cookie()
    ts = now_ms()

    def publish_all():
        # Rejected input first: the ingest must keep going after it.
        publisher("sensors/dev-1", b"{broken json")
        publisher("sensors/ghost-9", {"temperature": 20})
        publisher("sensors/dev-1", {"ts": ts, "temperature": 36.5, "humidity": 40.0})
        publisher("sensors/dev-2", {"id": "dev-2", "ts": ts, "v": 21.0})

    messages = asyncio.run(
        collect_ws(
            cookie,
            "/ws/live/",
            publish_all,
            lambda ms: readings_of(ms, "dev-1") and readings_of(ms, "dev-2") and alerts_of(ms),
        )
    )

    # PostgreSQL: every valid reading, once.
    rows = eventually(
        lambda: list(
            Reading.objects.filter(device__device_id__in=["dev-1", "dev-2"])
            .order_by("device_id", "metric_id")
            .values_list("device__device_id", "metric__key", "value")
        ),
        message="readings",
    )
    assert sorted(rows) == [("dev-1", "humidity", 40.0), ("dev-1", "temperature", 36.5), ("dev-2", "temperature", 21.0)]

    # Redis: the latest value with its status, through the real Redis server.
    latest = orjson.loads(redis_client.hget(f"{settings.NAMESPACE}:latest", "dev-1"))["temperature"]
    assert (latest["value"], latest["status"], latest["ts"]) == (36.5, "critical", ts)

    # WebSocket: live values with status, and the alert.
    pushed = {i["metric"]: i for i in readings_of(messages, "dev-1")}
    assert pushed["temperature"]["status"] == "critical" and pushed["temperature"]["value"] == 36.5
    assert pushed["humidity"]["status"] is None  # no humidity threshold in this plant
    # With the text and status class of the dashboard's cells, from the code that renders the page's.
    assert (pushed["temperature"]["text"], pushed["temperature"]["status_class"]) == ("36.5", "critical")
    assert pushed["humidity"]["status_class"] == "none"
    alert_msg = alerts_of(messages)[0]
    assert (alert_msg["device"], alert_msg["metric"], alert_msg["level"], alert_msg["state"]) == (
        "dev-1",
        "temperature",
        "critical",
        "open",
    )

    # The alert row, opened by the Celery worker.
    alert = Alert.objects.get(device__device_id="dev-1")
    assert (alert.level, alert.state, alert.first_value, alert.peak_value) == ("critical", "open", 36.5, 36.5)
    assert list(alert.events.values_list("kind", flat=True)) == [AlertEvent.Kind.OPENED]
    assert not Alert.objects.filter(device__device_id="dev-2").exists()

    # Dead letters with their reasons.
    reasons = eventually(lambda: sorted(DeadLetter.objects.values_list("reason", "topic")), message="dead letters")
    assert reasons == [("malformed_json", "sensors/dev-1"), ("unknown_device", "sensors/ghost-9")]


def test_it_refuses_anonymous_websockets(transactional_db):
    async def connect():
        communicator = WebsocketCommunicator(application, "/ws/live/", headers=[(b"origin", b"http://127.0.0.1")])
        connected, code = await communicator.connect(timeout=5)
        await communicator.disconnect()
        return connected, code

    connected, code = asyncio.run(connect())
    assert not connected
    assert code == 4401


def test_it_refuses_foreign_origins(transactional_db):
    cookie = session_cookie()

    async def connect():
        communicator = WebsocketCommunicator(
            application, "/ws/live/", headers=[(b"origin", b"http://evil.example"), (b"cookie", f"sessionid={cookie}".encode())]
        )
        connected, _ = await communicator.connect(timeout=5)
        await communicator.disconnect()
        return connected

    assert not asyncio.run(connect())
