"""Calculated metrics on real PostgreSQL, Redis, Mosquitto and a Celery worker: validation in the
API and the admin, values computed in ingest equal to a brute-force computation, redelivery,
max_input_age, failures dead-lettered, alerts on a calculated metric, CSV import, `recalculate`."""

import math
import threading
import time
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import transaction
from rest_framework.test import APIClient

from apps.alerts.models import Alert, Threshold
from apps.demo.seed import PERCEIVED_TEMPERATURE
from apps.devices.models import Device, DeviceType, Metric
from apps.telemetry import pipeline
from apps.telemetry.device_cache import DeviceMasterCache
from apps.telemetry.latest import get_latest
from apps.telemetry.models import DeadLetter, HourlyRollup, Reading
from apps.telemetry.payloads import Message
from apps.telemetry.pipeline import AfterCommitThread, CalculationInputs, ingest_batch
from iothub.best_effort import SKIPPED

from .support import eventually, free_port, now_ms

KEY, _, _, FORMULA = PERCEIVED_TEMPERATURE


def perceived(temperature, humidity):
    """The demo's formula (apps.demo.seed) written out in Python."""
    return temperature + 0.33 * (humidity / 100 * 6.105 * math.exp(17.27 * temperature / (237.7 + temperature))) - 4.0


@pytest.fixture
def calculated(plant):
    """The plant's type with the demo's perceived temperature, a metric calculated from it (a chain)
    and one that fails where humidity is 0."""
    metrics = {
        KEY: Metric.objects.create(key=KEY, unit="°C", expression=FORMULA),
        "muggy": Metric.objects.create(key="muggy", expression=f"{KEY} - temperature"),
        "ratio": Metric.objects.create(key="ratio", expression="temperature / humidity"),
    }
    plant["type"].metrics.add(*metrics.values())
    return {**plant, **metrics}


def ingest(*bodies, device="dev-1"):
    """Messages of `device` through the pipeline, as the MQTT source hands them over."""
    messages = [Message("mqtt", f"sensors/{device}", orjson.dumps(body), time.time()) for body in bodies]
    return ingest_batch(messages, master_cache=DeviceMasterCache(refresh_seconds=0))


def stored(key, device="dev-1"):
    """[(ts in ms, value)] of a metric of a device, oldest first."""
    rows = Reading.objects.filter(device__device_id=device, metric__key=key).order_by("time").values_list("time", "value")
    return [(round(at.timestamp() * 1000), value) for at, value in rows]


def brute_force(readings, *, max_age_ms=300_000):
    """For every time an input has a reading: the formula over each input's latest reading at or
    before that time and no older than max_age — by scanning all readings each time."""
    results = []
    for ts in sorted({ts for ts, _, _ in readings}):
        latest = {}
        for metric in ("temperature", "humidity"):
            candidates = [(t, v) for t, m, v in readings if m == metric and ts - max_age_ms <= t <= ts]
            if candidates:
                latest[metric] = max(candidates)[1]
        if len(latest) == 2:
            results.append((ts, perceived(latest["temperature"], latest["humidity"])))
    return results


def readings_of(bodies):
    return [(b["ts"], metric, value) for b in bodies for metric, value in b.items() if metric != "ts"]


# -- validation -----------------------------------------------------------------------------------

VALIDATION = [
    ("temperature +", "Syntax error: the expression ends too soon (invalid syntax)."),
    ("temperature humidity", "Syntax error at character 13: invalid syntax."),
    ("temperature + wind", "Unknown name “wind”: not a metric key."),
    ("pow(temperature, 2)", "Unknown function “pow”"),
    ("temperature.__class__", "is not allowed"),
    ("feels + 1", "The expression refers to its own metric “feels”."),
    ("dew + 1", "Cycle between calculated metrics: feels → dew → feels."),
]


@pytest.fixture
def admin_api():
    user = get_user_model().objects.create_user("metric-admin", is_staff=True, is_superuser=True)
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.mark.parametrize("expression, message", VALIDATION)
def test_the_api_refuses_an_invalid_expression_naming_the_problem(plant, admin_api, expression, message):
    Metric.objects.create(key="dew", expression="feels - 2")  # stored before feels existed: only the API checks
    response = admin_api.post("/api/v1/metrics/", {"key": "feels", "expression": expression}, format="json")
    assert response.status_code == 400
    assert message in orjson.dumps(response.json()).decode()
    assert not Metric.objects.filter(key="feels").exists()


