"""Time-series storage on the real PostgreSQL: idempotent COPY, partitions, retention, rollups, import."""

import io
import random
import time
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import orjson
import pytest
from django.core.management import call_command
from django.db import connection, transaction

from apps.devices.models import Location
from apps.telemetry.device_cache import DeviceMasterCache
from apps.telemetry.models import (
    DailyRollup,
    DeadLetter,
    DirtyHour,
    HourlyRollup,
    LocationDailyRollup,
    LocationHourlyRollup,
    Reading,
)
from apps.telemetry.partitions import drop_partitions_before, ensure_partitions, partition_name
from apps.telemetry.payloads import Message
from apps.telemetry.pipeline import ingest_batch
from apps.telemetry.rollups import hours_of, mark_dirty_hours, recompute_range, refresh_rollups
from apps.telemetry.store import PG_EPOCH, store_readings

from .support import last_fall_back_day


def store(rows):
    with transaction.atomic():
        return store_readings(rows)


def partition_of(device_pk, when):
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT tableoid::regclass::text FROM telemetry_reading WHERE device_id = %s AND time = %s", [device_pk, when]
        )
        return cursor.fetchone()[0]


def test_it_stores_a_redelivered_batch_once(plant):
    dev = plant["devices"][0]
    now = datetime.now(UTC).timestamp()
    rows = [(dev.pk, plant["temperature"].pk, now - i, 20.0 + i) for i in range(100)]
    assert store(rows) == 100
    assert store(rows + rows[:10]) == 0
    assert store(rows[:50] + [(dev.pk, plant["temperature"].pk, now + 1, 1.0)]) == 1
    assert Reading.objects.count() == 101


def test_a_redelivered_batch_of_several_copy_parts_stores_only_its_new_readings(plant):
    """ingest_batch hands the COPY the rows of every 500 messages while it validates the rest."""
    start = int(time.time() * 1000) - 100_000
    bodies = [orjson.dumps({"ts": start + i, "temperature": 20.0 + i % 7}) for i in range(1_300)]

    def ingest(part):
        messages = [Message("mqtt", "sensors/dev-1", body, time.time()) for body in part]
        return ingest_batch(messages, master_cache=DeviceMasterCache(refresh_seconds=0))

    assert ingest(bodies[:1_200]).stored == 1_200
    again = ingest(bodies)  # three parts stored already, the last one half new
    assert (again.readings, again.stored) == (1_300, 100)
    assert Reading.objects.count() == 1_300 and not DeadLetter.objects.exists()


def test_it_stores_the_same_instant_whichever_way_a_batch_takes(plant):
    # The first time a batch is copied straight in, a redelivery goes through the temp table:
    # both must turn a timestamp into the same microsecond, or a redelivered reading is stored twice.
    dev, metric = plant["devices"][0], plant["temperature"]
    now_ms = int(datetime.now(UTC).timestamp() * 1000)
    stamps = [
        now_ms / 1000,
        (now_ms + 1) / 1000,
        now_ms / 1000 + 0.0000025,
        now_ms / 1000 + 0.1234567,
        now_ms // 1000 - 3600 + 0.9999995,
    ]
    rows = [(dev.pk, metric.pk, ts, float(i)) for i, ts in enumerate(stamps)]
    assert store(rows) == len(rows)
    assert store(rows + [(dev.pk, metric.pk, now_ms / 1000 + 1, 9.0)]) == 1
    stored = sorted(Reading.objects.filter(device=dev, value__lt=9).values_list("value", "time"))
    pg_epoch = datetime.fromtimestamp(PG_EPOCH, UTC)  # binary COPY counts microseconds from it
    assert [at for _, at in stored] == [pg_epoch + timedelta(microseconds=round((ts - PG_EPOCH) * 1e6)) for ts in stamps]


def test_it_keeps_readings_of_days_without_a_partition_and_moves_them_into_a_new_one(plant):
    dev = plant["devices"][0]
    today = datetime.now(UTC).date()
    assert partition_name(today) in ensure_partitions() + [partition_name(today)]
    far_day = today + timedelta(days=20)
    far = datetime(far_day.year, far_day.month, far_day.day, 12, tzinfo=UTC)
    store([(dev.pk, plant["temperature"].pk, far.timestamp(), 5.0)])
    assert partition_of(dev.pk, far) == "telemetry_reading_default"
    assert partition_name(far_day) in ensure_partitions(today=far_day, days_back=0, days_ahead=0)
    assert partition_of(dev.pk, far) == partition_name(far_day)
    assert Reading.objects.get(device=dev, time=far).value == 5.0


