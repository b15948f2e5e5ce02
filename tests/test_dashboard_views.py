"""Dashboard views through Django's test client on real PostgreSQL and Redis: logins, query
budgets at any plant size, alert counts at every level of the tree, history resolution, pipeline health."""

import re
from datetime import timedelta

import pytest
from django.core.cache import cache
from django.urls import reverse
from django.utils import timezone

from apps.alerts.models import Alert
from apps.devices.models import Device, DeviceType, Location, Metric
from apps.telemetry.latest import store_latest
from apps.telemetry.metrics import INDEX_KEY, SUMMARY_TTL, summary_key
from apps.telemetry.models import DeadLetter, Reading
from apps.telemetry.rollups import recompute_range

from .support import now_ms

# session, user, devices, device types, their metrics, locations, active alerts, factories, alert feed
OVERVIEW_QUERIES = 9


@pytest.fixture
def make_plant(db):
    """make_plant(devices): two factories with two locations each, `devices` env sensors spread over them."""

    def make(devices):
        temperature = Metric.objects.create(key="temperature", unit="°C")
        humidity = Metric.objects.create(key="humidity", unit="%")
        device_type = DeviceType.objects.create(name="env", primary_metric=temperature, expected_interval=10)
        device_type.metrics.add(temperature, humidity)
        locations = [
            Location.objects.create(
                loc_id=f"{factory[0]}-{floor}-{area}", factory=factory, building="Main", floor=floor, area=area
            )
            for factory in ("North", "South")
            for floor, area in (("1", "A"), ("2", "B"))
        ]
        Device.objects.bulk_create(
            Device(device_id=f"dev-{n:04d}", device_type=device_type, location=locations[n % len(locations)])
            for n in range(devices)
        )
        store_latest(
            [
                {"device": f"dev-{n:04d}", "metric": "temperature", "value": 20.0 + n % 10, "ts": now_ms(), "status": "normal"}
                for n in range(devices)
            ]
        )
        return {"locations": locations, "temperature": temperature, "humidity": humidity, "type": device_type}

    return make


@pytest.fixture
def staff_client(client, django_user_model):
    client.force_login(django_user_model.objects.create_user("operator", is_staff=True))
    return client


def open_alert(device_id, metric, level, state=Alert.State.OPEN):
    return Alert.objects.create(
        device=Device.objects.get(device_id=device_id),
        metric=metric,
        level=level,
        state=state,
        opened_at=timezone.now(),
        first_value=36.0,
        peak_value=36.0,
        last_value=36.0,
    )


def pills(html, selector_attr, value):
    """The (critical, warning) pill counts in the header of the element with selector_attr=value."""
    match = re.search(rf'{selector_attr}="{re.escape(value)}"[^>]*>\s*<header>(.*?)</header>', html, re.S)
    counts = dict(re.findall(r'data-level="(\w+)" data-count="(\d+)"', match.group(1)))
    return int(counts["critical"]), int(counts["warning"])


@pytest.mark.parametrize(
    ("method", "name", "args"),
    [
        ("get", "dashboard:overview", []),
        ("get", "dashboard:device", ["dev-0001"]),
        ("get", "dashboard:alerts", []),
        ("get", "dashboard:health", []),
        ("get", "dashboard:pipeline-json", []),
        ("post", "dashboard:alert-acknowledge", [1]),
        ("post", "dashboard:alert-resolve", [1]),
        ("post", "dashboard:alert-shelve", [1]),
        ("post", "dashboard:alert-unshelve", [1]),
    ],
)
def test_it_sends_anonymous_users_to_the_login_page(client, make_plant, method, name, args):
    make_plant(devices=2)
    url = reverse(name, args=args)
    response = getattr(client, method)(url)
    assert response.status_code == 302
    assert response["Location"] == f"{reverse('login')}?next={url}"


@pytest.mark.parametrize("devices", [1, 40, 400])
def test_it_renders_the_overview_with_a_fixed_number_of_queries_at_any_plant_size(
    staff_client, make_plant, devices, django_assert_num_queries
):
    plant = make_plant(devices)
    for n in range(min(devices, 6)):
        open_alert(f"dev-{n:04d}", plant["temperature"], "warning" if n % 2 else "critical")
    with django_assert_num_queries(OVERVIEW_QUERIES):
        response = staff_client.get("/")
    html = response.content.decode()
    assert f"{devices} device{'s' if devices > 1 else ''}</span>" in html
    assert html.count('data-cell="dev-') == 2 * devices
    # Every cell names its metric and unit; a legend row above the devices of a tile, too.
    assert 'data-cell="dev-0000|temperature" title="temperature (°C)" data-ts=' in html and ">20.0</span>" in html
    assert '<span class="cell head" title="humidity (%)">Humi %</span>' in html