def test_the_api_saves_a_valid_expression_and_refuses_renaming_a_used_key(plant, admin_api):
    response = admin_api.post(
        "/api/v1/metrics/", {"key": "feels", "expression": "temperature + 0.1 * humidity", "max_input_age": 60}, format="json"
    )
    assert response.status_code == 201, response.content
    assert response.json() == {
        "key": "feels",
        "unit": "",
        "label": "",
        "precision": 1,
        "expression": "temperature + 0.1 * humidity",
        "max_input_age": 60,
    }
    response = admin_api.patch("/api/v1/metrics/humidity/", {"key": "rh"}, format="json")
    assert response.status_code == 400
    assert "“humidity” is used by the expression of feels" in orjson.dumps(response.json()).decode()
    staff = APIClient()
    staff.force_authenticate(get_user_model().objects.create_user("staff-only", is_staff=True))
    assert staff.patch("/api/v1/metrics/feels/", {"expression": "1"}, format="json").status_code == 403


@pytest.mark.parametrize("expression, message", VALIDATION)
def test_the_admin_form_shows_the_problem(plant, client, expression, message):
    Metric.objects.create(key="dew", expression="feels - 2")
    client.force_login(get_user_model().objects.create_superuser("admin", "admin@example.com", "pw"))
    response = client.post("/admin/devices/metric/add/", {"key": "feels", "expression": expression, "max_input_age": 300})
    assert response.status_code == 200  # the form again, with the error
    assert message in response.content.decode().replace("&quot;", '"').replace("&#x27;", "'")
    assert not Metric.objects.filter(key="feels").exists()


# -- ingest ---------------------------------------------------------------------------------------


def test_values_equal_a_brute_force_computation_and_chains_follow(calculated):
    start = now_ms() - 200_000
    bodies = [
        {"ts": start, "temperature": 21.5},  # no humidity yet: nothing computed
        {"ts": start + 1_000, "humidity": 40.0},
        {"ts": start + 2_000, "temperature": 22.25, "humidity": 42.5},  # both at once: computed once
        {"ts": start + 3_000, "temperature": 23.0},
        {"ts": start + 4_000, "humidity": 55.5},
    ]
    ingest(*bodies[:2])
    ingest(*bodies[2:])  # the batch before is in the latest values
    ingest({"ts": start + 5_000, "temperature": 30.0}, {"ts": start + 6_000, "temperature": 31.5, "humidity": 70.0})
    bodies += [{"ts": start + 5_000, "temperature": 30.0}, {"ts": start + 6_000, "temperature": 31.5, "humidity": 70.0}]
    expected = brute_force(readings_of(bodies))
    assert stored(KEY) == expected
    assert [ts for ts, _ in expected] == [start + i * 1_000 for i in range(1, 7)]
    temperatures = stored("temperature")
    as_of = {ts: max((t, v) for t, v in temperatures if t <= ts)[1] for ts, _ in expected}
    assert stored("muggy") == [(ts, value - as_of[ts]) for ts, value in expected]
    assert not DeadLetter.objects.exists()
    latest = get_latest(["dev-1"])["dev-1"]
    # Redis' cjson keeps 14 significant digits (apps.telemetry.latest)
    assert latest[KEY]["value"] == pytest.approx(expected[-1][1], rel=1e-13) and latest[KEY]["ts"] == start + 6_000


def test_a_batch_calculated_part_by_part_takes_its_inputs_from_the_parts_before(calculated, monkeypatch):
    monkeypatch.setattr(pipeline, "GIL_HELD_ROWS", 2)  # parts of 2 rows
    start = now_ms() - 200_000
    bodies = [
        {"ts": start, "humidity": 40.0},
        {"ts": start + 1_000, "temperature": 21.5},
        {"ts": start + 2_000, "temperature": 22.25},  # part 2: humidity of part 1
        {"ts": start + 3_000, "humidity": 0.0},  # ratio: division by zero
        {"ts": start + 4_000, "temperature": 23.0},  # part 3: humidity 0 of part 2, so again
        {"ts": start + 5_000, "humidity": 55.5},
    ]
    result = ingest(*bodies)
    expected = brute_force(readings_of(bodies))
    assert stored(KEY) == expected and len(expected) == 5
    temperatures = stored("temperature")
    as_of = {ts: max((t, v) for t, v in temperatures if t <= ts)[1] for ts, _ in expected}
    assert stored("muggy") == [(ts, value - as_of[ts]) for ts, value in expected]
    assert stored("ratio") == [(start + 1_000, 21.5 / 40.0), (start + 2_000, 22.25 / 40.0), (start + 5_000, 23.0 / 55.5)]
    assert [(r.reason, orjson.loads(r.message.payload)["ts"]) for r in result.rejections] == [
        ("calculation_failed", start + 3_000),
        ("calculation_failed", start + 4_000),
    ]
    assert DeadLetter.objects.count() == 2 and result.readings == len(bodies) + 3 * 5 - 2