def test_it_drops_whole_partitions_past_retention(plant):
    dev = plant["devices"][0]
    today = datetime.now(UTC).date()
    ensure_partitions(days_back=40, days_ahead=1)
    old = datetime.combine(today - timedelta(days=35), datetime.min.time(), tzinfo=UTC) + timedelta(hours=3)
    recent = datetime.combine(today - timedelta(days=2), datetime.min.time(), tzinfo=UTC) + timedelta(hours=3)
    store([(dev.pk, plant["temperature"].pk, t.timestamp(), 1.0) for t in (old, recent)])
    dropped = drop_partitions_before(today - timedelta(days=30))
    assert partition_name(old.date()) in dropped and partition_name(recent.date()) not in dropped
    assert list(Reading.objects.values_list("time", flat=True)) == [recent]


def test_maintain_storage_prints_each_change_and_nothing_the_second_time(plant):
    """The command runs beat's upkeep: partitions ahead, retention by partition, hourly rollups past theirs."""
    dev, metric = plant["devices"][0], plant["temperature"]
    today = datetime.now(UTC).date()
    old_day = today - timedelta(days=35)
    ensure_partitions(today=old_day, days_back=0, days_ahead=0)
    HourlyRollup.objects.create(
        device=dev, metric=metric, bucket=datetime.now(UTC) - timedelta(days=400), min=1, max=1, sum=1, count=1
    )
    out = io.StringIO()
    call_command("maintain_storage", stdout=out)
    lines = out.getvalue().splitlines()
    assert f"maintain_storage: partition {partition_name(old_day)} dropped" in lines
    assert any(line.startswith("maintain_storage: 1 hourly rollups before") for line in lines)
    assert not HourlyRollup.objects.exists()
    out = io.StringIO()
    call_command("maintain_storage", stdout=out)
    assert out.getvalue() == "maintain_storage: storage already matches the settings, nothing changed\n"


def brute_force(readings, bucket_of):
    buckets = {}
    for device_pk, metric_pk, ts, value in readings:
        buckets.setdefault((device_pk, metric_pk, bucket_of(ts)), []).append(value)
    return {key: (min(v), max(v), pytest.approx(sum(v)), len(v)) for key, v in buckets.items()}


def rollup_table(model):
    return {(r.device_id, r.metric_id, r.bucket): (r.min, r.max, r.sum, r.count) for r in model.objects.all()}


def location_table(model):
    return {(r.location_id, r.metric_id, r.bucket): (r.min, r.max, r.sum, r.count) for r in model.objects.all()}


def at_locations(readings, location_of):
    """Readings keyed by their device's location instead of the device."""
    return [(location_of[device_pk], metric_pk, ts, value) for device_pk, metric_pk, ts, value in readings]