def test_it_counts_open_alerts_at_every_level_of_the_tree(staff_client, make_plant):
    plant = make_plant(devices=8)
    temperature, humidity = plant["temperature"], plant["humidity"]
    # dev-0000 and dev-0004 are at N-1-A, dev-0001 at N-2-B, dev-0002 at S-1-A (see make_plant).
    open_alert("dev-0000", temperature, "critical")
    open_alert("dev-0000", humidity, "warning", state=Alert.State.ACKNOWLEDGED)
    open_alert("dev-0004", temperature, "warning")
    open_alert("dev-0001", None, "offline")
    open_alert("dev-0002", temperature, "warning")
    open_alert("dev-0003", temperature, "critical", state=Alert.State.RESOLVED)

    html = staff_client.get("/").content.decode()

    assert pills(html, "data-loc", "N-1-A") == (1, 2)
    assert pills(html, "data-loc", "N-2-B") == (1, 0)  # offline counts as critical
    assert pills(html, "data-loc", "S-1-A") == (0, 1)
    assert pills(html, "data-loc", "S-2-B") == (0, 0)
    floors = re.findall(r'<div class="floor" data-counts>\s*<header><h4>Floor (\w+)</h4>(.*?)</header>', html, re.S)
    assert [(floor, re.findall(r'data-count="(\d+)"', counts)) for floor, counts in floors] == [
        ("1", ["1", "2"]),
        ("2", ["1", "0"]),
        ("1", ["0", "1"]),
        ("2", ["0", "0"]),
    ]
    factories = re.findall(
        r'<section class="factory" data-factory="\w+" data-counts>\s*<header><h2>(\w+)</h2>(.*?)</header>', html, re.S
    )
    assert [(name, re.findall(r'data-count="(\d+)"', counts)) for name, counts in factories] == [
        ("North", ["2", "2"]),
        ("South", ["0", "1"]),
    ]
    assert 'id="total-warning" data-level="warning" data-count="3"' in html
    assert 'id="total-critical" data-level="critical" data-count="2"' in html


def test_it_filters_the_overview_by_factory_and_search(staff_client, make_plant):
    make_plant(devices=8)
    north = staff_client.get("/?factory=North").content.decode()
    assert "4 devices" in north and "S-1-A" not in north
    found = staff_client.get("/?q=dev-0005").content.decode()
    assert "1 device</span>" in found and 'data-device="dev-0005"' in found


def test_it_draws_history_from_raw_readings_hourly_and_daily_rollups(staff_client, make_plant, django_assert_max_num_queries):
    plant = make_plant(devices=1)
    device = Device.objects.get(device_id="dev-0000")
    # Every 2 h for 40 days, at half past, the newest between 30 and 90 minutes ago.
    newest = (timezone.now() - timedelta(hours=1)).replace(minute=30, second=0, microsecond=0)
    times = [newest - timedelta(hours=h) for h in range(0, 24 * 40, 2)]
    Reading.objects.bulk_create(
        Reading(device=device, metric=plant["temperature"], time=t, value=20.0 + t.hour % 5) for t in times
    )
    recompute_range(times[-1], newest + timedelta(hours=1))

    def chart(query):
        with django_assert_max_num_queries(12):
            response = staff_client.get(f"/devices/dev-0000/{query}")
        return response.context["chart"]

    raw = chart("?range=24h")
    assert raw["resolution"] == "raw" and raw["live"]
    temperature = raw["series"][1]
    assert temperature["key"] == "temperature" and len(temperature["y"]) == 12 and "min" not in temperature

    hourly = chart("?range=30d")
    assert (hourly["resolution"], hourly["live"]) == ("hour", False)
    temperature = hourly["series"][1]
    assert len(temperature["x"]) == 30 * 12  # one bucket per hour with a reading
    assert temperature["min"] == temperature["max"] == temperature["y"]  # one reading per bucket

    daily = chart("?range=1y")
    assert daily["resolution"] == "day"
    temperature = daily["series"][1]
    assert 40 <= len(temperature["x"]) <= 42  # the local days touched by 40 days of readings
    assert all(lo <= avg <= hi for lo, avg, hi in zip(temperature["min"], temperature["y"], temperature["max"], strict=True))
    assert max(temperature["max"]) == 24.0 and min(temperature["min"]) == 20.0
    assert temperature["bands"] is None  # no threshold in this plant


