"""The API's contract, endpoint by endpoint: for an anonymous caller, a bad token, staff and an
admin, a valid, a malformed and an unknown-id request each get the expected status, and every
answer is JSON: the endpoint's own shape on success, the one error shape otherwise
({"detail" | field: [messages]}), whatever format was asked for."""

from dataclasses import dataclass
from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from apps.alerts.models import Alert, Threshold
from apps.devices.models import Device, Location, Metric
from apps.telemetry.models import DeadLetter

from .support import api_client

ROLES = ["anonymous", "bad token", "staff", "admin"]
CASES = ["valid", "malformed", "unknown"]


@dataclass(frozen=True)
class Endpoint:
    """One endpoint and method: a request per case (path, body; None: no such case) and the status
    each case gets from a caller allowed to make it. `who`: staff (staff and admins), admin
    (admins only), device (device tokens only: every user is refused) or anyone (no login)."""

    method: str
    valid: tuple
    malformed: tuple | None
    unknown: tuple | None
    statuses: tuple
    who: str = "staff"
    success: str = "application/json"

    def expected(self, role, case):
        if self.who == "anyone":
            return self.statuses[CASES.index(case)]
        if role in ("anonymous", "bad token") or self.who == "device":
            return 401
        if role == "staff" and self.who == "admin":
            return 403
        return self.statuses[CASES.index(case)]


def get(valid, malformed=None, unknown=None, statuses=(200, 400, 404), **options):
    return Endpoint("get", (valid, None), malformed and (malformed, None), unknown and (unknown, None), statuses, **options)


AGGREGATION = "start_date=2026&end_date=2026"
DEVICE_MASTER = [
    # path, lookup of the spare object, a valid body for creating "new", the natural key field, a filter
    ("locations", "SPARE", {"factory": "South"}, "loc_id", "loc_id"),
    ("metrics", "spare", {"unit": "ppm"}, "key", "key"),
    ("device-types", "spare", {"metrics": ["humidity"], "primary_metric": "humidity"}, "name", "name"),
    ("devices", "spare", {"device_type": "env", "location": "N-ASM-1-LA"}, "device_id", "factory"),
    ("thresholds", "{threshold}", {"metric": "humidity", "warning_min": 20}, None, "metric"),
]


def device_master_endpoints():
    for path, spare, body, key, filter_name in DEVICE_MASTER:
        new = {**body, key: "new"} if key else body
        same = {**body, key: spare} if key else body
        broken = {**body, "metric": "no-such"} if path == "thresholds" else {**body, key: ""}
        yield f"{path} list", get(f"/api/v1/{path}/", f"/api/v1/{path}/?{filter_name}=%00", statuses=(200, 400, None))
        yield f"{path} retrieve", get(f"/api/v1/{path}/{spare}/", None, f"/api/v1/{path}/nope/")
        yield (
            f"{path} create",
            Endpoint("post", (f"/api/v1/{path}/", new), (f"/api/v1/{path}/", broken), None, (201, 400, None), who="admin"),
        )
        yield (
            f"{path} replace",
            Endpoint(
                "put",
                (f"/api/v1/{path}/{spare}/", same),
                (f"/api/v1/{path}/{spare}/", broken),
                (f"/api/v1/{path}/nope/", same),
                (200, 400, 404),
                who="admin",
            ),
        )
        yield (
            f"{path} delete",
            Endpoint(
                "delete", (f"/api/v1/{path}/{spare}/", None), None, (f"/api/v1/{path}/nope/", None), (204, None, 404), who="admin"
            ),
        )