def test_it_rolls_up_hours_and_local_days_across_dst_with_late_and_redelivered_readings(plant, settings):
    settings.TIME_ZONE = "Europe/Berlin"
    berlin = ZoneInfo("Europe/Berlin")
    dev1, dev2 = plant["devices"]
    dev2.location = Location.objects.create(loc_id="S-FOU-1-FU", factory="South")
    dev2.save()
    fall_back = last_fall_back_day(datetime.now(UTC).date())  # a 25-hour day in Berlin
    ensure_partitions(today=fall_back, days_back=2, days_ahead=2)
    rng = random.Random(7)
    start = (datetime.combine(fall_back, datetime.min.time(), tzinfo=UTC) - timedelta(hours=4)).timestamp()
    metrics = [plant["temperature"].pk, plant["humidity"].pk]
    readings = [
        (d.pk, m, start + rng.randrange(0, 40 * 3600), round(rng.uniform(0, 40), 2))
        for d in plant["devices"]
        for m in metrics
        for _ in range(300)
    ]
    readings = list({(r[0], r[1], r[2]): r for r in readings}.values())  # one value per (device, metric, time)
    with transaction.atomic():
        store_readings(readings[:-50])
        mark_dirty_hours(hours_of(readings[:-50]))
    refresh_rollups()
    # Late readings and a redelivery of earlier ones arrive after the first rollup.
    with transaction.atomic():
        store_readings(readings[-50:] + readings[:20])
        mark_dirty_hours(hours_of(readings[-50:] + readings[:20]))
    assert refresh_rollups() > 0
    assert not DirtyHour.objects.exists()

    def hour_of(ts):
        return datetime.fromtimestamp(ts // 3600 * 3600, tz=UTC)

    def local_day_of(ts):
        day = datetime.fromtimestamp(ts, tz=berlin).date()
        return datetime.combine(day, datetime.min.time(), tzinfo=berlin).astimezone(UTC)

    assert rollup_table(HourlyRollup) == brute_force(readings, hour_of)
    assert rollup_table(DailyRollup) == brute_force(readings, local_day_of)
    by_location = at_locations(readings, {dev1.pk: dev1.location_id, dev2.pk: dev2.location_id})
    assert location_table(LocationHourlyRollup) == brute_force(by_location, hour_of)
    assert location_table(LocationDailyRollup) == brute_force(by_location, local_day_of)
    long_day = datetime.combine(fall_back, datetime.min.time(), tzinfo=berlin).astimezone(UTC)
    assert long_day == datetime.combine(fall_back, datetime.min.time(), tzinfo=UTC) - timedelta(hours=2)  # summer time
    assert DailyRollup.objects.filter(bucket=long_day).exists()


def test_it_moves_a_devices_recomputed_buckets_to_its_new_location(plant):
    dev1, dev2 = plant["devices"]
    north = plant["location"]
    south = Location.objects.create(loc_id="S-FOU-1-FU", factory="South")
    dev2.location = south
    dev2.save()
    midnight = datetime.combine(datetime.now(UTC).date() - timedelta(days=3), datetime.min.time(), tzinfo=UTC)
    ensure_partitions(today=midnight.date(), days_back=1, days_ahead=1)
    ts = (midnight + timedelta(hours=10, minutes=30)).timestamp()
    store([(dev1.pk, plant["temperature"].pk, ts, 20.0), (dev2.pk, plant["temperature"].pk, ts, 30.0)])
    day = (midnight, midnight + timedelta(days=1))
    recompute_range(*day)
    assert sorted(LocationHourlyRollup.objects.values_list("location_id", "count")) == [(north.pk, 1), (south.pk, 1)]
    dev2.location = north
    dev2.save()
    recompute_range(*day)  # e.g. a late reading of that hour, or a backfill
    for model in (LocationHourlyRollup, LocationDailyRollup):
        assert list(model.objects.values_list("location_id", "min", "max", "count")) == [(north.pk, 20.0, 30.0, 2)]


def test_it_imports_csv_through_validation_and_backfills_rollups(plant, tmp_path):
    day = datetime.now(UTC).date() - timedelta(days=3)
    ten = datetime.combine(day, datetime.min.time(), tzinfo=UTC) + timedelta(hours=10)
    csv_text = "\n".join(
        [
            "device,time,metric,value",
            f"dev-1,{day}T10:00:00Z,temperature,21.5",
            f"dev-1,{round((ten + timedelta(minutes=1)).timestamp() * 1000)},temperature,22.0",
            f"dev-2,{day}T10:30:00+00:00,humidity,40",
            f"ghost,{day}T10:00:00Z,temperature,1",
            f"dev-1,{day}T11:00:00Z,temperature,warm",
        ]
    )
    ensure_partitions(today=day, days_back=1, days_ahead=1)
    path = tmp_path / "history.csv"
    path.write_text(csv_text)
    call_command("import_readings", str(path), stdout=io.StringIO())
    assert sorted(Reading.objects.values_list("device__device_id", "metric__key", "value")) == [
        ("dev-1", "temperature", 21.5),
        ("dev-1", "temperature", 22.0),
        ("dev-2", "humidity", 40.0),
    ]
    assert sorted(DeadLetter.objects.values_list("source", "reason")) == [("csv", "bad_value"), ("csv", "unknown_device")]
    out = io.StringIO()
    call_command("backfill", "--start", f"{day}", "--end", f"{day + timedelta(days=1)}", stdout=out)
    assert "100.0%" in out.getvalue()
    hour = HourlyRollup.objects.get(device__device_id="dev-1", bucket=ten)
    assert (hour.min, hour.max, hour.count, hour.avg) == (21.5, 22.0, 2, 21.75)
    assert DailyRollup.objects.get(device__device_id="dev-2").count == 1


def test_it_keeps_the_newest_raw_readings_when_a_chart_range_holds_too_many(plant):
    from apps.telemetry.selectors import readings_between

    dev = plant["devices"][0]
    now = datetime.now(UTC).timestamp()
    store([(dev.pk, plant["temperature"].pk, now - 100 + i, float(i)) for i in range(10)])
    points = readings_between(
        device=dev,
        metric=plant["temperature"],
        start=datetime.fromtimestamp(now - 200, UTC),
        end=datetime.fromtimestamp(now + 1, UTC),
        limit=3,
    )
    assert [value for _, value in points] == [7.0, 8.0, 9.0]
