"""The plant platform's services served by the hub (docs/compatibility.md): a client written
against them gets the same shapes, checked against the platform's own examples."""

import re
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.utils import timezone

from apps.alerts.models import Threshold
from apps.devices.models import Device, DeviceType, Location, Metric
from apps.telemetry.latest import store_latest
from apps.telemetry.models import Reading
from apps.telemetry.rollups import recompute_range

from .support import latest_item

# The platform's documented answers (issue 20), the fixtures a client of it was written against.
PLATFORM_REALTIME = {
    "capture_dt": "2025-09-12T05:59:38.837000Z",
    "ymd": "20250912",
    "hh": "14",
    "measurements": [
        {
            "location": {"factory": "SinPyeong", "building": "MX-1", "floor": 1, "loc_id": "A011"},
            "metrics": {"temperature": {"value": "22.1", "status": "normal"}, "humidity": {"value": "77.7", "status": None}},
        }
    ],
}
PLATFORM_AGGREGATION = {
    "location": {
        "factory": "SinPyeong",
        "building": "F-2001",
        "floor": 1,
        "loc_id": "A031",
        "area": "조립2",
        "date": [{"ymd": "20240922", "hour": "12", "metrics": {"pcv_temperature_max": "27.00", "pcv_temperature_avg": "27.00"}}],
    }
}


def shape(value):
    """The JSON shape of a value: keys and types, with the shape of a list's first item."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return type(value).__name__


@pytest.fixture
def sinpyeong(transactional_db, settings):
    """The platform's example plant: Seoul time, a sensor at A011 and pcv_temperature readings at A031."""
    settings.TIME_ZONE = "Asia/Seoul"
    temperature = Metric.objects.create(key="temperature", unit="°C")
    humidity = Metric.objects.create(key="humidity", unit="%")
    pcv = Metric.objects.create(key="pcv_temperature", unit="°C", precision=2)
    sensor = DeviceType.objects.create(name="th-sensor", primary_metric=temperature, expected_interval=10)
    sensor.metrics.add(temperature, humidity)
    pcv_sensor = DeviceType.objects.create(name="pcv-sensor", primary_metric=pcv)
    pcv_sensor.metrics.add(pcv)
    a011 = Location.objects.create(loc_id="A011", factory="SinPyeong", building="MX-1", floor="1", area="조립1")
    a031 = Location.objects.create(loc_id="A031", factory="SinPyeong", building="F-2001", floor="1", area="조립2")
    Location.objects.create(loc_id="B001", factory="Gumi", building="G-1", floor="B1")
    Device.objects.create(device_id="th-a011", device_type=sensor, location=a011)
    Device.objects.create(device_id="pcv-a031", device_type=pcv_sensor, location=a031)
    Threshold.objects.create(metric=temperature, warning_max=30, critical_max=35)
    return {"temperature": temperature, "pcv": pcv, "sensor": sensor}


def test_it_answers_the_platform_realtime_shape_by_factory_building_floor_and_loc_id(sinpyeong, staff_api):
    store_latest([latest_item("th-a011", "temperature", 22.06, 1, "normal"), latest_item("th-a011", "humidity", 77.7, 1, None)])
    before = timezone.now()
    for path in ("factory/SinPyeong", "building/MX-1", "floor/1", "loc_id/A011", "loc_id/A011/"):
        response = staff_api.get(f"/api/v1/realtime/{path}")
        assert response.status_code == 200, (path, response.content)
        answer = response.json()
        measurements = [m for m in answer["measurements"] if m["location"]["loc_id"] == "A011"]
        assert shape({**answer, "measurements": measurements}) == shape(PLATFORM_REALTIME), path
        assert measurements == PLATFORM_REALTIME["measurements"], path
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", answer["capture_dt"])
        captured = datetime.fromisoformat(answer["capture_dt"])
        assert before <= captured <= timezone.now()
        local = captured.astimezone(ZoneInfo("Asia/Seoul"))
        assert (answer["ymd"], answer["hh"]) == (f"{local:%Y%m%d}", f"{local:%H}")
    assert [m["location"]["loc_id"] for m in staff_api.get("/api/v1/realtime/factory/SinPyeong").json()["measurements"]] == [
        "A031",
        "A011",
    ]