ENDPOINTS = dict(
    [
        ("root", get("/api/v1/", statuses=(200, None, None))),
        ("unknown path", get("/api/v1/nothing-here/", statuses=(404, None, None), who="anyone")),
        *device_master_endpoints(),
        ("realtime", get("/api/v1/realtime/?loc_id=N-ASM-1-LA", "/api/v1/realtime/?factory=%00", statuses=(200, 400, None))),
        ("realtime by factory", get("/api/v1/realtime/factory/North", None, "/api/v1/realtime/factory/Nowhere")),
        ("realtime by loc_id", get("/api/v1/realtime/loc_id/N-ASM-1-LA/", None, "/api/v1/realtime/loc_id/Z999/")),
        (
            "aggregation",
            get(
                f"/api/v1/aggregation/temperature/?{AGGREGATION}",
                "/api/v1/aggregation/temperature/?start_date=20261345&end_date=2026",
                f"/api/v1/aggregation/pressure/?{AGGREGATION}",
                statuses=(200, 400, 400),
            ),
        ),
        (
            "aggregation by location",
            get(
                f"/api/v1/aggregation/temperature/location/N-ASM-1-LA?{AGGREGATION}",
                "/api/v1/aggregation/temperature/location/N-ASM-1-LA?start_date=2026-01",
                f"/api/v1/aggregation/temperature/location/Z999?{AGGREGATION}",
            ),
        ),
        (
            "aggregation by factory",
            get(
                f"/api/v1/aggregation/temperature/factory/North?{AGGREGATION}",
                "/api/v1/aggregation/temperature/factory/North?end_date=2026",
                f"/api/v1/aggregation/temperature/factory/Nowhere?{AGGREGATION}",
            ),
        ),
        (
            "readings",
            get(
                "/api/v1/readings/?device=dev-1&metric=temperature",
                "/api/v1/readings/?device=dev-1&metric=temperature&start=yesterday",
                "/api/v1/readings/?device=nope&metric=temperature",
                statuses=(200, 400, 400),
            ),
        ),
        (
            "readings as CSV",
            get(
                "/api/v1/readings/?device=dev-1&metric=temperature&format=csv",
                "/api/v1/readings/?device=dev-1&format=csv",
                "/api/v1/readings/?device=dev-1&metric=nope&format=csv",
                statuses=(200, 400, 400),
                success="text/csv",
            ),
        ),
        ("alerts", get("/api/v1/alerts/?state=open", "/api/v1/alerts/?state=closed", statuses=(200, 400, None))),
        ("alert", get("/api/v1/alerts/{alert}/", "/api/v1/alerts/abc/", "/api/v1/alerts/999999/", statuses=(200, 404, 404))),
        *[
            (
                f"alert {action}",
                Endpoint(
                    "post",
                    (f"/api/v1/alerts/{{alert}}/{action}/", {"note": "ok"}),
                    (f"/api/v1/alerts/{{alert}}/{action}/", {"note": "x" * 1001}),
                    (f"/api/v1/alerts/999999/{action}/", {}),
                    (200, 400, 404),
                ),
            )
            for action in ("acknowledge", "resolve")
        ],
        (
            "effective thresholds",
            get(
                "/api/v1/thresholds/effective/?device=dev-1",
                "/api/v1/thresholds/effective/",
                "/api/v1/thresholds/effective/?device=nope",
                statuses=(200, 400, 400),
            ),
        ),
        (
            "dead letters",
            get("/api/v1/deadletters/", "/api/v1/deadletters/?reason=bogus", statuses=(200, 400, None), who="admin"),
        ),
        (
            "dead letter",
            get(
                "/api/v1/deadletters/{deadletter}/",
                "/api/v1/deadletters/abc/",
                "/api/v1/deadletters/999999/",
                who="admin",
                statuses=(200, 404, 404),
            ),
        ),
        (
            "ingest",
            Endpoint(
                "post", ("/api/v1/ingest/", {"temperature": 1}), ("/api/v1/ingest/", "{"), None, (None, None, None), who="device"
            ),
        ),
        ("schema", get("/api/schema/?format=json", statuses=(200, None, None), success="application/vnd.oai.openapi+json")),
        ("docs", get("/api/docs/", statuses=(200, None, None), success="text/html")),
        (
            "JWT token",
            Endpoint(
                "post",
                ("/api/v1/auth/token/", {"username": "jwt-user", "password": "jwt-pw-12345"}),
                ("/api/v1/auth/token/", {"username": "jwt-user"}),
                ("/api/v1/auth/token/", {"username": "nobody", "password": "jwt-pw-12345"}),
                (200, 400, 401),
                who="anyone",
            ),
        ),
        (
            "JWT refresh",
            Endpoint(
                "post",
                ("/api/v1/auth/token/refresh/", {"refresh": "{refresh}"}),
                ("/api/v1/auth/token/refresh/", {}),
                ("/api/v1/auth/token/refresh/", {"refresh": "not.a.token"}),
                (200, 400, 401),
                who="anyone",
            ),
        ),
    ]
)