def test_the_ingest_loops_after_commit_thread_runs_in_order_and_outlives_a_failure(caplog):
    after_commits = AfterCommitThread()
    ran = []
    after_commits.submit(lambda: ran.append(threading.current_thread().name))
    after_commits.submit(lambda: 1 / 0)  # logged, not raised
    after_commits.submit(lambda: ran.append("the next batch"))
    after_commits.wait()
    assert ran == ["after-commit", "the next batch"]
    assert "after commit failed" in caplog.text and "ZeroDivisionError" in caplog.text


def loop_ingest(*bodies, loop, device="dev-1"):
    """ingest, as the ingest loop calls it: `loop` holds its AfterCommitThread and CalculationInputs."""
    messages = [Message("mqtt", f"sensors/{device}", orjson.dumps(body), time.time()) for body in bodies]
    return ingest_batch(messages, master_cache=DeviceMasterCache(refresh_seconds=0), **loop)


@pytest.fixture
def loop():
    return {"after_commits": AfterCommitThread(), "calculation_inputs": CalculationInputs()}


def test_a_batch_computes_from_the_batch_before_whose_latest_values_are_still_to_merge(calculated, loop):
    loop["calculation_inputs"].refresh = 0  # every batch reads the latest values
    loop["after_commits"].submit(lambda: time.sleep(0.5))  # the first batch's latest values are merged half a second late
    start = now_ms() - 60_000
    loop_ingest({"ts": start, "humidity": 40.0}, loop=loop)
    loop_ingest({"ts": start + 1_000, "temperature": 20.0}, loop=loop)
    assert get_latest(["dev-1"]) == {}  # neither is merged yet
    loop["after_commits"].wait()
    assert stored(KEY) == [(start + 1_000, perceived(20.0, 40.0))]
    assert get_latest(["dev-1"])["dev-1"][KEY]["ts"] == start + 1_000


def test_the_loop_takes_an_input_that_another_process_stored_once_it_reads_the_latest_values(calculated, loop):
    start = now_ms() - 60_000
    loop_ingest({"ts": start, "humidity": 40.0}, {"ts": start + 1_000, "temperature": 19.0}, loop=loop)
    loop["after_commits"].wait()
    ingest({"ts": start + 2_000, "humidity": 60.0})  # another process
    loop_ingest({"ts": start + 3_000, "temperature": 20.0}, loop=loop)  # its documents are from its first batch
    loop["calculation_inputs"].refresh = 0
    loop_ingest({"ts": start + 4_000, "temperature": 21.0}, loop=loop)  # read again
    loop["after_commits"].wait()
    assert stored(KEY) == [
        (start + 1_000, perceived(19.0, 40.0)),
        (start + 2_000, perceived(19.0, 60.0)),  # by the other process
        (start + 3_000, perceived(20.0, 40.0)),
        (start + 4_000, perceived(21.0, 60.0)),
    ]


def test_while_redis_is_away_the_loop_computes_from_the_inputs_it_has_seen(calculated, loop, settings):
    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    loop["calculation_inputs"].refresh = 0  # every batch tries to read the latest values
    skipped = SKIPPED.labels("calculation_inputs")._value.get()
    start = now_ms() - 60_000
    loop_ingest({"ts": start, "humidity": 40.0}, loop=loop)
    loop_ingest({"ts": start + 1_000, "temperature": 20.0}, loop=loop)
    loop["after_commits"].wait()
    assert stored(KEY) == [(start + 1_000, perceived(20.0, 40.0))]
    assert SKIPPED.labels("calculation_inputs")._value.get() == skipped + 2  # a read for each batch


