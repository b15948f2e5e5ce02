"""The integrator REST API (/api/v1/) on real PostgreSQL and Redis: shapes, filters, validation,
realtime, aggregation across DST, readings (cursor pages and streamed CSV), alerts, dead letters, schema."""

import csv
import io
import re
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
import time_machine
from asgiref.sync import async_to_sync
from django.db import connection
from django.test import AsyncClient
from django.utils import timezone

from apps.accounts.services import issue_api_token
from apps.alerts.models import Alert, AlertEvent, Threshold
from apps.devices.models import Device, Location, Metric
from apps.telemetry.latest import store_latest
from apps.telemetry.models import DeadLetter, Reading
from apps.telemetry.rollups import recompute_range

from .support import api_client, last_fall_back_day, latest_item, token_for


def store_readings(device, metric, times, value_of):
    Reading.objects.bulk_create(Reading(device=device, metric=metric, time=t, value=value_of(t)) for t in times)


def every(start, end, step):
    times = []
    while start < end:
        times.append(start)
        start += step
    return times


# --- device master and thresholds -------------------------------------------------------------


def test_it_round_trips_a_device(plant, admin_api):
    created = admin_api.post(
        "/api/v1/devices/",
        {"device_id": "dev-9", "name": "Press 9", "device_type": "env", "location": "N-ASM-1-LA"},
        format="json",
    )
    assert created.status_code == 201, created.data
    assert created.data == {
        "device_id": "dev-9",
        "name": "Press 9",
        "device_type": "env",
        "location": "N-ASM-1-LA",
        "is_active": True,
        "last_seen_at": None,
    }
    Location.objects.create(loc_id="S-FOU-1-FU", factory="South", building="Foundry", floor="1")
    moved = admin_api.patch("/api/v1/devices/dev-9/", {"location": "S-FOU-1-FU", "is_active": False}, format="json")
    assert moved.status_code == 200, moved.data
    device = Device.objects.get(device_id="dev-9")
    assert (device.location.loc_id, device.is_active) == ("S-FOU-1-FU", False)
    replaced = admin_api.put(
        "/api/v1/devices/dev-9/", {"device_id": "dev-9", "device_type": "env", "location": "N-ASM-1-LA"}, format="json"
    )
    assert replaced.status_code == 200, replaced.data
    assert admin_api.get("/api/v1/devices/dev-9/").data["location"] == "N-ASM-1-LA"
    assert admin_api.delete("/api/v1/devices/dev-9/").status_code == 204
    assert admin_api.get("/api/v1/devices/dev-9/").status_code == 404


def test_it_filters_devices_by_location_type_and_state(plant, staff_api):
    south = Location.objects.create(loc_id="S-FOU-1-FU", factory="South", building="Foundry", floor="1")
    Device.objects.create(device_id="dev-3", device_type=plant["type"], location=south, is_active=False)

    def ids(query):
        response = staff_api.get(f"/api/v1/devices/?{query}")
        assert response.status_code == 200, response.data
        return [d["device_id"] for d in response.data["results"]]

    assert ids("factory=North") == ["dev-1", "dev-2"]
    assert ids("loc_id=S-FOU-1-FU") == ["dev-3"]
    assert ids("building=Foundry&floor=1") == ["dev-3"]
    assert ids("is_active=false") == ["dev-3"]
    assert ids("device_type=env&factory=") == ["dev-1", "dev-2", "dev-3"]


def test_it_refuses_a_device_at_an_unknown_location(plant, admin_api):
    response = admin_api.post(
        "/api/v1/devices/", {"device_id": "dev-9", "device_type": "env", "location": "NOWHERE"}, format="json"
    )
    assert response.status_code == 400
    assert list(response.data) == ["location"]
    assert not Device.objects.filter(device_id="dev-9").exists()


def test_it_answers_409_when_deleting_a_location_in_use(plant, admin_api):
    response = admin_api.delete("/api/v1/locations/N-ASM-1-LA/")
    assert response.status_code == 409
    assert "dev-" in response.data["detail"][0]
    assert Location.objects.filter(loc_id="N-ASM-1-LA").exists()


def test_it_round_trips_locations_metrics_and_device_types(plant, admin_api):
    location = {
        "loc_id": "S-FOU-1-FU",
        "factory": "South",
        "building": "Foundry",
        "floor": "1",
        "area": "Furnaces",
        "name": "Furnaces",
    }
    assert admin_api.post("/api/v1/locations/", location, format="json").data == location
    assert admin_api.get("/api/v1/locations/?factory=South").data["results"] == [location]
    metric = {"key": "pressure", "unit": "bar", "label": "Pressure", "precision": 2}
    assert admin_api.post("/api/v1/metrics/", metric, format="json").data == {**metric, "expression": "", "max_input_age": 300}
    device_type = {
        "name": "press-sensor",
        "metrics": ["pressure", "temperature"],
        "primary_metric": "pressure",
        "expected_interval": 30,
    }
    created = admin_api.post("/api/v1/device-types/", device_type, format="json")
    assert created.status_code == 201, created.data
    assert admin_api.get("/api/v1/device-types/press-sensor/").data == device_type
    assert admin_api.get("/api/v1/device-types/?metric=pressure").data["results"] == [device_type]


def test_it_refuses_a_primary_metric_the_type_does_not_report(plant, admin_api):
    response = admin_api.patch("/api/v1/device-types/env/", {"metrics": ["humidity"]}, format="json")
    assert response.status_code == 400
    assert list(response.data) == ["primary_metric"]