def test_it_writes_values_with_the_metrics_precision_and_the_threshold_status(sinpyeong, staff_api, admin_api):
    store_latest(
        [latest_item("th-a011", "temperature", 31.25, 1, "warning"), latest_item("pcv-a031", "pcv_temperature", 27, 1, "normal")]
    )
    by_loc = {
        m["location"]["loc_id"]: m["metrics"] for m in staff_api.get("/api/v1/realtime/factory/SinPyeong").json()["measurements"]
    }
    assert by_loc == {
        "A011": {"temperature": {"value": "31.2", "status": "warning"}, "humidity": {"value": None, "status": None}},
        "A031": {"pcv_temperature": {"value": "27.00", "status": "normal"}},
    }
    assert admin_api.patch("/api/v1/metrics/temperature/", {"precision": 0}, format="json").status_code == 200
    answer = staff_api.get("/api/v1/realtime/loc_id/A011").json()
    assert answer["measurements"][0]["metrics"]["temperature"] == {"value": "31", "status": "warning"}


def test_it_answers_404_for_a_place_that_has_no_location(sinpyeong, staff_api):
    for path in ("factory/Nowhere", "building/X-9", "floor/7", "loc_id/Z999"):
        response = staff_api.get(f"/api/v1/realtime/{path}")
        assert response.status_code == 404
        assert list(response.json()) == ["detail"]
        assert path.split("/")[1] in response.json()["detail"][0]


def store_hour(device, metric, local_hour, values):
    """Readings spread over one plant local hour."""
    start = local_hour.astimezone(UTC)
    Reading.objects.bulk_create(
        Reading(device=device, metric=metric, time=start + timedelta(minutes=10 * n), value=value)
        for n, value in enumerate(values)
    )


def test_it_answers_the_platform_aggregation_shape_for_a_location_and_a_factory(sinpyeong, staff_api):
    """The platform's example (its 2024-09-22 12:00 hour) on recent days: a day and the next one of
    one month, and the last day of the month before."""
    seoul = ZoneInfo("Asia/Seoul")
    day = datetime.now(seoul).date() - timedelta(days=3)
    if (day + timedelta(days=1)).month != day.month:
        day -= timedelta(days=1)
    next_day, month_before = day + timedelta(days=1), day.replace(day=1) - timedelta(days=1)
    device = Device.objects.get(device_id="pcv-a031")
    store_hour(device, sinpyeong["pcv"], datetime.combine(day, time(12), tzinfo=seoul), [27.0, 27.0])
    store_hour(device, sinpyeong["pcv"], datetime.combine(next_day, time(0), tzinfo=seoul), [20.0, 21.0, 22.5])
    store_hour(device, sinpyeong["pcv"], datetime.combine(month_before, time(9), tzinfo=seoul), [30.0])
    recompute_range(datetime.combine(month_before, time(), tzinfo=UTC) - timedelta(days=1), datetime.now(UTC))

    ymd = f"{day:%Y%m%d}"
    response = staff_api.get(f"/api/v1/aggregation/pcv_temperature/location/A031?start_date={ymd}&end_date={ymd}")
    assert response.status_code == 200, response.content
    expected = PLATFORM_AGGREGATION["location"] | {"date": [PLATFORM_AGGREGATION["location"]["date"][0] | {"ymd": ymd}]}
    assert response.json() == {"location": expected}

    month = staff_api.get(f"/api/v1/aggregation/pcv_temperature/location/A031/?start_date={day:%Y%m}&end_date={day:%Y%m}").json()
    assert [(h["ymd"], h["hour"], h["metrics"]) for h in month["location"]["date"]] == [
        (ymd, "12", {"pcv_temperature_max": "27.00", "pcv_temperature_avg": "27.00"}),
        (f"{next_day:%Y%m%d}", "00", {"pcv_temperature_max": "22.50", "pcv_temperature_avg": "21.17"}),
    ]
    years = f"start_date={month_before:%Y}&end_date={day:%Y}"
    factory = staff_api.get(f"/api/v1/aggregation/pcv_temperature/factory/SinPyeong?{years}")
    assert factory.status_code == 200
    locations = factory.json()["locations"]
    assert shape(locations[0]) == shape(PLATFORM_AGGREGATION["location"])
    assert [(loc["loc_id"], len(loc["date"])) for loc in locations] == [("A031", 3), ("A011", 0)]


@pytest.mark.parametrize(
    ("path", "status", "field"),
    [
        ("pcv_temperature/location/A031?start_date=20261345&end_date=2026", 400, "start_date"),
        ("pcv_temperature/location/A031?start_date=2024-09&end_date=2024", 400, "start_date"),
        ("pcv_temperature/location/A031?start_date=2024", 400, "end_date"),
        ("pressure/location/A031?start_date=2024&end_date=2024", 400, "metric"),
        ("pcv_temperature/location/Z999?start_date=2024&end_date=2024", 404, "detail"),
        ("pcv_temperature/factory/Nowhere?start_date=2024&end_date=2024", 404, "detail"),
    ],
)
def test_it_refuses_bad_platform_aggregation_queries_in_the_one_error_shape(sinpyeong, staff_api, path, status, field):
    response = staff_api.get(f"/api/v1/aggregation/{path}")
    assert response.status_code == status
    body = response.json()
    assert list(body) == [field] and all(isinstance(message, str) for message in body[field])