def test_it_takes_a_custom_range_and_explains_a_bad_one(staff_client, make_plant):
    make_plant(devices=1)
    response = staff_client.get("/devices/dev-0000/?range=custom&start=2025-01-01T00:00&end=2025-03-01T00:00")
    chart = response.context["chart"]
    assert (chart["resolution"], chart["live"]) == ("day", False)
    assert chart["start"].startswith("2025-01-01T00:00")
    bad = staff_client.get("/devices/dev-0000/?range=custom&start=2025-03-01T00:00&end=2025-01-01T00:00")
    assert bad.context["chart"]["resolution"] == "raw"
    assert "Choose a start before the end." in bad.content.decode()


def test_it_lets_only_plant_staff_act_on_alerts(client, make_plant, django_user_model):
    plant = make_plant(devices=1)
    alert = open_alert("dev-0000", plant["temperature"], "critical")
    client.force_login(django_user_model.objects.create_user("viewer"))
    assert b'class="ack"' not in client.get("/alerts/").content
    assert client.post(f"/alerts/{alert.pk}/acknowledge/").status_code == 403
    alert.refresh_from_db()
    assert alert.state == Alert.State.OPEN


def test_it_shelves_from_the_console_and_shows_shelved_alerts_apart(staff_client, make_plant):
    plant = make_plant(devices=2)
    kept, shelved = (open_alert(f"dev-000{n}", plant["temperature"], "critical") for n in (0, 1))
    assert b'class="shelve"' in staff_client.get("/alerts/").content
    assert staff_client.post(f"/alerts/{shelved.pk}/shelve/", {"minutes": "17", "note": "x"}).status_code == 400
    response = staff_client.post(f"/alerts/{shelved.pk}/shelve/", {"minutes": "60", "note": "pump swap", "next": "/alerts/"})
    assert (response.status_code, response["Location"]) == (302, "/alerts/")
    page = staff_client.get("/alerts/")
    assert [a.pk for a in page.context["alerts"]] == [kept.pk]
    assert [(a.pk, a.shelving_note) for a in page.context["shelved"]] == [(shelved.pk, "pump swap")]
    html = page.content.decode()
    assert html.index(f'data-alert="{kept.pk}"') < html.index('id="shelved-rows"') < html.index(f'data-alert="{shelved.pk}"')
    overview = staff_client.get("/")
    assert overview.context["totals"] == {"warning": 0, "critical": 1}
    staff_client.post(f"/alerts/{shelved.pk}/unshelve/")
    shelved.refresh_from_db()
    assert (shelved.state, shelved.shelved_until) == ("open", None)


def test_it_sums_the_ingest_processes_for_the_pipeline_json(staff_client):
    at = timezone.now().timestamp() - 3
    summaries = [
        {
            "name": "ingest-a",
            "source": "kafka",
            "at": at,
            "messages_per_s": 900.0,
            "readings_per_s": 1800.0,
            "dead_letters_per_s": 9.0,
            "messages": 9000,
            "readings": 18000,
            "dead_letters": 90,
            "dead_letters_by_reason": {"malformed_json": 60, "unknown_device": 30},
            "latency_p50": 0.02,
            "latency_p99": 0.25,
            "kafka_lag": 120,
        },
        {
            "name": "ingest-b",
            "source": "kafka",
            "at": at,
            "messages_per_s": 100.0,
            "readings_per_s": 200.0,
            "dead_letters_per_s": 1.0,
            "messages": 1000,
            "readings": 2000,
            "dead_letters": 10,
            "dead_letters_by_reason": {"unknown_device": 10},
            "latency_p50": 0.01,
            "latency_p99": 0.5,
            "kafka_lag": 30,
        },
    ]
    # Written where ingest processes write them: the real cache (Redis).
    cache.set(INDEX_KEY, {s["name"]: s["at"] for s in summaries}, timeout=None)
    cache.set_many({summary_key(s["name"]): s for s in summaries}, timeout=SUMMARY_TTL)
    health = staff_client.get("/health/pipeline.json").json()
    assert (health["messages_per_s"], health["readings_per_s"], health["dead_letters_per_s"]) == (1000.0, 2000.0, 10.0)
    assert (health["dead_letter_ratio"], health["kafka_lag"], health["latency_p99"]) == (0.01, 150, 0.5)
    assert health["dead_letters_by_reason"] == [
        {"reason": "malformed_json", "label": "malformed JSON", "count": 60},
        {"reason": "unknown_device", "label": "unknown device", "count": 40},
    ]
    assert [(p["name"], round(p["report_age_s"])) for p in health["processes"]] == [("ingest-a", 3), ("ingest-b", 3)]
    # Capacity: 2 processes × 15,000 msg/s measured; 1,000 msg/s now is 3.3 % of it.
    capacity = health["capacity"]
    assert (capacity["total"], round(capacity["load_percent"], 1)) == (30000, 3.3)
    assert capacity["sensors"][2] == {"interval_s": 60, "sensors": 1_800_000}