def test_it_round_trips_a_threshold(plant, admin_api):
    body = {
        "metric": "humidity",
        "device": "dev-1",
        "location": None,
        "device_type": None,
        "warning_min": 20.0,
        "warning_max": 60.0,
        "critical_min": 10.0,
        "critical_max": 80.0,
        "hysteresis": 1.0,
        "hold_seconds": 30,
        "enabled": True,
        "rate_max": None,
        "rate_critical_max": None,
        "rate_window": 300,
        "predict_minutes": None,
        "predict_window": 15,
    }
    created = admin_api.post("/api/v1/thresholds/", body, format="json")
    assert created.status_code == 201, created.data
    url = f"/api/v1/thresholds/{created.data['id']}/"
    assert admin_api.get(url).data == {"id": created.data["id"], **body}
    assert [t["id"] for t in admin_api.get("/api/v1/thresholds/?device=dev-1&metric=humidity").data["results"]] == [
        created.data["id"]
    ]
    assert admin_api.get("/api/v1/thresholds/?location=N-ASM-1-LA").data["results"] == []
    changed = admin_api.patch(url, {"device": None, "location": "N-ASM-1-LA", "warning_max": 65}, format="json")
    assert changed.status_code == 200, changed.data
    threshold = Threshold.objects.get(pk=created.data["id"])
    assert (threshold.device, threshold.location.loc_id, threshold.warning_max) == (None, "N-ASM-1-LA", 65)
    assert admin_api.delete(url).status_code == 204
    assert not Threshold.objects.filter(pk=created.data["id"]).exists()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"warning_min": 30, "warning_max": 20}, "warning_max"),
        ({"critical_min": 5, "critical_max": 1}, "critical_max"),
        ({"warning_max": 30, "critical_max": 25}, "critical_max"),
        ({"warning_min": 10, "critical_min": 15}, "critical_min"),
        ({}, "non_field_errors"),
        ({"warning_max": 30, "device": "dev-1", "location": "N-ASM-1-LA"}, "non_field_errors"),
        ({"warning_max": 30, "hysteresis": -1}, "hysteresis"),
    ],
)
def test_it_refuses_invalid_threshold_bands_with_field_errors(plant, admin_api, body, field):
    response = admin_api.post("/api/v1/thresholds/", {"metric": "temperature", **body}, format="json")
    assert response.status_code == 400
    assert list(response.data) == [field]
    assert Threshold.objects.count() == 1


def test_it_validates_a_partial_threshold_update_as_a_whole(plant, admin_api):
    response = admin_api.patch(f"/api/v1/thresholds/{plant['threshold'].pk}/", {"critical_max": 25}, format="json")
    assert response.status_code == 400
    assert list(response.data) == ["critical_max"]
    plant["threshold"].refresh_from_db()
    assert plant["threshold"].critical_max == 35


# --- realtime ---------------------------------------------------------------------------------


def test_it_answers_realtime_status_of_a_location(plant, staff_api, settings):
    elsewhere = Location.objects.create(loc_id="S-FOU-1-FU", factory="South")
    Device.objects.create(device_id="dev-3", device_type=plant["type"], location=elsewhere)
    ts = int(timezone.now().timestamp() * 1000)
    store_latest(
        [
            {"device": "dev-1", "metric": "temperature", "value": 31.5, "ts": ts, "status": "warning"},
            {"device": "dev-1", "metric": "humidity", "value": 40.0, "ts": ts, "status": None},
            {"device": "dev-3", "metric": "temperature", "value": 20.0, "ts": ts, "status": "normal"},
        ]
    )
    response = staff_api.get("/api/v1/realtime/?loc_id=N-ASM-1-LA&factory=&building=&floor=")
    assert response.status_code == 200, response.content
    answer = response.json()
    assert set(answer) == {"capture_dt", "ymd", "hh", "measurements"}
    captured = datetime.fromisoformat(answer["capture_dt"])
    local = captured.astimezone(ZoneInfo(settings.TIME_ZONE))
    assert (answer["ymd"], answer["hh"]) == (f"{local:%Y%m%d}", f"{local:%H}")
    location = {"loc_id": "N-ASM-1-LA", "factory": "North", "building": "Assembly", "floor": "1", "area": "Line A", "name": ""}
    dev1, dev2 = answer["measurements"]
    assert (dev1["device"], dev1["location"], dev1["offline"]) == ("dev-1", location, False)
    assert dev1["metrics"] == {
        "temperature": {"value": 31.5, "status": "warning", "ts": ts},
        "humidity": {"value": 40.0, "status": None, "ts": ts},
    }
    assert (dev2["device"], dev2["offline"]) == ("dev-2", True)
    assert dev2["metrics"] == {key: {"value": None, "status": None, "ts": None} for key in ("temperature", "humidity")}
    assert [m["device"] for m in staff_api.get("/api/v1/realtime/?factory=South").json()["measurements"]] == ["dev-3"]