# --- thresholds in the platform's flat form ------------------------------------------------------


def test_it_maps_the_platform_flat_threshold_onto_a_device_type_threshold(sinpyeong, admin_api):
    flat = {"sensor_type": "th-sensor", "metric_name": "humidity", "min_value": 30, "max_value": 70, "level": "warning"}
    created = admin_api.post("/api/v1/thresholds/", flat, format="json")
    assert created.status_code == 201, created.content
    assert {
        k: created.json()[k]
        for k in ("metric", "device_type", "device", "location", "warning_min", "warning_max", "critical_min")
    } == {
        "metric": "humidity",
        "device_type": "th-sensor",
        "device": None,
        "location": None,
        "warning_min": 30.0,
        "warning_max": 70.0,
        "critical_min": None,
    }
    critical = admin_api.post(
        "/api/v1/thresholds/", {**flat, "min_value": 10, "max_value": 90, "level": "critical"}, format="json"
    )
    assert (critical.status_code, critical.json()["id"]) == (200, created.json()["id"])  # the same threshold, its other band
    url = f"/api/v1/thresholds/{created.json()['id']}"
    replaced = admin_api.put(url, {**flat, "max_value": 75}, format="json")
    assert replaced.status_code == 200, replaced.content
    threshold = Threshold.objects.get(pk=created.json()["id"])
    assert (threshold.warning_min, threshold.warning_max, threshold.critical_min, threshold.critical_max) == (30, 75, 10, 90)
    assert admin_api.get(url).status_code == 200
    assert admin_api.delete(url).status_code == 204
    everyone = admin_api.post(
        "/api/v1/thresholds/", {"metric_name": "humidity", "max_value": 95, "level": "critical"}, format="json"
    )
    assert (everyone.status_code, everyone.json()["device_type"], everyone.json()["critical_max"]) == (201, None, 95.0)


@pytest.mark.parametrize(
    ("body", "field", "why"),
    [
        ({"level": "info"}, "level", "warning and critical bands only"),
        ({"sensor_type": "no-such"}, "sensor_type", "No device type is named no-such"),
        ({"metric_name": "pressure"}, "metric_name", "pressure"),
        ({"min_value": None, "max_value": None}, "non_field_errors", "Set min_value, max_value or both."),
        ({"min_value": 80, "max_value": 20}, "max_value", "Must be above warning min."),
        ({"metric": "humidity"}, "non_field_errors", "either the hub's threshold fields or the platform's flat form"),
    ],
)
def test_it_refuses_a_flat_threshold_it_cannot_map_saying_why(sinpyeong, admin_api, body, field, why):
    flat = {"sensor_type": "th-sensor", "metric_name": "humidity", "min_value": 30, "max_value": 70, "level": "warning", **body}
    response = admin_api.post("/api/v1/thresholds/", flat, format="json")
    assert response.status_code == 400
    assert list(response.json()) == [field]
    assert why in response.json()[field][0]
    assert Threshold.objects.count() == 1


def test_it_refuses_a_flat_band_that_crosses_the_other_band(sinpyeong, admin_api):
    admin_api.post(
        "/api/v1/thresholds/",
        {"sensor_type": "th-sensor", "metric_name": "humidity", "max_value": 90, "level": "critical"},
        format="json",
    )
    response = admin_api.post(
        "/api/v1/thresholds/",
        {"sensor_type": "th-sensor", "metric_name": "humidity", "max_value": 95, "level": "warning"},
        format="json",
    )
    assert response.status_code == 400
    assert response.json() == {"critical_max": ["Must not be below warning max."]}


def test_it_documents_the_platform_paths_under_a_compatibility_tag(sinpyeong, staff_api):
    schema = staff_api.get("/api/schema/?format=json").json()
    tagged = sorted(
        path for path, operations in schema["paths"].items() if "compatibility" in operations.get("get", {}).get("tags", [])
    )
    assert tagged == [
        "/api/v1/aggregation/{metric}/factory/{factory}",
        "/api/v1/aggregation/{metric}/location/{loc_id}",
        "/api/v1/realtime/building/{building}",
        "/api/v1/realtime/factory/{factory}",
        "/api/v1/realtime/floor/{floor}",
        "/api/v1/realtime/loc_id/{loc_id}",
    ]