@pytest.fixture
def objects(plant, django_user_model):
    from rest_framework_simplejwt.tokens import RefreshToken

    dev1 = plant["devices"][0]
    Location.objects.create(loc_id="SPARE", factory="South")
    Metric.objects.create(key="spare")
    Device.objects.create(device_id="spare", device_type=plant["type"], location=plant["location"])
    spare_type = plant["type"].__class__.objects.create(name="spare", primary_metric=plant["humidity"])
    spare_type.metrics.add(plant["humidity"])
    jwt_user = django_user_model.objects.create_user("jwt-user", password="jwt-pw-12345", is_staff=True)
    return {
        "alert": Alert.objects.create(
            device=dev1, metric=plant["temperature"], level="warning", opened_at=timezone.now() - timedelta(minutes=5)
        ).pk,
        "deadletter": DeadLetter.objects.create(
            source="mqtt", topic="sensors/x", received_at=timezone.now(), payload="{", reason="malformed_json"
        ).pk,
        "threshold": Threshold.objects.create(metric=plant["humidity"], warning_max=70).pk,
        "refresh": str(RefreshToken.for_user(jwt_user)),
    }


def client_of(role):
    if role == "bad token":
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION="Token not-a-token-of-anyone")
        return client
    return api_client(role)


def filled(value, objects):
    if isinstance(value, str):
        return value.format(**objects) if value != "{" else value
    if isinstance(value, dict):
        return {key: filled(item, objects) for key, item in value.items()}
    return value


def is_error_shape(body):
    return (
        isinstance(body, dict)
        and body
        and all(isinstance(key, str) and isinstance(messages, list) and messages for key, messages in body.items())
        and all(isinstance(message, str) and message for messages in body.values() for message in messages)
    )


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("name", ENDPOINTS)
def test_every_endpoint_answers_each_caller_with_the_status_and_json_shape_it_promises(objects, name, role):
    endpoint = ENDPOINTS[name]
    client = client_of(role)
    checked = 0
    for case in CASES:
        request = getattr(endpoint, case)
        if request is None:
            continue
        path, body = filled(request[0], objects), filled(request[1], objects)
        expected = endpoint.expected(role, case)
        response = (
            getattr(client, endpoint.method)(path, body, format="json")
            if body is not None
            else getattr(client, endpoint.method)(path)
        )
        content = b"" if response.streaming else response.content
        where = f"{endpoint.method.upper()} {path} as {role} ({case})"
        assert response.status_code == expected, f"{where}: {content[:300]!r}"
        if expected < 400:
            assert response.status_code == 204 or response["Content-Type"].startswith(endpoint.success), where
            continue
        assert response["Content-Type"] == "application/json", f"{where}: {response['Content-Type']}"
        assert is_error_shape(response.json()), f"{where}: {content[:300]!r}"
        checked += 1
    assert checked or role in ("staff", "admin")


def test_a_jwt_bearer_works_on_every_endpoint_as_a_token_does(objects, django_user_model):
    from rest_framework_simplejwt.tokens import AccessToken

    admin = django_user_model.objects.create_user("jwt-admin", is_staff=True, is_superuser=True)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {AccessToken.for_user(admin)}")
    for name, endpoint in ENDPOINTS.items():
        if endpoint.who in ("anyone", "device") or endpoint.method == "delete":
            continue
        path, body = filled(endpoint.valid[0], objects), filled(endpoint.valid[1], objects)
        response = getattr(client, endpoint.method)(path, body, format="json") if body is not None else client.get(path)
        assert response.status_code == endpoint.statuses[0], f"{name}: {response.status_code}"