def test_it_shows_the_latest_dead_letters_to_staff_with_the_admin_link_for_superusers(client, db, django_user_model):
    for n in range(25):
        DeadLetter.objects.create(
            source="mqtt",
            topic=f"sensors/ghost-{n}",
            received_at=timezone.now() + timedelta(seconds=n),
            payload='{"temperature": 20}',
            reason=DeadLetter.Reason.UNKNOWN_DEVICE,
        )
    admin_link = reverse("admin:telemetry_deadletter_changelist")

    client.force_login(django_user_model.objects.create_user("viewer"))
    assert b"sensors/ghost-" not in client.get("/health/").content

    client.force_login(django_user_model.objects.create_user("operator", is_staff=True))
    html = client.get("/health/").content.decode()
    assert re.findall(r"sensors/ghost-(\d+)", html) == [str(n) for n in range(24, 4, -1)]
    assert "unknown device" in html and admin_link not in html

    client.force_login(django_user_model.objects.create_superuser("admin"))
    assert admin_link in client.get("/health/").content.decode()


def test_the_alarm_kpi_page_shows_the_kpis_of_the_chosen_days_and_place_against_eemua_191(
    alarm_history, staff_client, client, django_user_model
):
    from apps.alerts.kpis import alarm_kpis

    day, day_before = f"{alarm_history:%Y-%m-%d}", f"{alarm_history - timedelta(days=1):%Y-%m-%d}"
    page = staff_client.get(f"/alarms/kpis/?start={day}&end={day}&factory=&loc_id=")
    assert page.status_code == 200
    kpis, chart = page.context["kpis"], page.context["chart"]
    assert kpis == alarm_kpis(start=kpis["start"], end=kpis["end"], now=timezone.now())
    assert (kpis["alarms"], kpis["peak_alarms_per_10min"], kpis["alarms_per_hour"]["peak"]) == (16, 12, 12)
    assert (len(chart["per_10min"]), len(chart["per_hour"]), sum(chart["per_hour"])) == (144, 24, 16)
    assert (chart["hours"][10], chart["per_hour"][10]) == (f"{day} 10:00", 12)  # plant-local hours
    html = page.content.decode()
    stat = {
        k: " ".join(re.sub(r"<[^>]+>", " ", v).split()) for k, v in re.findall(r'data-kpi="(\w+)">(.*?)</article>', html, re.S)
    }
    assert stat["alarms_per_hour"].startswith("Alarms per hour (average) 0.67 ✓ manageable")
    assert stat["peak_per_hour"] == "Busiest hour 12 ✗ over target · target ≤ 6"
    assert stat["peak_per_10min"] == "Peak alarms per 10 minutes 12 ✗ flood · target ≤ 10"
    assert stat["stale"].startswith("Stale alarms 1 ✗ to review")
    top_table = html[html.index('id="top-alarms"') : html.index("</table>", html.index('id="top-alarms"'))]
    top = re.findall(r'<td><a href="/devices/([\w-]+)/">.*?</td><td>(\w+)</td><td class="num">(\d+)</td>', top_table)
    assert top == [("dev-1", "temperature", "12"), ("dev-2", "temperature", "3"), ("dev-3", "temperature", "1")]
    south = staff_client.get(f"/alarms/kpis/?start={day}&end={day}&factory=South").context["kpis"]
    assert (south["alarms"], [row["device"] for row in south["top"]]) == (1, ["dev-3"])
    north = staff_client.get(f"/alarms/kpis/?start={day}&end={day}&loc_id=N-ASM-1-LA").context["kpis"]
    assert north["alarms"] == 15
    wrong = staff_client.get(f"/alarms/kpis/?start={day}&end={day_before}")
    assert wrong.context["kpis"] is None and "Choose an end on or after the start." in wrong.content.decode()
    assert 'href="/alarms/kpis/"' in html
    client.force_login(django_user_model.objects.create_user("viewer"))
    assert client.get("/alarms/kpis/").status_code == 403
    assert 'href="/alarms/kpis/"' not in client.get("/").content.decode()


def test_the_alarm_kpi_page_opens_on_the_last_seven_days(staff_client, make_plant):
    make_plant(devices=1)
    page = staff_client.get("/alarms/kpis/")
    kpis = page.context["kpis"]
    assert (kpis["end"] - kpis["start"]).days == 7 and kpis["end"] > timezone.now() >= kpis["end"] - timedelta(days=1)
    assert (kpis["alarms"], len(page.context["chart"]["per_hour"])) == (0, 7 * 24)
    assert "No alarms in this period." in page.content.decode()