def test_it_answers_realtime_status_after_every_change_at_once(plant, staff_api, admin_api):
    def realtime(factory):
        return {m["device"]: m for m in staff_api.get(f"/api/v1/realtime/?factory={factory}").json()["measurements"]}

    ts = int(timezone.now().timestamp() * 1000)
    store_latest([latest_item("dev-1", "temperature", 21.0, ts), latest_item("dev-2", "temperature", 20.0, ts - 28_000)])
    answer = realtime("North")
    assert answer["dev-1"]["metrics"]["temperature"]["value"] == 21.0
    assert not answer["dev-2"]["offline"]  # offline after 3 × 10 s of silence
    store_latest([latest_item("dev-1", "temperature", 22.5, ts + 1)])
    with time_machine.travel((ts + 2_100) / 1000):  # dev-2 silent for 30.1 s
        answer = realtime("North")
    assert answer["dev-1"]["metrics"]["temperature"]["value"] == 22.5
    assert answer["dev-2"]["offline"]  # the same stored value, but the clock moved on
    page = staff_api.get("/api/v1/realtime/?factory=North&format=api")  # the browsable API renders the same entries
    assert page.status_code == 200 and "22.5" in page.content.decode()

    Location.objects.create(loc_id="S-1", factory="South")
    assert admin_api.patch("/api/v1/devices/dev-2/", {"location": "S-1"}, format="json").status_code == 200
    assert set(realtime("North")) == {"dev-1"} and set(realtime("South")) == {"dev-2"}
    assert admin_api.patch("/api/v1/locations/S-1/", {"name": "Annex"}, format="json").status_code == 200
    assert realtime("South")["dev-2"]["location"]["name"] == "Annex"
    plant["type"].metrics.add(Metric.objects.create(key="pressure"))
    assert realtime("North")["dev-1"]["metrics"] == {
        "humidity": {"value": None, "status": None, "ts": None},
        "pressure": {"value": None, "status": None, "ts": None},
        "temperature": {"value": 22.5, "status": "normal", "ts": ts + 1},
    }
    assert admin_api.patch("/api/v1/devices/dev-1/", {"is_active": False}, format="json").status_code == 200
    assert realtime("North") == {}


# --- aggregation ------------------------------------------------------------------------------


def local_hour(at, tz):
    """Brute force: the local hour an instant falls in, as an aware datetime keeping its fold (two 02:00 on fall-back)."""
    return at.astimezone(tz).replace(minute=0, second=0, microsecond=0)


def local_day(at, tz):
    return datetime.combine(at.astimezone(tz).date(), time.min, tzinfo=tz)


def brute_force_buckets(readings, bucket_of, tz):
    """{loc_id: {start iso: (min, max, avg, count)}} over raw (loc_id, time, value) rows."""
    values = {}
    for loc_id, at, value in readings:
        values.setdefault(loc_id, {}).setdefault(bucket_of(at, tz).isoformat(), []).append(value)
    return {
        loc_id: {start: (min(v), max(v), sum(v) / len(v), len(v)) for start, v in buckets.items()}
        for loc_id, buckets in values.items()
    }


# Dates relative to today: the last day Berlin's clocks went back (a 25-hour local day) and a recent day.
FALL_BACK = last_fall_back_day(datetime.now(UTC).date() - timedelta(days=3))
RECENT_DAY = datetime.now(UTC).date() - timedelta(days=2)


def at_utc(day, hour=0):
    return datetime.combine(day, time(hour), tzinfo=UTC)


def roll_up():
    """What beat does every 30 s: rollups of the stored readings (in the current TIME_ZONE)."""
    recompute_range(at_utc(FALL_BACK - timedelta(days=3)), at_utc(FALL_BACK + timedelta(days=4)))


def answered_buckets(response):
    return {
        r["location"]["loc_id"]: {b["start"]: (b["min"], b["max"], pytest.approx(b["avg"]), b["count"]) for b in r["buckets"]}
        for r in response.json()["results"]
    }


@pytest.fixture
def dst_readings(plant, settings):
    """Readings every 20 min around the last day Berlin's clocks went back: dev-1 and dev-2 in one location, dev-3 in another."""
    settings.TIME_ZONE = "Europe/Berlin"
    south = Location.objects.create(loc_id="S-FOU-1-FU", factory="South")
    dev3 = Device.objects.create(device_id="dev-3", device_type=plant["type"], location=south)
    times = every(
        at_utc(FALL_BACK - timedelta(days=2), hour=20), at_utc(FALL_BACK + timedelta(days=2), hour=2), timedelta(minutes=20)
    )
    rows = []
    for n, device in enumerate([*plant["devices"], dev3]):

        def value_of(at, n=n):
            return round(20 + n + (at.timestamp() % 7919) / 1000, 3)

        store_readings(device, plant["temperature"], times, value_of)
        rows += [(device.location.loc_id, at, value_of(at)) for at in times]
    store_readings(plant["devices"][0], plant["humidity"], times, lambda at: 99.0)
    return rows


@pytest.mark.parametrize(
    ("zone", "interval", "bucket_of"),
    [
        ("Europe/Berlin", "hour", local_hour),
        ("Europe/Berlin", "day", local_day),
        ("Asia/Kolkata", "hour", local_hour),
        ("Asia/Kolkata", "day", local_day),
    ],
)
def test_it_aggregates_per_location_like_a_brute_force_scan(dst_readings, settings, staff_api, zone, interval, bucket_of):
    settings.TIME_ZONE = zone
    roll_up()
    tz = ZoneInfo(zone)
    first, last = FALL_BACK - timedelta(days=1), FALL_BACK + timedelta(days=1)
    start, end = (
        datetime.combine(first, time.min, tzinfo=tz),
        datetime.combine(last + timedelta(days=1), time.min, tzinfo=tz),
    )
    response = staff_api.get(
        f"/api/v1/aggregation/temperature/?start_date={first:%Y%m%d}&end_date={last:%Y%m%d}&interval={interval}"
    )
    assert response.status_code == 200, response.content
    answer = response.json()
    assert (answer["metric"], answer["interval"]) == ("temperature", interval)
    assert [r["location"]["loc_id"] for r in answer["results"]] == ["N-ASM-1-LA", "S-FOU-1-FU"]
    expected = brute_force_buckets([r for r in dst_readings if start <= r[1] < end], bucket_of, tz)
    assert answered_buckets(response) == expected
    for result in response.json()["results"]:
        starts = [b["start"] for b in result["buckets"]]
        assert starts == sorted(starts, key=datetime.fromisoformat)


