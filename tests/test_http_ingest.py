"""HTTP ingest (POST /api/v1/ingest/) on real PostgreSQL and Redis: device tokens, the MQTT
payload forms and dead letters through the same pipeline, size limits, inactive devices,
throttling, the admin's token actions, and a real daphne."""

import asyncio
import hashlib
import socket
import sys
import urllib.error
import urllib.request
from datetime import UTC, datetime

import orjson
import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.contrib.auth import get_user_model
from django.urls import reverse
from rest_framework.test import APIClient

from apps.accounts.services import issue_api_token
from apps.devices import services
from apps.devices.models import Device
from apps.live.broadcast import LIVE_GROUP
from apps.telemetry import http_ingest
from apps.telemetry.models import DeadLetter, Reading

from .support import eventually, free_port, now_ms

URL = "/api/v1/ingest/"
LIMIT = 64 * 1024


@pytest.fixture(autouse=True)
def fresh_master_cache():
    """The view's device master is per process; each test has its own devices."""
    http_ingest.MASTER_CACHE.invalidate()
    yield


@pytest.fixture
def token(plant):
    return services.issue_ingest_token(device=plant["devices"][0])


def post(body, token=None, *, scheme="Device", client=None):
    client = client or APIClient()
    headers = {"HTTP_AUTHORIZATION": f"{scheme} {token}"} if token else {}
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    return client.generic("POST", URL, data, content_type="application/json", **headers)


def readings(device_id):
    return sorted(
        (key, value, t.timestamp())
        for key, value, t in Reading.objects.filter(device__device_id=device_id).values_list("metric__key", "value", "time")
    )


def dead_letters():
    return list(DeadLetter.objects.order_by("id").values_list("source", "topic", "reason"))


# --- storing ---------------------------------------------------------------------------------------


def test_a_valid_token_stores_readings_of_every_payload_form(plant, token):
    ts = now_ms()

    named = post({"ts": ts, "temperature": 23.5, "humidity": 41.0}, token)
    compact = post({"id": "dev-1", "ts": ts + 1000, "v": 24.0}, token)
    batch = post(
        [{"ts": ts + 2000, "temperature": 25.0}, {"ts": datetime.fromtimestamp((ts + 3000) / 1000, UTC).isoformat(), "v": 26.0}],
        token,
    )

    assert (named.status_code, named.json()) == (202, {"stored": 2, "readings": 2, "rejected": []})
    assert (compact.status_code, compact.json()["stored"]) == (202, 1)
    assert (batch.status_code, batch.json()["stored"]) == (202, 2)
    assert readings("dev-1") == [
        ("humidity", 41.0, ts / 1000),
        ("temperature", 23.5, ts / 1000),
        ("temperature", 24.0, ts / 1000 + 1),
        ("temperature", 25.0, ts / 1000 + 2),
        ("temperature", 26.0, ts / 1000 + 3),
    ]
    assert not DeadLetter.objects.exists()
    # Resent (a device retrying after a lost answer): accepted, stored once.
    again = post({"ts": ts, "temperature": 23.5, "humidity": 41.0}, token)
    assert (again.status_code, again.json()["stored"], again.json()["readings"]) == (202, 0, 2)
    assert Reading.objects.filter(device__device_id="dev-1").count() == 5


def test_a_missing_timestamp_is_the_receive_time(plant, token):
    before = now_ms() / 1000
    assert post({"temperature": 20.0}, token).status_code == 202
    [(_, _, t)] = readings("dev-1")
    assert before - 1 <= t <= now_ms() / 1000 + 1


def test_readings_reach_live_dashboards_coalesced(plant, token):
    """Like the ingest loop: pushed to the live group, at most every IOTHUB_LIVE_PUSH_INTERVAL; a
    reading left pending by a quiet moment still goes out (timer)."""

    async def scenario():
        layer = get_channel_layer()
        channel = await layer.new_channel()
        await layer.group_add(LIVE_GROUP, channel)
        try:
            for n in range(3):  # quicker than the interval: coalesced
                assert (await sync_to_async(post)({"temperature": 20.0 + n}, token)).status_code == 202
            newest = {}
            while newest.get("temperature", {}).get("value") != 22.0:
                message = await asyncio.wait_for(layer.receive(channel), 5)
                newest.update({i["metric"]: i for i in message["items"] if i["device"] == "dev-1"})
            return newest
        finally:
            await layer.group_discard(LIVE_GROUP, channel)

    newest = asyncio.run(scenario())
    assert newest["temperature"]["status"] == "normal"


