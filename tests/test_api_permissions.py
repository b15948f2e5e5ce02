"""Who may do what in the API: anonymous 401, plain users 403, staff read (and act on alerts),
admins (superusers) write — for every endpoint and method."""

from dataclasses import dataclass, field
from datetime import timedelta

import pytest
from django.utils import timezone

from apps.alerts.models import Alert, MaintenanceWindow, Threshold
from apps.devices.models import Device, DeviceType, Location, Metric
from apps.telemetry.models import DeadLetter

from .support import api_client

STAFF_READ = {"anonymous": 401, "plain": 403, "staff": 200, "admin": 200}
ADMIN_ONLY = {"anonymous": 401, "plain": 403, "staff": 403, "admin": 200}


def admin_write(status):
    return {"anonymous": 401, "plain": 403, "staff": 403, "admin": status}


def spare_device_type(plant):
    device_type = DeviceType.objects.create(name="spare", primary_metric=plant["humidity"])
    device_type.metrics.add(plant["humidity"])
    return device_type


@dataclass(frozen=True)
class Resource:
    """A CRUD endpoint: how to make an object nobody refers to, and a valid body apart from the natural key."""

    path: str
    key: str | None
    spare: object
    body: dict = field(hash=False)

    def lookup(self, obj):
        return getattr(obj, self.key or "pk")

    def body_with_key(self, value):
        return self.body if self.key is None else {**self.body, self.key: value}


RESOURCES = [
    Resource("locations", "loc_id", lambda plant: Location.objects.create(loc_id="SPARE", factory="South"), {"factory": "South"}),
    Resource("metrics", "key", lambda plant: Metric.objects.create(key="spare"), {"unit": "ppm"}),
    Resource(
        "device-types",
        "name",
        spare_device_type,
        {"metrics": ["temperature"], "primary_metric": "temperature", "expected_interval": 30},
    ),
    Resource(
        "devices",
        "device_id",
        lambda plant: Device.objects.create(device_id="spare", device_type=plant["type"], location=plant["location"]),
        {"device_type": "env", "location": "N-ASM-1-LA"},
    ),
    Resource(
        "thresholds",
        None,
        lambda plant: Threshold.objects.create(metric=plant["humidity"], warning_max=70),
        {"metric": "humidity", "warning_min": 20},
    ),
    Resource(
        "maintenance-windows",
        None,
        lambda plant: MaintenanceWindow.objects.create(
            device=plant["devices"][1],
            reason="pump swap",
            start=timezone.now() + timedelta(days=1),
            end=timezone.now() + timedelta(days=2),
        ),
        {"device": "dev-1", "start": "2999-01-01T06:00:00Z", "end": "2999-01-01T08:00:00Z", "reason": "calibration"},
    ),
]

# method, on the detail URL, natural key of the body (a new one or the spare's), expected status per role
CRUD_REQUESTS = [
    pytest.param("get", False, None, STAFF_READ, id="list"),
    pytest.param("get", True, None, STAFF_READ, id="retrieve"),
    pytest.param("post", False, "new", admin_write(201), id="create"),
    pytest.param("put", True, "spare", admin_write(200), id="replace"),
    pytest.param("patch", True, "spare", admin_write(200), id="update"),
    pytest.param("delete", True, None, admin_write(204), id="delete"),
]


@pytest.mark.parametrize("role", STAFF_READ)
@pytest.mark.parametrize(("method", "detail", "body_key", "expected"), CRUD_REQUESTS)
@pytest.mark.parametrize("resource", RESOURCES, ids=lambda r: r.path)
def test_it_lets_staff_read_and_admins_write_the_device_master(plant, resource, method, detail, body_key, expected, role):
    spare_key = resource.lookup(resource.spare(plant))
    url = f"/api/v1/{resource.path}/{spare_key}/" if detail else f"/api/v1/{resource.path}/"
    body = resource.body_with_key("new" if body_key == "new" else spare_key) if body_key else None
    response = getattr(api_client(role), method)(url, body, format="json")
    assert response.status_code == expected[role], getattr(response, "data", response)
    if role == "anonymous":
        assert response["WWW-Authenticate"] == "Token"


@pytest.fixture
def endpoint_objects(plant):
    dev1 = plant["devices"][0]
    alert = Alert.objects.create(
        device=dev1, metric=plant["temperature"], level="warning", opened_at=timezone.now() - timedelta(minutes=5)
    )
    dead_letter = DeadLetter.objects.create(
        source="mqtt", topic="sensors/x", received_at=timezone.now(), payload="{", reason="malformed_json"
    )
    return {"alert": alert.pk, "deadletter": dead_letter.pk}


OTHER_REQUESTS = [
    ("get", "/api/v1/", STAFF_READ),
    ("get", "/api/v1/realtime/?loc_id=N-ASM-1-LA", STAFF_READ),
    ("post", "/api/v1/realtime/", admin_write(405)),
    ("get", "/api/v1/aggregation/temperature/?start_date=2026&end_date=2026&interval=day", STAFF_READ),
    ("get", "/api/v1/readings/?device=dev-1&metric=temperature", STAFF_READ),
    ("get", "/api/v1/readings/?device=dev-1&metric=temperature&format=csv", STAFF_READ),
    ("post", "/api/v1/readings/", admin_write(405)),
    ("get", "/api/v1/alerts/?state=open", STAFF_READ),
    ("get", "/api/v1/alerts/{alert}/", STAFF_READ),
    ("get", "/api/v1/alerts/kpis/?start=20260101&end=20260131", STAFF_READ),
    ("get", "/api/v1/maintenance-windows/", STAFF_READ),
    ("post", "/api/v1/alerts/{alert}/acknowledge/", STAFF_READ),
    ("post", "/api/v1/alerts/{alert}/resolve/", STAFF_READ),
    ("delete", "/api/v1/alerts/{alert}/", {"anonymous": 401, "plain": 403, "staff": 405, "admin": 405}),
    ("get", "/api/v1/deadletters/", ADMIN_ONLY),
    ("get", "/api/v1/deadletters/{deadletter}/", ADMIN_ONLY),
    ("delete", "/api/v1/deadletters/{deadletter}/", {"anonymous": 401, "plain": 403, "staff": 403, "admin": 405}),
    ("get", "/api/schema/", STAFF_READ),
    ("get", "/api/docs/", STAFF_READ),
]


@pytest.mark.parametrize("role", STAFF_READ)
@pytest.mark.parametrize(("method", "url", "expected"), OTHER_REQUESTS, ids=[f"{m} {u}" for m, u, _ in OTHER_REQUESTS])
def test_it_guards_every_other_endpoint(endpoint_objects, method, url, expected, role):
    response = getattr(api_client(role), method)(url.format(**endpoint_objects))
    assert response.status_code == expected[role]
    if role == "anonymous":
        assert response["WWW-Authenticate"] == "Token"


@pytest.mark.parametrize("role", STAFF_READ)
@pytest.mark.parametrize(("action", "body"), [("shelve", {"minutes": 5, "note": "calibration"}), ("unshelve", {})])
def test_it_lets_staff_shelve_and_unshelve_alerts(endpoint_objects, role, action, body):
    response = api_client(role).post(f"/api/v1/alerts/{endpoint_objects['alert']}/{action}/", body, format="json")
    assert response.status_code == STAFF_READ[role]
    if role == "anonymous":
        assert response["WWW-Authenticate"] == "Token"