def test_it_gives_the_fall_back_day_25_hours(dst_readings, staff_api):
    roll_up()
    query = f"start_date={FALL_BACK:%Y%m%d}&end_date={FALL_BACK:%Y%m%d}&loc_id=N-ASM-1-LA"
    days = staff_api.get(f"/api/v1/aggregation/temperature/?{query}&interval=day").json()["results"][0]["buckets"]
    assert [(d["start"], d["count"]) for d in days] == [(f"{FALL_BACK}T00:00:00+02:00", 25 * 3 * 2)]
    hours = staff_api.get(f"/api/v1/aggregation/temperature/?{query}&interval=hour").json()["results"][0]["buckets"]
    assert len(hours) == 25
    assert [h["start"] for h in hours[1:5]] == [
        f"{FALL_BACK}T01:00:00+02:00",
        f"{FALL_BACK}T02:00:00+02:00",
        f"{FALL_BACK}T02:00:00+01:00",
        f"{FALL_BACK}T03:00:00+01:00",
    ]
    assert {h["count"] for h in hours} == {3 * 2}


def test_it_aggregates_a_whole_month_of_one_device(dst_readings, staff_api):
    roll_up()
    response = staff_api.get(
        f"/api/v1/aggregation/temperature/?start_date={FALL_BACK:%Y%m}&end_date={FALL_BACK:%Y}&interval=day&device=dev-3"
    )
    assert response.status_code == 200, response.content
    (result,) = response.json()["results"]
    assert result["location"]["loc_id"] == "S-FOU-1-FU"
    assert [b["start"][:10] for b in result["buckets"]] == [str(FALL_BACK + timedelta(days=k)) for k in range(-2, 3)]
    assert sum(b["count"] for b in result["buckets"]) == sum(1 for loc_id, _, _ in dst_readings if loc_id == "S-FOU-1-FU")


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("temperature/?start_date=2026-10&end_date=202610", "start_date"),
        ("temperature/?start_date=20261301&end_date=2026", "start_date"),
        ("temperature/?start_date=2026&end_date=20260230", "end_date"),
        ("temperature/?start_date=2026", "end_date"),
        ("temperature/?start_date=20261026&end_date=20261024", "end_date"),
        ("temperature/?start_date=2026&end_date=2026&interval=week", "interval"),
        ("pressure/?start_date=2026&end_date=2026", "metric"),
    ],
)
def test_it_refuses_bad_aggregation_queries_naming_the_field(plant, staff_api, path, field):
    response = staff_api.get(f"/api/v1/aggregation/{path}")
    assert response.status_code == 400
    assert list(response.data) == [field]


def test_it_tells_a_date_of_the_right_form_that_does_not_exist(plant, staff_api):
    for value in ("20261345", "20260230", "202613"):
        response = staff_api.get(f"/api/v1/aggregation/temperature/?start_date={value}&end_date=2026")
        assert response.json() == {"start_date": [f"{value} is not a real date."]}
    assert staff_api.get("/api/v1/aggregation/temperature/?start_date=2026-1&end_date=2026").json() == {
        "start_date": ["Use yyyy, yyyyMM or yyyyMMdd."]
    }


def test_it_refuses_an_unknown_device_of_an_aggregation(plant, staff_api):
    response = staff_api.get("/api/v1/aggregation/temperature/?start_date=2026&end_date=2026&device=nope")
    assert (response.status_code, list(response.json())) == (400, ["device"])


# --- readings ---------------------------------------------------------------------------------


@pytest.fixture
def readings(plant):
    """25 temperature readings of dev-1 a minute apart, plus readings of other series that must not show."""
    times = every(at_utc(RECENT_DAY, hour=8), at_utc(RECENT_DAY, hour=8) + timedelta(minutes=25), timedelta(minutes=1))
    dev1, dev2 = plant["devices"]
    store_readings(dev1, plant["temperature"], times, lambda at: 20 + at.minute / 10)
    store_readings(dev1, plant["humidity"], times, lambda at: 50.0)
    store_readings(dev2, plant["temperature"], times, lambda at: -1.0)
    return [(at, 20 + at.minute / 10) for at in times]


def test_it_walks_all_readings_with_the_cursor(readings, staff_api):
    url = "/api/v1/readings/?device=dev-1&metric=temperature&page_size=10"
    seen = []
    while url:
        response = staff_api.get(url)
        assert response.status_code == 200, response.data
        seen += response.data["results"]
        url = response.data["next"]
    assert len(seen) == 25
    assert {(r["device"], r["metric"]) for r in seen} == {("dev-1", "temperature")}
    assert [(datetime.fromisoformat(r["time"]), r["value"]) for r in seen] == readings


def test_it_limits_readings_to_start_and_end(readings, staff_api):
    response = staff_api.get(
        f"/api/v1/readings/?device=dev-1&metric=temperature&start={RECENT_DAY}T09:10:00%2B01:00&end={RECENT_DAY}T08:15:00Z"
    )
    assert [r["value"] for r in response.data["results"]] == [value for at, value in readings[10:15]]


@pytest.mark.parametrize("missing", ["device", "metric"])
def test_it_requires_device_and_metric_for_readings(readings, staff_api, missing):
    query = {"device": "dev-1", "metric": "temperature"}
    del query[missing]
    for extra in ({}, {"format": "csv"}):
        response = staff_api.get("/api/v1/readings/", {**query, **extra})
        assert response.status_code == 400
        assert missing in response.content.decode()