def test_the_loop_carries_only_committed_inputs(calculated, loop):
    start = now_ms() - 60_000
    loop_ingest({"ts": start, "humidity": 40.0}, loop=loop)
    with pytest.raises(RuntimeError), transaction.atomic():
        loop_ingest({"ts": start + 1_000, "humidity": 90.0}, loop=loop)
        raise RuntimeError("the batch is not committed")
    loop_ingest({"ts": start + 2_000, "temperature": 20.0}, loop=loop)
    loop["after_commits"].wait()
    assert stored(KEY) == [(start + 2_000, perceived(20.0, 40.0))]


def test_a_batch_mixing_device_types_calculates_only_from_inputs(calculated):
    pressure = Metric.objects.create(key="pressure")
    calculated["type"].metrics.add(pressure)
    plain = DeviceType.objects.create(name="plain", primary_metric=calculated["temperature"])
    plain.metrics.add(calculated["temperature"], calculated["humidity"])
    Device.objects.create(device_id="dev-9", device_type=plain, location=calculated["location"])
    start = now_ms() - 60_000
    bodies = [
        ("dev-1", {"ts": start, "pressure": 1013.0}),  # no calculation uses it
        ("dev-9", {"ts": start, "humidity": 40.0}),  # a type without calculated metrics
        ("dev-9", {"ts": start + 1_000, "temperature": 20.0}),
        ("dev-1", {"ts": start + 1_000, "humidity": 40.0}),
        ("dev-1", {"ts": start + 2_000, "temperature": 20.0}),
    ]
    messages = [Message("mqtt", f"sensors/{device}", orjson.dumps(body), time.time()) for device, body in bodies]
    ingest_batch(messages, master_cache=DeviceMasterCache(refresh_seconds=0))
    assert stored("pressure") == [(start, 1013.0)] and stored("temperature", device="dev-9") == [(start + 1_000, 20.0)]
    assert stored(KEY) == [(start + 2_000, perceived(20.0, 40.0))] and stored(KEY, device="dev-9") == []
    assert not DeadLetter.objects.exists()


def test_the_latest_value_of_a_calculated_metric_is_the_newest_the_batch_computed(calculated):
    start = now_ms() - 60_000
    ingest(
        {"ts": start, "humidity": 40.0}, {"ts": start + 2_000, "temperature": 22.0}, {"ts": start + 1_000, "temperature": 21.0}
    )
    assert [ts for ts, _ in stored(KEY)] == [start + 1_000, start + 2_000]
    latest = get_latest(["dev-1"])["dev-1"]
    # Redis' cjson keeps 14 significant digits (apps.telemetry.latest)
    assert latest[KEY]["ts"] == start + 2_000 and latest[KEY]["value"] == pytest.approx(perceived(22.0, 40.0), rel=1e-13)
    assert latest["muggy"]["ts"] == start + 2_000 and latest[KEY]["status"] is None


def test_the_loop_computes_with_an_edited_expression_from_the_next_batch(calculated, loop):
    start = now_ms() - 60_000
    loop_ingest({"ts": start, "humidity": 40.0}, {"ts": start + 1_000, "temperature": 20.0}, loop=loop)
    calculated["ratio"].expression = "temperature * humidity"
    calculated["ratio"].save()
    loop_ingest({"ts": start + 2_000, "temperature": 21.0}, loop=loop)  # a new device master
    assert stored("ratio") == [(start + 1_000, 20.0 / 40.0), (start + 2_000, 21.0 * 40.0)]


def test_a_redelivered_batch_stores_each_calculated_value_once(calculated):
    start = now_ms() - 60_000
    batch = [{"ts": start, "humidity": 50.0}, {"ts": start + 1_000, "temperature": 25.0}]
    first = ingest(*batch)
    assert first.stored == 5  # humidity, temperature, perceived, muggy, ratio
    ingest({"ts": start + 2_000, "humidity": 90.0})  # newer input: the redelivered reading must not pick it up
    again = ingest(*batch)
    assert again.stored == 0
    late = ingest({"ts": start + 1_500, "temperature": 26.0})  # older than the latest humidity: computes nothing
    assert late.stored == 1
    assert stored(KEY) == [(start + 1_000, perceived(25.0, 50.0)), (start + 2_000, perceived(25.0, 90.0))]