# --- authentication --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        None,
        "Device",
        "Device not-a-token",
        "Device 0123456789ab.wrong-secret",
        "Device a b",
        "Bearer {token}",
        "Device {token}x",
    ],
)
def test_a_missing_or_wrong_token_is_401(plant, token, header):
    client = APIClient()
    if header:
        client.credentials(HTTP_AUTHORIZATION=header.format(token=token))
    response = client.generic("POST", URL, orjson.dumps({"temperature": 20.0}), content_type="application/json")
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Device")
    assert not Reading.objects.exists() and not DeadLetter.objects.exists()


def test_a_user_api_token_or_session_is_not_a_device_token(plant):
    admin = get_user_model().objects.create_superuser("ingest-admin", password="ingest-admin-pw-1")
    key = issue_api_token(user=admin, name="personal", can_write=True)[1]
    assert post({"temperature": 20.0}, key, scheme="Token").status_code == 401
    browser = APIClient(enforce_csrf_checks=True)
    browser.force_login(admin)
    assert post({"temperature": 20.0}, client=browser).status_code == 401
    assert not Reading.objects.exists()


def test_a_new_token_replaces_the_old_one_and_a_revoked_token_is_refused(plant, token):
    device = plant["devices"][0]
    stored = Device.objects.get(pk=device.pk)
    assert token.startswith(stored.ingest_token_prefix + ".")
    assert stored.ingest_token_hash == hashlib.sha256(token.encode()).hexdigest()  # the token itself is not stored

    new = services.issue_ingest_token(device=device)
    assert post({"temperature": 20.0}, token).status_code == 401
    assert post({"temperature": 20.0}, new).status_code == 202

    services.revoke_ingest_token(device=device)
    assert post({"temperature": 21.0}, new).status_code == 401
    assert [v for _, v, _ in readings("dev-1")] == [20.0]


def test_an_inactive_device_is_403(plant, token):
    Device.objects.filter(device_id="dev-1").update(is_active=False)
    response = post({"temperature": 20.0}, token)
    assert response.status_code == 403
    assert not Reading.objects.exists()
    # Active again: accepted at once (the view refreshes its device master for this device).
    Device.objects.filter(device_id="dev-1").update(is_active=True)
    assert post({"temperature": 20.0}, token).status_code == 202


def test_a_device_created_a_moment_ago_is_known(plant):
    """The per-process device master is refreshed for a device it does not know yet."""
    assert post({"temperature": 20.0}, services.issue_ingest_token(device=plant["devices"][0])).status_code == 202
    fresh = Device.objects.create(device_id="dev-new", device_type=plant["type"], location=plant["location"])
    assert post({"temperature": 21.0}, services.issue_ingest_token(device=fresh)).status_code == 202
    assert [v for _, v, _ in readings("dev-new")] == [21.0]


# --- rejections: the MQTT dead letters --------------------------------------------------------------


def test_another_devices_data_is_dead_lettered_as_wrong_shape(plant, token):
    response = post({"id": "dev-2", "ts": now_ms(), "v": 30.0}, token)

    assert response.status_code == 400
    [rejection] = response.json()["rejected"]
    assert rejection["reason"] == "wrong_shape" and "dev-2" in rejection["detail"]
    assert response.json()["stored"] == 0
    assert dead_letters() == [("http", "sensors/dev-1", "wrong_shape")]
    assert not Reading.objects.exists()


@pytest.mark.parametrize(
    "body, reason",
    [
        (b"{broken json", "malformed_json"),
        ({"pressure": 1.0}, "unknown_metric"),
        ({"temperature": "hot"}, "bad_value"),
        ({"ts": now_ms() + 3600_000, "temperature": 1.0}, "ts_future"),
        ([], "wrong_shape"),
    ],
)
def test_invalid_bodies_are_400_and_dead_lettered(plant, token, body, reason):
    response = post(body, token)
    assert response.status_code == 400
    assert [r["reason"] for r in response.json()["rejected"]] == [reason]
    assert dead_letters() == [("http", "sensors/dev-1", reason)]