@pytest.mark.parametrize("fmt", ["json", "csv"])
def test_it_refuses_readings_of_an_unknown_device_or_metric_as_aggregation_does(readings, staff_api, fmt):
    for field, query in (("device", "device=nope&metric=temperature"), ("metric", "device=dev-1&metric=nope")):
        response = staff_api.get(f"/api/v1/readings/?{query}&format={fmt}")
        assert response.status_code == 400
        assert response["Content-Type"] == "application/json"
        assert response.json() == {field: [f"Unknown {field} 'nope'."]}
    assert staff_api.get("/api/v1/aggregation/nope/?start_date=2026&end_date=2026").json() == {
        "metric": ["Unknown metric 'nope'."]
    }


def test_it_answers_json_for_unknown_api_paths_and_server_errors(plant, staff_api):
    from django.test import RequestFactory

    from iothub.api import api_server_error

    for path in ("/api/v1/nothing/", "/api/nothing", "/api/v1/devices/dev-1/nothing/"):
        response = staff_api.get(path)
        assert (response.status_code, response["Content-Type"], response.json()) == (
            404,
            "application/json",
            {"detail": ["Not found."]},
        )
    assert b"<html" in staff_api.get("/no-such-page/").content.lower()  # pages elsewhere stay pages
    error = api_server_error(RequestFactory().get("/api/v1/realtime/"))
    assert (error.status_code, error["Content-Type"], error.content) == (
        500,
        "application/json",
        b'{"detail": ["Server error."]}',
    )


def test_it_streams_readings_as_csv(readings):
    token = token_for("staff")

    async def download():
        response = await AsyncClient().get(
            "/api/v1/readings/",
            {"device": "dev-1", "metric": "temperature", "format": "csv"},
            headers={"authorization": f"Token {token}"},
        )
        return response, b"".join([chunk async for chunk in response.streaming_content])

    response, body = async_to_sync(download)()
    assert response.status_code == 200
    assert response.streaming and response.is_async
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    rows = list(csv.reader(io.StringIO(body.decode())))
    assert rows[0] == ["time", "device", "metric", "value"]
    assert [(datetime.fromisoformat(t), d, m, float(v)) for t, d, m, v in rows[1:]] == [
        (at, "dev-1", "temperature", value) for at, value in readings
    ]


# --- alerts -----------------------------------------------------------------------------------


@pytest.fixture
def alerts(plant):
    """An open warning of dev-1, an older acknowledged critical of dev-2 and a resolved one elsewhere."""
    south = Location.objects.create(loc_id="S-FOU-1-FU", factory="South")
    dev3 = Device.objects.create(device_id="dev-3", device_type=plant["type"], location=south)
    dev1, dev2 = plant["devices"]
    now = timezone.now()
    return {
        "open": Alert.objects.create(
            device=dev1, metric=plant["temperature"], level="warning", opened_at=now, first_value=31, peak_value=32
        ),
        "acknowledged": Alert.objects.create(
            device=dev2, metric=plant["temperature"], level="critical", state="acknowledged", opened_at=now - timedelta(hours=1)
        ),
        "resolved": Alert.objects.create(
            device=dev3, metric=plant["humidity"], level="warning", state="resolved", opened_at=now - timedelta(hours=2)
        ),
    }


def test_it_lists_alerts_newest_first_with_filters(alerts, staff_api):
    def ids(query=""):
        response = staff_api.get(f"/api/v1/alerts/?{query}")
        assert response.status_code == 200, response.data
        return [a["id"] for a in response.data["results"]]

    assert ids() == [alerts[name].pk for name in ("open", "acknowledged", "resolved")]
    assert ids("state=open") == [alerts["open"].pk]
    assert ids("level=critical") == [alerts["acknowledged"].pk]
    assert ids("device=dev-3") == [alerts["resolved"].pk]
    assert ids("loc_id=N-ASM-1-LA&level=warning") == [alerts["open"].pk]
    assert staff_api.get("/api/v1/alerts/?state=closed").status_code == 400
    detail = staff_api.get(f"/api/v1/alerts/{alerts['open'].pk}/").data
    assert {k: detail[k] for k in ("device", "metric", "level", "state", "first_value", "peak_value", "location")} == {
        "device": "dev-1",
        "metric": "temperature",
        "level": "warning",
        "state": "open",
        "first_value": 31.0,
        "peak_value": 32.0,
        "location": "N-ASM-1-LA",
    }


def test_it_acknowledges_then_resolves_an_alert(alerts, staff_api):
    url = f"/api/v1/alerts/{alerts['open'].pk}"
    acknowledged = staff_api.post(f"{url}/acknowledge/", {"note": "Door left open"}, format="json")
    assert acknowledged.status_code == 200, acknowledged.data
    assert (acknowledged.data["state"], acknowledged.data["acknowledged_by"], acknowledged.data["note"]) == (
        "acknowledged",
        "staff-user",
        "Door left open",
    )
    resolved = staff_api.post(f"{url}/resolve/", {}, format="json")
    assert resolved.status_code == 200, resolved.data
    for action in ("acknowledge", "resolve"):
        again = staff_api.post(f"{url}/{action}/", {"note": "too late"}, format="json")
        assert again.status_code == 409
        assert again.json() == {
            "detail": [f"Alert {alerts['open'].pk} is already resolved. Nothing changed."],
            "state": ["resolved"],
        }
    alert = Alert.objects.get(pk=alerts["open"].pk)
    assert (alert.state, alert.acknowledged_by.username, alert.note) == ("resolved", "staff-user", "Door left open")
    assert alert.acknowledged_at <= alert.resolved_at
    events = [(e.kind, e.user.username, e.note) for e in AlertEvent.objects.filter(alert=alert)]
    assert events == [("acknowledged", "staff-user", "Door left open"), ("resolved", "staff-user", "")]