def test_inputs_older_than_max_input_age_compute_nothing(calculated):
    Metric.objects.filter(key=KEY).update(max_input_age=60)
    start = now_ms() - 200_000
    ingest({"ts": start, "humidity": 40.0})
    ingest({"ts": start + 60_000, "temperature": 20.0})  # humidity 60 s old: just in time
    ingest({"ts": start + 60_001, "temperature": 21.0})  # 60.001 s: too old
    ingest({"ts": start + 120_000, "humidity": 45.0})  # temperature 59.999 s old
    assert stored(KEY) == [(start + 60_000, perceived(20.0, 40.0)), (start + 120_000, perceived(21.0, 45.0))]


def test_a_failed_calculation_is_dead_lettered_and_the_rest_of_the_message_stored(calculated):
    ts = now_ms() - 1_000
    result = ingest({"ts": ts, "temperature": 21.0, "humidity": 0.0}, {"ts": ts + 1, "humidity": 10.0}, device="dev-2")
    [letter] = DeadLetter.objects.all()
    assert (letter.reason, letter.detail, letter.topic) == ("calculation_failed", "ratio: division by zero", "sensors/dev-2")
    assert orjson.loads(letter.payload) == {"ts": ts, "temperature": 21.0, "humidity": 0.0}
    assert [r.reason for r in result.rejections] == ["calculation_failed"]
    assert stored("temperature", "dev-2") == [(ts, 21.0)] and stored("humidity", "dev-2") == [(ts, 0.0), (ts + 1, 10.0)]
    assert stored(KEY, "dev-2") == [(ts, perceived(21.0, 0.0)), (ts + 1, perceived(21.0, 10.0))]
    assert stored("ratio", "dev-2") == [(ts + 1, 2.1)]  # the next message's ratio is fine


def test_an_expression_without_inputs_computes_nothing_and_the_rest_is_stored(calculated):
    calculated["type"].metrics.add(Metric.objects.create(key="constant", expression="1 + 2"))
    result = ingest({"ts": now_ms() - 1_000, "temperature": 21.0, "humidity": 50.0})
    assert result.stored == 5  # temperature, humidity, perceived temperature, muggy, ratio
    assert stored("constant") == [] and not DeadLetter.objects.exists()


def test_a_device_cannot_send_a_calculated_metric(calculated):
    ingest({"ts": now_ms(), KEY: 30.0})
    [letter] = DeadLetter.objects.all()
    assert (letter.reason, letter.detail) == ("unknown_metric", f"'{KEY}' is calculated from other metrics of env, not sent")


def test_a_threshold_on_a_calculated_metric_opens_an_alert_through_a_real_worker(calculated, hub, publisher, unique):
    Threshold.objects.create(metric=calculated[KEY], warning_max=30, critical_max=35, hysteresis=1)
    hub.ingest("--source", "mqtt", "--client-id", f"calc-ingest-{unique}")
    hub.celery_worker()
    publisher("sensors/dev-1", {"ts": now_ms(), "temperature": 29.5, "humidity": 80.0})  # feels like 36.4 °C
    alert = eventually(
        lambda: Alert.objects.filter(device__device_id="dev-1", metric__key=KEY).first(),
        timeout=30,
        message="an alert on the calculated metric",
    )
    assert (alert.level, alert.state, alert.first_value) == ("critical", "open", perceived(29.5, 80.0))
    assert not Alert.objects.filter(metric__key="temperature").exists()  # 29.5 °C is under the temperature threshold


# -- CSV import -----------------------------------------------------------------------------------