def test_an_oversized_body_is_413_and_dead_lettered_as_too_large(plant, token):
    body = orjson.dumps({"temperature": 20.0, "pad": "x" * LIMIT})
    response = post(body, token)

    assert response.status_code == 413
    assert [r["reason"] for r in response.json()["rejected"]] == ["too_large"]
    letter = DeadLetter.objects.get()
    assert (letter.source, letter.topic, letter.reason) == ("http", "sensors/dev-1", "too_large")
    assert letter.detail == f"{len(body)} bytes > {LIMIT}"
    assert len(letter.payload) == 4096  # truncated
    assert not Reading.objects.exists()


def test_a_body_beyond_the_hard_limit_is_not_read_but_still_dead_lettered(plant, token):
    body = b'{"pad": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    response = post(body, token)
    assert response.status_code == 413
    letter = DeadLetter.objects.get()
    assert (letter.reason, letter.detail) == ("too_large", f"{len(body)} bytes > {LIMIT}")
    assert letter.payload.startswith('{"pad": "xxx') and len(letter.payload) == 4096


# --- throttling and the admin ---------------------------------------------------------------------


def test_each_token_has_its_own_request_budget(plant, token, settings):
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], "ingest": "3/min"},
    }
    other = services.issue_ingest_token(device=plant["devices"][1])
    codes = [post({"temperature": 20.0 + n}, token).status_code for n in range(4)]
    assert codes == [202, 202, 202, 429]
    assert post({"temperature": 20.0}, other).status_code == 202  # another device is not slowed down


def test_the_admin_issues_a_token_once_and_revokes_it(plant, client):
    admin = get_user_model().objects.create_superuser("token-admin", password="token-admin-pw-1")
    client.force_login(admin)
    device = plant["devices"][0]
    changelist = reverse("admin:devices_device_changelist")

    response = client.post(changelist, {"action": "issue_ingest_token", "_selected_action": [device.pk]}, follow=True)
    [shown] = [str(m) for m in response.context["messages"] if "HTTP ingest token" in str(m)]
    issued = shown.split("HTTP ingest token ")[1].split(" ")[0]
    assert post({"temperature": 20.0}, issued).status_code == 202
    assert issued not in client.get(changelist).content.decode()  # shown once

    client.post(changelist, {"action": "revoke_ingest_token", "_selected_action": [device.pk]})
    assert post({"temperature": 20.0}, issued).status_code == 401


# --- a real server ---------------------------------------------------------------------------------


def test_it_ingests_through_daphne(plant, hub):
    """The real ASGI server: raw bodies from a socket, an oversized upload, answers as JSON."""
    token = services.issue_ingest_token(device=plant["devices"][1])
    port = free_port()
    web = hub.start("-b", "127.0.0.1", "-p", str(port), "iothub.asgi:application", program=[sys.executable, "-m", "daphne"])

    def answers():
        assert web.poll() is None
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    eventually(answers, message="daphne")

    def send(body, token=token):
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}{URL}",
            data=body,
            method="POST",
            headers={"Authorization": f"Device {token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, orjson.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, orjson.loads(error.read())

    ts = now_ms()
    assert send(orjson.dumps({"ts": ts, "temperature": 22.0, "humidity": 50.0})) == (
        202,
        {"stored": 2, "readings": 2, "rejected": []},
    )
    assert readings("dev-2") == [("humidity", 50.0, ts / 1000), ("temperature", 22.0, ts / 1000)]
    status, answer = send(b"[" + b'{"v": 1.0},' * 20000 + b'{"v": 1.0}]')
    assert (status, answer["rejected"][0]["reason"]) == (413, "too_large")
    assert send(orjson.dumps({"temperature": 1.0}), token="0123456789ab.nope")[0] == 401
    assert dead_letters() == [("http", "sensors/dev-2", "too_large")]