def test_it_refuses_an_overlong_note(alerts, staff_api):
    response = staff_api.post(f"/api/v1/alerts/{alerts['open'].pk}/acknowledge/", {"note": "x" * 1001}, format="json")
    assert response.status_code == 400
    assert list(response.data) == ["note"]
    assert Alert.objects.get(pk=alerts["open"].pk).state == "open"


def test_it_shelves_and_unshelves_an_alert(alerts, staff_api):
    url = f"/api/v1/alerts/{alerts['acknowledged'].pk}"
    shelved = staff_api.post(f"{url}/shelve/", {"minutes": 90, "note": "valve replaced, running in"}, format="json")
    assert shelved.status_code == 200, shelved.data
    until = datetime.fromisoformat(shelved.data["shelved_until"])
    assert shelved.data["state"] == "shelved"
    assert until == pytest.approx(timezone.now() + timedelta(minutes=90), abs=timedelta(seconds=10))
    assert staff_api.get("/api/v1/alerts/?state=shelved").data["count"] == 1
    unshelved = staff_api.post(f"{url}/unshelve/", {}, format="json")
    assert (unshelved.status_code, unshelved.data["state"], unshelved.data["shelved_until"]) == (200, "acknowledged", None)
    events = list(AlertEvent.objects.filter(alert=alerts["acknowledged"]).values_list("kind", "user__username", "note"))
    assert events == [("shelved", "staff-user", "valve replaced, running in"), ("unshelved", "staff-user", "")]


@pytest.mark.parametrize("minutes", [0, 1441, -5, "soon", None])
def test_it_refuses_shelving_minutes_outside_a_day(alerts, staff_api, minutes):
    response = staff_api.post(f"/api/v1/alerts/{alerts['open'].pk}/shelve/", {"minutes": minutes}, format="json")
    assert response.status_code == 400
    assert list(response.data) == ["minutes"]
    assert Alert.objects.get(pk=alerts["open"].pk).state == "open"


@pytest.mark.parametrize("action", ["shelve", "unshelve"])
def test_it_answers_409_when_shelving_a_resolved_alert(alerts, staff_api, action):
    response = staff_api.post(f"/api/v1/alerts/{alerts['resolved'].pk}/{action}/", {"minutes": 10}, format="json")
    assert response.status_code == 409
    assert "resolved" in str(response.data)
    assert not AlertEvent.objects.filter(alert=alerts["resolved"]).exists()


def test_its_errors_speak_the_clients_language(alerts, staff_api, admin_api):
    from django.utils import translation
    from rest_framework.fields import Field

    korean = {"HTTP_ACCEPT_LANGUAGE": "ko-KR,ko;q=0.9"}
    conflict = staff_api.post(f"/api/v1/alerts/{alerts['resolved'].pk}/shelve/", {"minutes": 10}, format="json", **korean)
    assert (conflict.status_code, conflict.json()) == (
        409,
        {"detail": [f"알림 {alerts['resolved'].pk}은(는) 이미 해결됨 상태입니다. 변경된 것이 없습니다."], "state": ["resolved"]},
    )
    assert staff_api.get("/api/v1/no-such-thing/", **korean).json() == {"detail": ["찾을 수 없습니다."]}
    invalid = admin_api.post("/api/v1/locations/", {}, format="json", **korean)
    with translation.override("ko"):
        required = str(Field.default_error_messages["required"])
    assert invalid.status_code == 400 and invalid.json()["loc_id"] == [required] and required != "This field is required."
    english = staff_api.post(f"/api/v1/alerts/{alerts['resolved'].pk}/shelve/", {"minutes": 10}, format="json")
    assert english.json()["detail"] == [f"Alert {alerts['resolved'].pk} is already resolved. Nothing changed."]


def test_it_round_trips_a_rate_of_change_threshold_and_shows_it_in_force(plant, admin_api, staff_api):
    body = {"metric": "temperature", "device": "dev-1", "rate_max": 1.5, "rate_critical_max": 4, "rate_window": 120}
    created = admin_api.post("/api/v1/thresholds/", body, format="json")
    assert created.status_code == 201, created.data
    assert {k: created.data[k] for k in body} == {**body, "rate_critical_max": 4.0}
    effective = {row["metric"]: row for row in staff_api.get("/api/v1/thresholds/effective/?device=dev-1").data}
    assert (effective["temperature"]["scope"], effective["temperature"]["threshold"]["rate_max"]) == ("device dev-1", 1.5)
    refused = admin_api.patch(f"/api/v1/thresholds/{created.data['id']}/", {"rate_critical_max": 1}, format="json")
    assert (refused.status_code, list(refused.data)) == (400, ["rate_critical_max"])
    for field, value in [("rate_max", -1), ("rate_window", 5), ("predict_minutes", 10), ("predict_window", 1)]:
        assert list(admin_api.patch(f"/api/v1/thresholds/{created.data['id']}/", {field: value}, format="json").data) == [field]


# --- maintenance windows ---------------------------------------------------------------------------


def window_body(**fields):
    start = timezone.now() + timedelta(hours=1)
    return {
        "loc_id": "N-ASM-1-LA",
        "start": start.isoformat(),
        "end": (start + timedelta(hours=2)).isoformat(),
        "reason": "line overhaul",
        **fields,
    }