def test_a_csv_import_stores_calculated_values_from_the_stored_and_imported_inputs(calculated, tmp_path):
    """Readings of the past compute like live ones, each from the other input's value at or before
    it (stored or imported) within max_input_age; a failure is dead-lettered with its row."""
    dev1 = calculated["devices"][0]
    base = (now_ms() - 3 * 86_400_000) // 60_000 * 60_000  # three days ago, on a minute
    stored_before = [(base, "humidity", 40.0), (base + 600_000, "humidity", 0.0)]
    Reading.objects.bulk_create(
        Reading(device=dev1, metric=calculated[m], time=datetime.fromtimestamp(ts / 1000, tz=UTC), value=v)
        for ts, m, v in stored_before
    )
    imported = [
        (base + 60_000, "temperature", 21.0),  # humidity 40 stored a minute before
        (base + 120_000, "humidity", 55.0),  # the temperature imported a minute before
        (base + 180_000, "temperature", 23.5),
        (base + 540_000, "temperature", 25.0),  # humidity 55 seven minutes old: over max_input_age
        (base + 660_000, "temperature", 26.0),  # humidity 0 stored: ratio fails, the rest is stored
    ]
    path = tmp_path / "history.csv"
    with open(path, "w") as f:
        f.write("device,time,metric,value\n")
        f.writelines(f"dev-1,{ts},{metric},{value}\n" for ts, metric, value in imported)

    out = call_command_output("import_readings", str(path))

    every = readings_of([{"ts": ts, m: v} for ts, m, v in stored_before + imported])
    expected = [(ts, v) for ts, v in brute_force(every) if ts in {ts for ts, _, _ in imported}]
    assert stored(KEY) == expected
    assert [ts for ts, _ in expected] == [base + 60_000, base + 120_000, base + 180_000, base + 660_000]
    ratios = [(base + 60_000, 21.0, 40.0), (base + 120_000, 21.0, 55.0), (base + 180_000, 23.5, 55.0)]
    assert stored("ratio") == [(ts, temperature / humidity) for ts, temperature, humidity in ratios]
    assert stored("muggy") == [(ts, v - t) for (ts, v), t in zip(expected, [21.0, 21.0, 23.5, 26.0])]
    [letter] = DeadLetter.objects.all()
    assert (letter.source, letter.reason, letter.detail) == ("csv", "calculation_failed", "ratio: division by zero")
    assert f"{base + 660_000}" in letter.payload
    assert "16 new readings" in out  # 5 imported, 4 perceived temperatures, 4 muggy, 3 ratios
    again = call_command_output("import_readings", str(path))
    assert "0 new readings" in again and stored(KEY) == expected


# -- recalculate ----------------------------------------------------------------------------------


def test_recalculate_recomputes_a_range_from_the_stored_inputs_and_its_rollups(calculated):
    dev1 = calculated["devices"][0]
    base = (datetime.now(UTC) - timedelta(days=3)).replace(minute=0, second=0, microsecond=0)
    readings = []
    for minute in range(0, 180, 2):  # three hours: temperature every 2 min, humidity every 6 min
        readings.append((base + timedelta(minutes=minute), "temperature", 20.0 + minute / 10))
        if minute % 6 == 0:
            readings.append((base + timedelta(minutes=minute, seconds=30), "humidity", 40.0 + minute / 20))
    metric_of = {"temperature": calculated["temperature"], "humidity": calculated["humidity"]}
    Reading.objects.bulk_create(Reading(device=dev1, metric=metric_of[m], time=t, value=v) for t, m, v in readings)
    stale = base + timedelta(minutes=62)
    Reading.objects.create(device=dev1, metric=calculated[KEY], time=stale, value=-99.0)  # the old formula's value
    Metric.objects.filter(key=KEY).update(max_input_age=240)

    start, end = base + timedelta(hours=1), base + timedelta(hours=2)
    out = call_command_output(
        "recalculate",
        "--metric",
        KEY,
        "--start",
        f"{start:%Y-%m-%dT%H:%M:%S}",
        "--end",
        f"{end:%Y-%m-%dT%H:%M:%S}",
        "--step-hours",
        "1",
    )
    assert f"recalculate perceived_temperature: {end:%Y-%m-%d %H:%M} 100.0%" in out
    as_ms = [(round(t.timestamp() * 1000), m, v) for t, m, v in readings]
    hour = (round(start.timestamp() * 1000), round(end.timestamp() * 1000))
    expected = [(ts, v) for ts, v in brute_force(as_ms, max_age_ms=240_000) if hour[0] <= ts < hour[1]]
    # Each 6 minutes: the humidity and the two temperatures up to 3.5 min after it (max_input_age 4 min).
    assert stored(KEY) == expected and len(expected) == 30
    assert (round(stale.timestamp() * 1000), -99.0) not in stored(KEY)
    rollup = HourlyRollup.objects.get(device=dev1, metric=calculated[KEY])
    assert (rollup.count, rollup.max) == (30, max(v for _, v in expected))


def call_command_output(*args):
    from io import StringIO

    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()