def test_it_round_trips_maintenance_windows(plant, admin_api, staff_api):
    created = admin_api.post("/api/v1/maintenance-windows/", window_body(), format="json")
    assert created.status_code == 201, created.data
    assert (created.data["loc_id"], created.data["device"], created.data["created_by"]) == ("N-ASM-1-LA", None, "admin-user")
    device_window = admin_api.post("/api/v1/maintenance-windows/", window_body(loc_id=None, device="dev-1"), format="json")
    assert device_window.status_code == 201, device_window.data  # a device window may overlap its location's
    moved = admin_api.patch(f"/api/v1/maintenance-windows/{created.data['id']}/", {"reason": "overhaul, part 2"}, format="json")
    assert (moved.status_code, moved.data["reason"]) == (200, "overhaul, part 2")
    listed = staff_api.get("/api/v1/maintenance-windows/?current=true&loc_id=N-ASM-1-LA")
    assert [w["id"] for w in listed.data["results"]] == [created.data["id"]]


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"start": "2020-01-01T06:00:00Z", "end": "2020-01-01T08:00:00Z"}, "end"),  # in the past
        ({"end": (timezone.now() - timedelta(hours=5)).isoformat()}, "end"),  # ends before it starts
        ({"start": (timezone.now() + timedelta(hours=2)).isoformat()}, "start"),  # overlaps the existing one
        ({"device": "dev-1"}, "non_field_errors"),  # a device and a location
        ({"loc_id": None}, "non_field_errors"),  # neither
        ({"loc_id": "NOWHERE"}, "loc_id"),
        ({"reason": ""}, "reason"),
    ],
)
def test_it_refuses_invalid_maintenance_windows_naming_the_field(plant, admin_api, fields, field):
    assert admin_api.post("/api/v1/maintenance-windows/", window_body(), format="json").status_code == 201
    response = admin_api.post("/api/v1/maintenance-windows/", window_body(**fields), format="json")
    assert response.status_code == 400
    assert list(response.data) == [field], response.data


def test_it_shows_suppressed_crossings_in_the_alert_history_of_a_device(plant, staff_api):
    record = Alert.objects.create(
        device=plant["devices"][0],
        metric=plant["temperature"],
        level="critical",
        state="suppressed",
        opened_at=timezone.now(),
        first_value=36.0,
    )
    response = staff_api.get("/api/v1/alerts/?device=dev-1")
    assert [(a["id"], a["state"]) for a in response.data["results"]] == [(record.pk, "suppressed")]


# --- alarm KPIs -------------------------------------------------------------------------------


def test_it_answers_the_alarm_kpis_of_a_plant_day(alarm_history, staff_api):
    day, day_before = f"{alarm_history:%Y%m%d}", f"{alarm_history - timedelta(days=1):%Y%m%d}"
    response = staff_api.get(f"/api/v1/alerts/kpis/?start={day}&end={day}")
    assert response.status_code == 200, response.data
    kpis = response.data
    assert (kpis["alarms"], kpis["alarms_per_hour"]) == (16, {"average": round(16 / 24, 3), "peak": 12, "target": 6})
    assert (kpis["peak_alarms_per_10min"], kpis["alarms_per_10min"]["average"]) == (12, round(16 / 144, 3))
    assert kpis["flood_percent"] == round(100 / 144, 3)
    assert kpis["chattering"] == [{"device": "dev-1", "metric": "temperature", "alarms": 12, "chattering": 1}]
    assert kpis["top"] == [
        {"device": "dev-1", "metric": "temperature", "alarms": 12, "share_percent": 75.0},
        {"device": "dev-2", "metric": "temperature", "alarms": 3, "share_percent": 18.75},
        {"device": "dev-3", "metric": "temperature", "alarms": 1, "share_percent": 6.25},
    ]
    assert (kpis["stale"], kpis["shelved"], kpis["suppressed"]) == (1, 1, 1)
    north = staff_api.get(f"/api/v1/alerts/kpis/?start={day}&end={day}&loc_id=N-ASM-1-LA").data
    assert (north["alarms"], [t["device"] for t in north["top"]], north["stale"]) == (15, ["dev-1", "dev-2"], 1)
    south = staff_api.get(f"/api/v1/alerts/kpis/?start={day_before}&end={day}&factory=South").data
    assert (south["alarms"], south["suppressed"], south["alarms_per_hour"]["average"]) == (2, 1, round(2 / 48, 3))


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("start=20260302", "end"),
        ("start=2026-03-02&end=20260302", "start"),
        ("start=20260303&end=20260302", "end"),
        ("start=2024&end=2025", "end"),  # two years
        ("start=0007&end=8060", "end"),  # found by the API fuzzer: the worker computed for minutes
    ],
)
def test_it_refuses_bad_kpi_periods_naming_the_field(plant, staff_api, query, field):
    response = staff_api.get(f"/api/v1/alerts/kpis/?{query}")
    assert (response.status_code, list(response.data)) == (400, [field])


def test_it_gives_the_kpis_of_a_whole_leap_year(plant, staff_api):
    assert staff_api.get("/api/v1/alerts/kpis/?start=2024&end=2024").status_code == 200


# --- dead letters, schema, throttling -----------------------------------------------------------


def test_it_shows_dead_letters_to_admins_only(plant, admin_api, staff_api):
    now = timezone.now()
    DeadLetter.objects.create(
        source="mqtt", topic="sensors/x", received_at=now, payload="{", reason="malformed_json", detail="line 1"
    )
    DeadLetter.objects.create(source="kafka", topic="sensors/y", received_at=now, payload="{}", reason="unknown_device")
    response = admin_api.get("/api/v1/deadletters/?reason=malformed_json")
    assert response.status_code == 200
    (row,) = response.data["results"]
    assert {k: v for k, v in row.items() if k not in ("id", "received_at")} == {
        "source": "mqtt",
        "topic": "sensors/x",
        "payload": "{",
        "reason": "malformed_json",
        "detail": "line 1",
    }
    assert len(admin_api.get("/api/v1/deadletters/?source=kafka").data["results"]) == 1
    assert staff_api.get("/api/v1/deadletters/").status_code == 403


def test_it_serves_the_schema_and_self_contained_docs(plant, staff_api):
    schema = staff_api.get("/api/schema/")
    assert schema.status_code == 200
    assert b"/api/v1/aggregation/{metric}/" in schema.content
    docs = staff_api.get("/api/docs/")
    assert docs.status_code == 200
    html = docs.content.decode()
    assert "cdn" not in html.lower()
    assert not [url for url in re.findall(r"""https?://[^\s"'<>]+""", html) if not url.startswith("http://testserver/")]
    assets = re.findall(r'(?:src|href)="(/static/[^"]+)"', html)
    assert assets and all(asset.startswith("/static/drf_spectacular_sidecar/") for asset in assets)
    assert all(staff_api.get(asset).status_code == 200 for asset in assets)


def test_it_throttles_per_token(plant, settings, staff_api):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"api": "3/min"}}
    other = api_client("admin")
    responses = [staff_api.get("/api/v1/metrics/") for _ in range(4)]
    assert [response.status_code for response in responses] == [200, 200, 200, 429]
    assert 0 < int(responses[-1]["Retry-After"]) <= 60  # until the minute's budget starts again
    assert other.get("/api/v1/metrics/").status_code == 200


def test_it_shows_the_threshold_in_force_for_each_metric_of_a_device(plant, staff_api):
    Threshold.objects.create(metric=plant["temperature"], location=plant["location"], warning_max=25)
    response = staff_api.get("/api/v1/thresholds/effective/?device=dev-1")
    assert response.status_code == 200
    by_metric = {row["metric"]: row for row in response.json()}
    assert by_metric["temperature"]["scope"] == "location N-ASM-1-LA"
    assert by_metric["temperature"]["threshold"]["warning_max"] == 25
    assert by_metric["humidity"] == {"metric": "humidity", "scope": None, "threshold": None}
    assert staff_api.get("/api/v1/thresholds/effective/?device=nope").status_code == 400


def test_it_accepts_any_valid_iso_offset_for_readings(readings, staff_api):
    # +22:00 is valid ISO 8601 for Python but not for PostgreSQL: found by schemathesis.
    for fmt in ("json", "csv"):
        response = staff_api.get(
            f"/api/v1/readings/?device=dev-1&metric=temperature&end=2025-07-22T00:37:00%2B22:00&format={fmt}"
        )
        assert response.status_code == 200


def test_it_audits_api_changes_of_the_device_master(plant, admin_api):
    from django.contrib.admin.models import LogEntry

    admin_api.patch("/api/v1/devices/dev-2/", {"name": "Boiler sensor"}, format="json")
    threshold_id = plant["threshold"].pk
    admin_api.delete(f"/api/v1/thresholds/{threshold_id}/")
    admin_api.delete("/api/v1/locations/N-ASM-1-LA/")  # refused (409): no entry
    entries = [(e.object_repr, e.get_action_flag_display(), e.user.username) for e in LogEntry.objects.order_by("pk")]
    assert entries == [("dev-2", "Change", "admin-user"), (str(plant["threshold"]), "Deletion", "admin-user")]
    assert LogEntry.objects.order_by("pk").first().change_message == "via API (PATCH /api/v1/devices/dev-2/)"


def test_it_answers_hostile_keys_and_page_bounds_without_errors(plant, admin_api):
    # Found by schemathesis: values PostgreSQL refuses must be client errors, not 500s.
    assert admin_api.get("/api/v1/device-types/?limit=2283768659002228998144&offset=99999999999999999999").status_code == 200
    body = {"name": "B\u0004v", "metrics": [], "primary_metric": "\u0000", "expected_interval": 5}
    response = admin_api.post("/api/v1/device-types/", body, format="json")
    assert response.status_code == 400 and "primary_metric" in response.json()
    assert admin_api.get("/api/v1/devices/dev%001/").status_code == 404


# --- the real server ------------------------------------------------------------------------------


def test_it_serves_many_requests_over_a_few_pooled_database_connections(plant, hub, django_user_model):
    """daphne runs every request in a thread of its own; its connections come from a pool."""
    user = django_user_model.objects.create_user("pooled", password="pool-pw-123", is_staff=True)
    token = issue_api_token(user=user, name="pool test")[1]
    base = hub.web()

    def server_connections():
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()")
            return cursor.fetchone()[0]

    before = server_connections()
    for _ in range(40):
        request = urllib.request.Request(
            f"{base}/api/v1/realtime/?loc_id=N-ASM-1-LA", headers={"Authorization": f"Token {token}"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.status == 200
    assert server_connections() - before <= 3


def test_a_fresh_server_answers_concurrent_schema_requests_alike(plant, hub, django_user_model):
    """drf-spectacular's generator keeps state in globals; integrators' tools fetching the schema at
    once made a fresh daphne answer some of them with a 500 (found by running two schemathesis at once)."""
    user = django_user_model.objects.create_user("schema", password="schema-pw-123", is_staff=True)
    token = issue_api_token(user=user, name="schema test")[1]
    base = hub.web()

    def fetch(_):
        request = urllib.request.Request(f"{base}/api/schema/?format=json", headers={"Authorization": f"Token {token}"})
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read()

    with ThreadPoolExecutor(max_workers=6) as pool:
        answers = list(pool.map(fetch, range(6)))
    assert {status for status, _ in answers} == {200}
    assert len({body for _, body in answers}) == 1
