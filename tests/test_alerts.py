"""Alert evaluation, lifecycle, offline detection and notifications, on the real PostgreSQL."""

import asyncio
import threading
import time
from datetime import timedelta
from email.header import decode_header, make_header

import pytest
from django.core.exceptions import ValidationError
from django.db import close_old_connections, connection, transaction
from django.utils import timezone

from apps.alerts import notify, services
from apps.alerts.evaluation import as_datetime
from apps.alerts.models import Alert, AlertEvent, MaintenanceWindow, Notification, NotificationRoute, Threshold
from apps.alerts.selectors import effective_thresholds
from apps.devices.models import Device, Location
from apps.telemetry.store import store_readings

from .support import alerts_of, collect_ws, eventually, now_ms, session_cookie


def readings(plant, values, device=0, start=None, step=10.0):
    """[(value), ...] → evaluation rows for dev-1's temperature, `step` seconds apart."""
    start = start or time.time() - 3600
    dev = plant["devices"][device]
    threshold = plant["threshold"]
    return [(dev.pk, plant["temperature"].pk, start + i * step, v, threshold.pk) for i, v in enumerate(values)]


def evaluate(plant, values, **kwargs):
    return services.process_stored_batch(rows=readings(plant, values, **kwargs), last_seen=[])


def alert_history(device):
    return [(e.kind, e.level, e.value) for e in AlertEvent.objects.filter(alert__device=device).order_by("at", "id")]


def test_it_opens_one_alert_for_a_value_flapping_inside_the_deadband(plant):
    # warning_max 30, hysteresis 1: values between 29 and 30 do not leave the warning level.
    evaluate(plant, [29.0, 30.2, 29.8, 30.4, 29.2, 30.1, 29.5, 30.3])
    assert Alert.objects.count() == 1
    alert = Alert.objects.get()
    assert (alert.level, alert.state, alert.first_value, alert.peak_value) == ("warning", "open", 30.2, 30.4)
    evaluate(plant, [28.9], start=time.time() - 60)
    alert.refresh_from_db()
    assert alert.state == "resolved"
    assert [k for k, *_ in alert_history(plant["devices"][0])] == ["opened", "resolved"]


def test_it_escalates_deescalates_and_records_the_peak(plant):
    evaluate(plant, [31.0, 36.0, 37.5, 34.5, 33.9, 31.0, 28.0])
    assert alert_history(plant["devices"][0]) == [
        ("opened", "warning", 31.0),
        ("escalated", "critical", 36.0),
        ("deescalated", "warning", 33.9),  # 34.5 is still inside the 1° deadband below 35
        ("resolved", "warning", 28.0),
    ]
    alert = Alert.objects.get()
    assert (alert.first_value, alert.peak_value, alert.last_value, alert.state) == (31.0, 37.5, 28.0, "resolved")


def test_it_waits_for_the_hold_duration_before_opening(plant):
    Threshold.objects.filter(pk=plant["threshold"].pk).update(hold_seconds=60)
    start = time.time() - 600
    evaluate(plant, [31.0, 31.5, 32.0], start=start, step=25)  # 50 s beyond the band
    assert not Alert.objects.exists()
    evaluate(plant, [31.0, 29.0], start=start + 75, step=25)  # 75 s since the breach began: opens, then clears
    alert = Alert.objects.get()
    assert alert.opened_at.timestamp() == pytest.approx(start)
    assert alert.state == "resolved"
    evaluate(plant, [31.0, 29.5, 31.0], start=start + 200, step=25)  # a short blip: no new alert
    assert Alert.objects.count() == 1


def test_it_resolves_the_most_specific_threshold(plant):
    dev1, dev2 = plant["devices"]
    temperature = plant["temperature"]
    Threshold.objects.create(metric=temperature, device_type=plant["type"], warning_max=25)
    Threshold.objects.create(metric=temperature, location=plant["location"], warning_max=20)
    Threshold.objects.create(metric=temperature, device=dev2, warning_max=40)
    assert effective_thresholds(device=dev1, metrics=[temperature])[temperature.pk].warning_max == 20
    assert effective_thresholds(device=dev2, metrics=[temperature])[temperature.pk].warning_max == 40


@pytest.mark.parametrize(
    "bands, field",
    [
        ({"warning_max": 30, "critical_max": 25}, "critical_max"),
        ({"warning_min": 10, "critical_min": 15}, "critical_min"),
        ({"warning_min": 30, "warning_max": 20}, "warning_max"),
        ({}, "__all__"),
    ],
)
def test_it_refuses_inconsistent_bands(plant, bands, field):
    with pytest.raises(ValidationError) as e:
        Threshold(metric=plant["temperature"], **bands).full_clean()
    assert field in e.value.message_dict


def test_it_never_opens_two_alerts_for_one_pair_under_concurrent_workers(plant):
    barrier = threading.Barrier(4)
    errors = []

    def worker(offset):
        try:
            barrier.wait()
            evaluate(plant, [36.0 + offset], start=time.time() - 100 + offset)
        except Exception as e:  # reported below
            errors.append(e)
        finally:
            close_old_connections()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert Alert.objects.filter(device=plant["devices"][0]).count() == 1
    assert AlertEvent.objects.filter(kind="opened").count() == 1


def test_a_reading_evaluated_after_a_newer_one_does_not_move_the_alert(plant):
    # Workers evaluate consecutive batches side by side: a device's batch can be evaluated after the next one.
    start = time.time() - 600
    evaluate(plant, [36.0], start=start + 20)  # the crossing, evaluated first
    evaluate(plant, [25.0], start=start + 10)  # the normal reading before it, evaluated late
    alert = Alert.objects.get()
    assert (alert.state, alert.level, alert.last_value) == ("open", "critical", 36.0)
    assert alert.last_reading_at.timestamp() == pytest.approx(start + 20)
    evaluate(plant, [31.0], start=start + 15)  # a late warning reading does not deescalate it either
    evaluate(plant, [25.0], start=start + 30)  # a newer normal reading resolves it
    assert alert_history(plant["devices"][0]) == [("opened", "critical", 36.0), ("resolved", "critical", 25.0)]


def test_a_batch_evaluated_before_the_one_stored_ahead_of_it_takes_that_ones_readings_first(plant):
    # A worker's threads evaluate consecutive batches at the same time: the next crossing's batch
    # can come before the batch of the normal reading between the two crossings.
    start = time.time() - 600
    crossing, normal, next_crossing = (
        readings(plant, [value], start=start + offset) for value, offset in ((36.0, 0), (25.0, 10), (37.0, 20))
    )
    with transaction.atomic():  # ingest stores every batch before it hands it to evaluation
        store_readings([row[:4] for row in crossing + normal + next_crossing])
    for batch in (crossing, next_crossing, normal):
        services.process_stored_batch(rows=batch, last_seen=[])
    assert alert_history(plant["devices"][0]) == [
        ("opened", "critical", 36.0),
        ("resolved", "critical", 25.0),
        ("opened", "critical", 37.0),  # its own alert, not a peak of the first one
    ]
    assert Alert.objects.get(state="open").first_value == 37.0


def test_a_batch_that_meets_an_alert_another_worker_opened_meanwhile_evaluates_its_pair_again_from_it(plant):
    start = time.time() - 600
    crossing, normal, next_crossing = (
        readings(plant, [value], start=start + offset) for value, offset in ((36.0, 0), (25.0, 10), (37.0, 20))
    )
    with transaction.atomic():
        store_readings([row[:4] for row in crossing + normal + next_crossing])
    opened, blocked = threading.Event(), []
    dev, temperature = plant["devices"][0], plant["temperature"]

    def other_worker():  # opens the first crossing's alert and commits once the batch below waits for it
        try:
            with transaction.atomic():
                Alert.objects.create(
                    device=dev,
                    metric=temperature,
                    level="critical",
                    opened_at=as_datetime(start),
                    first_value=36.0,
                    peak_value=36.0,
                    last_value=36.0,
                    last_reading_at=as_datetime(start),
                )
                opened.set()
                blocked.append(eventually(waiting_for_a_lock, timeout=10))
        finally:
            close_old_connections()

    worker = threading.Thread(target=other_worker)
    worker.start()
    assert opened.wait(10)
    services.process_stored_batch(rows=next_crossing, last_seen=[])  # reads no alert, then waits for the other's insert
    worker.join()
    assert blocked == [True]
    alerts = list(Alert.objects.filter(device=dev).order_by("pk").values_list("first_value", "state", "last_value"))
    assert alerts == [(36.0, "resolved", 25.0), (37.0, "open", 37.0)]


def waiting_for_a_lock():
    """Whether some session of the test database waits for a lock."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'")
        return cursor.fetchone()[0] > 0


def test_it_opens_an_offline_alert_for_a_silent_device_and_resolves_it_on_data(plant):
    dev1, dev2 = plant["devices"]
    Device.objects.filter(pk=dev1.pk).update(last_seen_at=timezone.now() - timedelta(seconds=31))  # 3 × 10 s
    Device.objects.filter(pk=dev2.pk).update(last_seen_at=timezone.now() - timedelta(seconds=5))
    [alert] = services.detect_offline()
    assert (alert.device_id, alert.level, alert.metric_id) == (dev1.pk, "offline", None)
    assert services.detect_offline() == []  # one offline alert per device
    services.process_stored_batch(rows=[], last_seen=[(dev1.pk, time.time())])
    alert.refresh_from_db()
    assert alert.state == "resolved"


def test_it_acknowledges_and_resolves_with_who_when_and_note(plant, django_user_model):
    evaluate(plant, [36.0])
    alert = Alert.objects.get()
    user = django_user_model.objects.create_user("shift-lead", password="x-unused-1", is_staff=True)
    services.acknowledge_alert(alert_id=alert.pk, user=user, note="on it")
    services.resolve_alert(alert_id=alert.pk, user=user, note="valve fixed")
    with pytest.raises(services.AlertNotActive):  # resolved stays resolved
        services.acknowledge_alert(alert_id=alert.pk, user=user, note="too late")
    alert.refresh_from_db()
    assert (alert.state, alert.acknowledged_by, alert.note) == ("resolved", user, "valve fixed")
    events = list(alert.events.values_list("kind", "user__username", "note"))
    assert events == [("opened", None, ""), ("acknowledged", "shift-lead", "on it"), ("resolved", "shift-lead", "valve fixed")]


@pytest.fixture
def routes(plant, smtp_sink, http_sink, settings):
    port, _ = smtp_sink
    url, _, _ = http_sink
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", port
    return {
        "email": NotificationRoute.objects.create(name="shift", transport="email", target="shift@plant.example"),
        "webhook": NotificationRoute.objects.create(name="scada", transport="webhook", target=f"{url}/hook"),
        "slack": NotificationRoute.objects.create(name="chat", transport="slack", target=f"{url}/slack", min_level="critical"),
    }


def test_it_folds_an_alert_storm_into_one_summary(routes, http_sink, eager_celery):
    _, received, _ = http_sink
    NotificationRoute.objects.exclude(pk=routes["webhook"].pk).update(enabled=False)
    NotificationRoute.objects.filter(pk=routes["webhook"].pk).update(max_per_window=2)
    alerts = [Alert.objects.create(device=device, level="offline", opened_at=timezone.now()) for device in Device.objects.all()]
    for event in ["opened", "escalated", "resolved"]:
        for alert in alerts:
            notify.notify_alert_change(alert_id=alert.pk, event=event)
    statuses = sorted(Notification.objects.values_list("kind", "status"))
    assert statuses == [("change", "folded")] * 4 + [("change", "sent")] * 2
    assert notify.send_due_summaries() == []  # not before the window has passed
    [summary] = notify.send_due_summaries(now=timezone.now() + timedelta(seconds=301))
    assert Notification.objects.get(pk=summary.pk).status == "sent"
    assert notify.send_due_summaries(now=timezone.now() + timedelta(seconds=301)) == []
    # Two messages, then one summary of the other four.
    assert len(received) == 3
    summary = received[2][1]
    assert summary["subject"] == "4 more alert changes on scada" and len(summary["alerts"]) == 4


def test_it_retries_a_failing_webhook_and_gives_up_on_a_permanent_error(routes, http_sink, eager_celery):
    _, received, statuses = http_sink
    NotificationRoute.objects.exclude(pk=routes["webhook"].pk).update(enabled=False)
    alert = Alert.objects.create(device=Device.objects.first(), level="offline", opened_at=timezone.now())
    statuses.extend([503, 502])
    notify.notify_alert_change(alert_id=alert.pk, event="opened")
    n = Notification.objects.get()
    assert (n.status, n.attempts, len(received)) == ("sent", 3, 3)
    statuses.append(404)
    notify.notify_alert_change(alert_id=alert.pk, event="resolved")
    n = Notification.objects.get(event="resolved")
    assert (n.status, n.attempts, n.last_error) == ("failed", 1, "HTTP 404")


def test_it_reminds_about_an_unacknowledged_critical_alert(routes, smtp_sink, eager_celery):
    _, mails = smtp_sink
    NotificationRoute.objects.exclude(pk=routes["email"].pk).update(enabled=False)
    alert = Alert.objects.create(device=Device.objects.first(), metric=None, level="offline", opened_at=timezone.now())
    notify.notify_alert_change(alert_id=alert.pk, event="opened")
    assert notify.remind_unacknowledged() == []  # too early
    Notification.objects.update(created_at=timezone.now() - timedelta(seconds=901))
    [reminder] = notify.remind_unacknowledged()
    assert reminder.status == "pending" or Notification.objects.get(pk=reminder.pk).status == "sent"
    assert [m["Subject"] for _, m in mails] == [
        "[OFFLINE] dev-1 data opened",
        "[OFFLINE] dev-1 data still unacknowledged",
    ]


def test_it_notifies_by_email_and_webhooks_from_a_real_worker(routes, hub, publisher, smtp_sink, http_sink, unique):
    _, mails = smtp_sink
    _, hooks, _ = http_sink
    hub.env.update(
        EMAIL_BACKEND="django.core.mail.backends.smtp.EmailBackend", EMAIL_HOST="127.0.0.1", EMAIL_PORT=str(smtp_sink[0])
    )
    hub.ingest("--source", "mqtt", "--client-id", f"notify-ingest-{unique}")
    hub.celery_worker()
    cookie = session_cookie()
    messages = asyncio.run(
        collect_ws(
            cookie,
            "/ws/live/",
            lambda: publisher("sensors/dev-1", {"ts": now_ms(), "temperature": 36.0}),
            alerts_of,
        )
    )
    assert alerts_of(messages)[0]["level"] == "critical"
    eventually(lambda: len(mails) == 1 and len(hooks) == 2, message="e-mail and two webhook calls")
    recipients, mail = mails[0]
    assert recipients == ["shift@plant.example"] and mail["Subject"] == "[CRITICAL] dev-1 temperature = 36 opened"
    by_path = dict(hooks)
    assert by_path["/hook"]["alert"]["device"] == "dev-1" and by_path["/hook"]["event"] == "opened"
    assert by_path["/slack"]["text"].startswith("*[CRITICAL] dev-1 temperature = 36 opened*")


def test_it_records_last_seen_without_moving_it_backwards(plant):
    dev1, dev2 = plant["devices"]
    now = time.time()
    services.record_last_seen([(dev2.pk, now - 10), (dev1.pk, now)])
    services.record_last_seen([(dev1.pk, now - 60)])  # a late batch
    seen = dict(Device.objects.values_list("device_id", "last_seen_at"))
    assert seen["dev-1"].timestamp() == pytest.approx(now, abs=1e-3)
    assert seen["dev-2"].timestamp() == pytest.approx(now - 10, abs=1e-3)


def test_it_runs_alert_tasks_sent_as_json_and_as_orjson_on_a_real_worker(plant, hub):
    """Workers take both content types, so they can be upgraded before the ingest (docs/deploy.md)."""
    from apps.alerts.tasks import evaluate_batch

    dev1, dev2 = plant["devices"]
    now = time.time()
    hub.celery_worker()
    assert evaluate_batch.app.conf.task_serializer == "orjson"
    evaluate_batch.apply_async(kwargs={"rows": [], "last_seen": [(dev1.pk, now)]}, serializer="json")  # an older hub's
    evaluate_batch.apply_async(kwargs={"rows": [], "last_seen": [(dev2.pk, now)]})
    eventually(
        lambda: Device.objects.filter(pk__in=[dev1.pk, dev2.pk], last_seen_at__isnull=False).count() == 2,
        timeout=20,
        message="both tasks run by the worker",
    )


# --- shelving ----------------------------------------------------------------------------------


@pytest.fixture
def webhook(routes, http_sink):
    """Only the webhook route on, and what it received."""
    NotificationRoute.objects.exclude(pk=routes["webhook"].pk).update(enabled=False)
    return http_sink[1]


def test_it_keeps_a_shelved_alert_quiet_and_announces_it_again_when_the_shelving_ends(plant, webhook, eager_celery):
    evaluate(plant, [31.0])
    alert = Alert.objects.get()
    assert [body["event"] for _, body in webhook] == ["opened"]
    services.shelve_alert(alert_id=alert.pk, user=None, minutes=30, note="sensor being recalibrated")
    alert.refresh_from_db()
    assert alert.state == "shelved" and alert.unshelved_state == "open"
    assert alert.shelved_until == pytest.approx(timezone.now() + timedelta(minutes=30), abs=timedelta(seconds=5))
    evaluate(plant, [36.0], start=time.time() + 1)  # escalates while shelved: recorded, not sent
    Notification.objects.update(created_at=timezone.now() - timedelta(hours=1))
    assert notify.remind_unacknowledged() == []
    assert services.expire_shelving() == []  # not yet
    [unshelved] = services.expire_shelving(now=timezone.now() + timedelta(minutes=31))
    assert (unshelved.pk, unshelved.state, unshelved.level, unshelved.shelved_until) == (alert.pk, "open", "critical", None)
    assert [k for k, *_ in alert_history(plant["devices"][0])] == ["opened", "shelved", "escalated", "unshelved"]
    assert [(body["event"], body["alert"]["level"]) for _, body in webhook] == [("opened", "warning"), ("unshelved", "critical")]


def test_it_resolves_a_shelved_alert_silently_and_keeps_an_acknowledgement_for_after_the_shelving(plant, webhook, eager_celery):
    evaluate(plant, [31.0])
    alert = Alert.objects.get()
    services.shelve_alert(alert_id=alert.pk, user=None, minutes=5)
    services.acknowledge_alert(alert_id=alert.pk, user=None, note="seen")
    alert.refresh_from_db()
    assert (alert.state, alert.unshelved_state) == ("shelved", "acknowledged")
    services.unshelve_alert(alert_id=alert.pk, user=None)
    alert.refresh_from_db()
    assert (alert.state, alert.shelved_until) == ("acknowledged", None)
    services.shelve_alert(alert_id=alert.pk, user=None, minutes=5)
    evaluate(plant, [25.0], start=time.time() - 30)
    alert.refresh_from_db()
    assert alert.state == "resolved"
    assert [body["event"] for _, body in webhook] == ["opened", "unshelved"]  # no "resolved" while shelved
    with pytest.raises(services.AlertNotActive):
        services.shelve_alert(alert_id=alert.pk, user=None, minutes=5)


def test_it_ends_shelvings_in_the_beat_task_on_a_real_worker(plant, hub, webhook):
    from iothub.celery import enqueue

    alert = Alert.objects.create(
        device=plant["devices"][0], metric=plant["temperature"], level="critical", opened_at=timezone.now(), last_value=36.0
    )
    services.shelve_alert(alert_id=alert.pk, user=None, minutes=1)
    Alert.objects.filter(pk=alert.pk).update(shelved_until=timezone.now() - timedelta(seconds=1))
    hub.celery_worker()
    enqueue("apps.alerts.tasks.expire_shelving", {})
    eventually(lambda: webhook, timeout=30, message="the unshelved alert notified by the worker")
    assert webhook[0][1]["event"] == "unshelved" and Alert.objects.get(pk=alert.pk).state == "open"


# --- maintenance windows -------------------------------------------------------------------------


def test_it_records_crossings_during_maintenance_as_suppressed_and_alerts_normally_after_it(plant, webhook, eager_celery):
    dev1, dev2 = plant["devices"]
    Threshold.objects.filter(pk=plant["threshold"].pk).update(hold_seconds=60)
    now = time.time()
    MaintenanceWindow.objects.create(
        location=plant["location"], reason="line overhaul", start=as_datetime(now - 3600), end=as_datetime(now - 600)
    )
    # In the window: two crossings (the first escalates to critical, then returns to normal).
    evaluate(plant, [31.0, 36.0, 37.0, 25.0, 32.0, 32.5], start=now - 3000, step=60)
    assert not Alert.objects.filter(state__in=["open", "acknowledged"]).exists()
    records = list(Alert.objects.filter(device=dev1, state="suppressed").order_by("opened_at"))
    assert [(r.level, r.first_value, r.peak_value, r.resolved_at is not None) for r in records] == [
        ("critical", 31.0, 37.0, True),
        ("warning", 32.0, 32.5, False),
    ]
    # After the window: the second crossing ends; a value still beyond opens an alert after its 60 s hold.
    evaluate(plant, [32.0, 32.0], start=now - 590, step=30)
    assert not Alert.objects.filter(state="open").exists()
    assert Alert.objects.get(pk=records[1].pk).resolved_at.timestamp() == pytest.approx(now - 590)
    evaluate(plant, [33.0], start=now - 520)
    alert = Alert.objects.get(state="open")
    assert alert.opened_at.timestamp() == pytest.approx(now - 590)
    assert [body["event"] for _, body in webhook] == ["opened"]
    assert [k for k, *_ in alert_history(dev1)] == ["suppressed", "suppressed", "opened"]
    # The other device of the location had its own window too, and a device window covers only its device.
    MaintenanceWindow.objects.create(device=dev2, reason="swap", start=as_datetime(now - 300), end=as_datetime(now + 300))
    evaluate(plant, [36.0], device=1, start=now - 200)
    evaluate(plant, [36.0], device=0, start=now - 200)
    assert Alert.objects.get(device=dev2).state == "suppressed"
    assert Alert.objects.get(device=dev1, state="open").level == "critical"


def test_it_loads_the_maintenance_windows_of_a_batch_in_one_or_two_queries(plant, django_assert_max_num_queries):
    from apps.alerts.selectors import maintenance_by_device

    dev1, dev2 = plant["devices"]
    now = time.time()
    MaintenanceWindow.objects.create(
        location=plant["location"], reason="a", start=as_datetime(now - 60), end=as_datetime(now + 60)
    )
    MaintenanceWindow.objects.create(device=dev2, reason="b", start=as_datetime(now + 120), end=as_datetime(now + 180))
    MaintenanceWindow.objects.create(device=dev2, reason="later", start=as_datetime(now + 900), end=as_datetime(now + 960))
    with django_assert_max_num_queries(1):  # the usual case: no window
        assert maintenance_by_device(device_pks={dev1.pk, dev2.pk}, start=now + 200, end=now + 800) == {}
    with django_assert_max_num_queries(2):  # the windows, and the devices of location windows
        covered = maintenance_by_device(device_pks={dev1.pk, dev2.pk}, start=now, end=now + 130)
    assert {pk: sorted(windows) for pk, windows in covered.items()} == {
        dev1.pk: [(pytest.approx(now - 60), pytest.approx(now + 60))],
        dev2.pk: [(pytest.approx(now - 60), pytest.approx(now + 60)), (pytest.approx(now + 120), pytest.approx(now + 180))],
    }


def test_it_suppresses_crossings_of_a_device_in_maintenance_through_ingest_and_a_real_worker(
    plant, hub, publisher, webhook, unique
):
    dev1, dev2 = plant["devices"]
    MaintenanceWindow.objects.create(
        device=dev1, reason="calibration", start=timezone.now() - timedelta(minutes=5), end=timezone.now() + timedelta(minutes=30)
    )
    hub.ingest("--source", "mqtt", "--client-id", f"maintenance-ingest-{unique}")
    hub.celery_worker()
    publisher("sensors/dev-1", {"ts": now_ms(), "temperature": 36.0})
    publisher("sensors/dev-2", {"ts": now_ms(), "temperature": 36.0})
    eventually(lambda: Alert.objects.filter(device=dev2, state="open").exists() and webhook, timeout=40, message="dev-2's alert")
    record = Alert.objects.get(device=dev1)
    assert (record.state, record.level, record.first_value) == ("suppressed", "critical", 36.0)
    assert [body["alert"]["device"] for _, body in webhook] == ["dev-2"]


# --- rate of change ----------------------------------------------------------------------------------


def rate_threshold(plant, **fields):
    """dev-1's temperature: no level limit within reach, a rate limit of 1 °C/min (critical 2.5) over 2 minutes."""
    return Threshold.objects.create(
        metric=plant["temperature"],
        device=plant["devices"][0],
        warning_max=90,
        hysteresis=0.2,
        rate_max=1.0,
        rate_critical_max=2.5,
        rate_window=120,
        **fields,
    )


def evaluate_with(threshold, plant, values, start, step=10.0):
    rows = [(plant["devices"][0].pk, plant["temperature"].pk, start + i * step, v, threshold.pk) for i, v in enumerate(values)]
    return services.process_stored_batch(rows=rows, last_seen=[])


def test_it_alerts_on_a_value_changing_faster_than_its_rate_limit(plant):
    threshold = rate_threshold(plant)
    start = time.time() - 3600
    flat = [20.0] * 13  # two minutes
    evaluate_with(threshold, plant, flat, start)
    assert not Alert.objects.exists()
    # +0.3 °C every 10 s = 1.8 °C/min: a warning once the 2-minute window sees it; batches split anywhere.
    rise = [20.0 + 0.3 * n for n in range(1, 13)]
    evaluate_with(threshold, plant, rise[:5], start + 130)
    evaluate_with(threshold, plant, rise[5:], start + 180)
    alert = Alert.objects.get()
    assert (alert.level, alert.state) == ("warning", "open")
    # Then +1 °C every 10 s = 6 °C/min: critical. Then flat: the rate falls back and the alert resolves.
    evaluate_with(threshold, plant, [24.6 + n for n in range(1, 7)], start + 250)
    evaluate_with(threshold, plant, [30.6] * 15, start + 310)
    alert.refresh_from_db()
    assert (alert.last_value, alert.state) == (30.6, "resolved")
    assert [k for k, *_ in alert_history(plant["devices"][0])] == ["opened", "escalated", "deescalated", "resolved"]


def test_it_ignores_a_slow_drift_and_holds_a_rate_breach_for_the_hold_time(plant):
    threshold = rate_threshold(plant, hold_seconds=120)
    start = time.time() - 3600
    evaluate_with(threshold, plant, [20.0 + 0.1 * n for n in range(60)], start)  # 0.6 °C/min for 10 minutes
    assert not Alert.objects.exists()
    evaluate_with(threshold, plant, [25.9 - 0.3 * n for n in range(1, 10)], start + 600)  # falls at 1.8 °C/min, 90 s
    assert not Alert.objects.exists()  # beyond the limit for less than the hold time
    evaluate_with(threshold, plant, [23.2 - 0.3 * n for n in range(1, 13)], start + 690)
    alert = Alert.objects.get()  # beyond since 680 s (the window's rate passed -1 °C/min), open from there at 800 s
    assert (alert.level, alert.opened_at.timestamp()) == ("warning", pytest.approx(start + 680))


def test_it_hands_every_reading_of_a_rate_threshold_to_evaluation(plant):
    from apps.alerts.thresholds import Bands, significant_readings

    rows = [(1, 2, float(ts), 20.0) for ts in range(50)]  # all normal and equal: one run for a level threshold
    assert len(significant_readings(Bands.of(plant["threshold"]), rows)) == 2
    assert significant_readings(Bands.of(rate_threshold(plant)), rows) == rows


# --- predictive alerts -------------------------------------------------------------------------------


def predicting_threshold(plant):
    """dev-1's temperature: warning above 32, critical above 35, a warning when the 10-minute trend reaches 35 within 10 minutes."""
    return Threshold.objects.create(
        metric=plant["temperature"],
        device=plant["devices"][0],
        warning_max=32,
        critical_max=35,
        hysteresis=0.5,
        predict_minutes=10,
        predict_window=10,
    )


def evaluate_series(threshold, plant, series, batch=15):
    """[(ts, value)] evaluated in batches, as the ingest hands them over."""
    for start in range(0, len(series), batch):
        part = series[start : start + batch]
        evaluate_with(threshold, plant, [v for _, v in part], part[0][0], step=part[1][0] - part[0][0] if len(part) > 1 else 20.0)


def test_it_predicts_the_critical_crossing_of_a_ramp_within_ten_percent(plant):
    import random

    noise = random.Random(21)
    threshold = predicting_threshold(plant)
    start = time.time() - 7200
    # 0.5 °C per minute from 20 °C, a reading every 20 s with ±0.1 °C noise: 35 °C at 30 minutes.
    ramp = [(start + 20 * n, 20 + 0.5 * (20 * n / 60) + noise.uniform(-0.1, 0.1)) for n in range(67)]  # 22 minutes
    evaluate_series(threshold, plant, ramp)
    alert = Alert.objects.get()
    opened = alert.opened_at.timestamp()
    assert (alert.level, alert.first_value < 32) == ("warning", True)  # before the level itself warns
    true_crossing = start + 30 * 60
    remaining = true_crossing - opened
    assert abs(alert.predicted_critical_at.timestamp() - true_crossing) <= 0.1 * remaining
    assert 8 * 60 <= remaining <= 10 * 60 + 20
    # The trend turns: the value levels off at 30.5 °C and the predictive warning resolves.
    flat = [(start + 22 * 60 + 20 * n, 30.5 + noise.uniform(-0.1, 0.1)) for n in range(1, 46)]
    evaluate_series(threshold, plant, flat)
    alert.refresh_from_db()
    assert alert.state == "resolved"
    assert [k for k, *_ in alert_history(plant["devices"][0])] == ["opened", "resolved"]


def test_it_predicts_nothing_from_noise_around_a_flat_line(plant):
    import random

    noise = random.Random(7)
    threshold = predicting_threshold(plant)
    start = time.time() - 7200
    evaluate_series(threshold, plant, [(start + 20 * n, 28 + noise.uniform(-2, 2)) for n in range(360)])  # two hours
    assert not Alert.objects.exists()


def test_it_says_when_a_predictive_warning_expects_the_critical_limit(plant, webhook, eager_celery):
    threshold = predicting_threshold(plant)
    now = time.time()
    evaluate_series(threshold, plant, [(now - 744 + 24 * n, 24 + 0.5 * (24 * n / 60)) for n in range(32)])  # 30.2 °C now
    [(_, body)] = webhook
    assert body["subject"] == "[WARNING] dev-1 temperature = 30.2 opened predicted to reach critical in ~10 minutes"
    assert body["alert"]["predicted_critical_at"]


def test_notifications_speak_the_plants_language_whoever_caused_them(plant, webhook, eager_celery, settings):
    from django.utils import translation

    with translation.override("ko"):  # a change caused from a Korean operator's request: the plant's language still
        evaluate(plant, [30.5])
    settings.LANGUAGE_CODE = "ko"
    evaluate(plant, [35.5], start=time.time() - 60)
    (_, english), (_, korean) = webhook
    assert english["subject"] == "[WARNING] dev-1 temperature = 30.5 opened"
    assert (
        english["text"].startswith("dev-1 temperature at North / Assembly / ") and ": warning alert opened (" in english["text"]
    )
    assert korean["subject"] == "[CRITICAL] dev-1 temperature = 35.5 상향됨"
    assert korean["event"] == "escalated" and korean["text"].startswith("dev-1 temperature @ North / Assembly / ")
    assert "위험 알림 상향됨 (처음 30.5, 최고 35.5, 현재 35.5)." in korean["text"], korean["text"]


# --- alert storms ------------------------------------------------------------------------------------


def test_it_folds_an_alert_storm_at_a_location_into_one_storm_alert(plant, settings, client, django_user_model):
    settings.IOTHUB = {**settings.IOTHUB, "STORM_ALERTS": 3, "STORM_WINDOW": 600}
    south = Device.objects.create(
        device_id="dev-9", device_type=plant["type"], location=Location.objects.create(loc_id="S-1", factory="South")
    )
    now = timezone.now()
    north = []
    for n in range(4):
        device, metric = plant["devices"][n % 2], [plant["temperature"], plant["humidity"]][n // 2]
        north.append(Alert.objects.create(device=device, metric=metric, level="warning", opened_at=now))
        AlertEvent.objects.create(alert=north[-1], kind="opened", at=now - timedelta(minutes=n), level="warning")
    alone = Alert.objects.create(device=south, metric=plant["temperature"], level="warning", opened_at=now)
    AlertEvent.objects.create(alert=alone, kind="opened", at=now, level="warning")
    [(storm, kind)] = services.watch_storms()
    assert (kind, storm.subject, storm.level, storm.last_value) == ("opened", "storm:N-ASM-1-LA", "warning", 4.0)
    assert services.watch_storms() == []  # still storming: no new change
    client.force_login(django_user_model.objects.create_user("operator", is_staff=True))
    page = client.get("/alerts/")
    assert sorted(a.pk for a in page.context["alerts"]) == sorted([storm.pk, alone.pk])  # the four folded into the storm
    assert "N-ASM-1-LA: 4 alerts opened within 10 minutes" in page.content.decode()
    assert len(client.get("/alerts/?loc_id=N-ASM-1-LA").context["alerts"]) == 4  # the storm's alerts, one click away
    [(resolved, kind)] = services.watch_storms(now=now + timedelta(minutes=11))
    assert (resolved.pk, kind, resolved.state) == (storm.pk, "resolved", "resolved")


# --- suppression by cause: an offline device ---------------------------------------------------


def test_a_silent_device_is_reminded_of_by_its_offline_alert_not_by_its_threshold_alerts(plant, webhook, eager_celery):
    dev1 = plant["devices"][0]
    evaluate(plant, [36.0], start=time.time() - 120)
    [critical] = Alert.objects.all()
    Device.objects.filter(pk=dev1.pk).update(last_seen_at=timezone.now() - timedelta(seconds=31))
    [offline] = services.detect_offline()
    Notification.objects.update(created_at=timezone.now() - timedelta(hours=1))
    reminded = notify.remind_unacknowledged()
    assert [n.alert_id for n in reminded] == [offline.pk]  # the cause, not the critical value it can no longer report
    services.process_stored_batch(rows=[], last_seen=[(dev1.pk, time.time())])  # data again: offline ends
    Notification.objects.update(created_at=timezone.now() - timedelta(hours=1))
    assert [n.alert_id for n in notify.remind_unacknowledged()] == [critical.pk]
    assert [(body["event"], body["alert"]["level"]) for _, body in webhook][-3:] == [
        ("still unacknowledged", "offline"),
        ("resolved", "offline"),
        ("still unacknowledged", "critical"),
    ]


def test_a_hold_does_not_reach_across_the_silence_of_an_offline_device(plant):
    """A breach began, the device fell silent, it comes back still beyond the band: the hold counts
    from its return, not from before the silence (when nothing was known of the value)."""
    Threshold.objects.filter(pk=plant["threshold"].pk).update(hold_seconds=60)
    dev1, dev2 = plant["devices"]
    start = time.time() - 900
    evaluate(plant, [31.0, 31.5], start=start, step=20)  # 20 s beyond: held
    evaluate(plant, [31.0, 31.5], device=1, start=start, step=20)  # dev-2 too, and it stays online
    Device.objects.filter(pk=dev1.pk).update(last_seen_at=timezone.now() - timedelta(seconds=31))
    Device.objects.filter(pk=dev2.pk).update(last_seen_at=timezone.now())
    [offline] = services.detect_offline()
    assert offline.device_id == dev1.pk
    back = start + 600
    rows = readings(plant, [32.0], start=back) + readings(plant, [32.0], device=1, start=back)
    services.process_stored_batch(rows=rows, last_seen=[(dev1.pk, back), (dev2.pk, back)])
    offline.refresh_from_db()
    assert offline.state == "resolved"
    assert list(Alert.objects.exclude(metric=None).values_list("device", "opened_at")) == [(dev2.pk, as_datetime(start))]
    rows = readings(plant, [32.0, 32.5, 33.0, 33.5], start=back + 20, step=20)  # 80 s beyond since the return
    services.process_stored_batch(rows=rows, last_seen=[(dev1.pk, back + 80)])
    alert = Alert.objects.get(device=dev1, metric=plant["temperature"])
    assert (alert.opened_at, alert.first_value) == (as_datetime(back), 33.0)


# --- an alert already active when a maintenance window starts ----------------------------------


def test_an_alert_active_when_a_window_starts_goes_out_of_service_and_is_evaluated_afresh_after_it(plant, webhook, eager_celery):
    """ISA-18.2 out of service: beat takes the open alert out of service when the window starts
    (suppressed, shown so, nothing sent or reminded, off the console's active list); readings in the
    window update its record; after the window a value still beyond its band opens a new alert."""
    from apps.dashboard.selectors import console_alerts

    dev1 = plant["devices"][0]
    now = time.time()
    evaluate(plant, [36.0], start=now - 300)
    [alert] = Alert.objects.all()
    window = MaintenanceWindow.objects.create(
        device=dev1, reason="pump swap", start=as_datetime(now - 5), end=as_datetime(now + 600)
    )
    assert [a.pk for a in services.take_out_of_service()] == [alert.pk]
    assert services.take_out_of_service() == []  # once
    alert.refresh_from_db()
    assert (alert.state, alert.resolved_at) == ("suppressed", None)
    assert [k for k, *_ in alert_history(dev1)] == ["opened", "suppressed"]
    assert not console_alerts(state="active").filter(pk=alert.pk).exists()
    assert console_alerts(state="suppressed").filter(pk=alert.pk).exists()
    Notification.objects.update(created_at=timezone.now() - timedelta(hours=1))
    assert notify.remind_unacknowledged() == []
    evaluate(plant, [38.0], start=now + 10)  # inside the window: its record follows, nothing opens
    alert.refresh_from_db()
    assert (alert.state, alert.peak_value, alert.last_value) == ("suppressed", 38.0, 38.0)
    MaintenanceWindow.objects.filter(pk=window.pk).update(end=as_datetime(now + 20))
    evaluate(plant, [36.5], start=now + 30)  # after the window, still critical: a new alert
    alert.refresh_from_db()
    assert alert.resolved_at == as_datetime(now + 30)
    fresh = Alert.objects.get(state="open")
    assert (fresh.level, fresh.opened_at, fresh.first_value) == ("critical", as_datetime(now + 30), 36.5)
    assert [body["event"] for _, body in webhook] == ["opened", "opened"]
    assert [body["alert"]["id"] for _, body in webhook] == [alert.pk, fresh.pk]


def test_a_reading_inside_a_window_takes_a_shelved_alert_out_of_service_before_beat_does(plant, webhook, eager_celery):
    dev1 = plant["devices"][0]
    now = time.time()
    evaluate(plant, [31.0], start=now - 300)
    [alert] = Alert.objects.all()
    services.shelve_alert(alert_id=alert.pk, user=None, minutes=60)
    MaintenanceWindow.objects.create(
        location=plant["location"], reason="line stop", start=as_datetime(now - 60), end=as_datetime(now + 600)
    )
    evaluate(plant, [29.5], start=now + 10)  # still warning (1° deadband), in the window
    alert.refresh_from_db()
    assert (alert.state, alert.shelved_until, alert.unshelved_state, alert.resolved_at) == ("suppressed", None, "", None)
    assert [k for k, *_ in alert_history(dev1)] == ["opened", "shelved", "suppressed"]
    evaluate(plant, [25.0], start=now + 20)  # back to normal in the window: its record ends
    alert.refresh_from_db()
    assert alert.resolved_at == as_datetime(now + 20)
    assert services.take_out_of_service() == [] and services.expire_shelving(now=timezone.now() + timedelta(hours=2)) == []
    assert [body["event"] for _, body in webhook] == ["opened"]


def test_a_device_under_maintenance_that_falls_silent_raises_no_offline_alert(plant):
    dev1, dev2 = plant["devices"]
    Device.objects.update(last_seen_at=timezone.now() - timedelta(minutes=10))
    MaintenanceWindow.objects.create(
        device=dev1, reason="unplugged", start=timezone.now() - timedelta(minutes=5), end=timezone.now() + timedelta(hours=1)
    )
    assert [alert.device_id for alert in services.detect_offline()] == [dev2.pk]


# --- the weekly KPI report ---------------------------------------------------------------------


def subject_of(mail):
    return str(make_header(decode_header(mail["Subject"])))


@pytest.fixture
def report_users(django_user_model):
    """Who gets the report (active staff and superusers with an address) and who does not."""
    make = django_user_model.objects.create_user
    make("lead", email="lead@plant.example", is_staff=True)
    django_user_model.objects.create_superuser("chief", email="chief@plant.example", password="chief-pw-1")
    make("nomail", is_staff=True)
    make("viewer", email="viewer@plant.example")
    make("left", email="left@plant.example", is_staff=True, is_active=False)


def test_the_weekly_kpi_report_mails_the_last_seven_days_to_staff_over_smtp(alarm_history, report_users, smtp_sink, settings):
    port, mails = smtp_sink
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", port
    monday = alarm_history + timedelta(days=7, hours=7)  # the next Monday 07:00 Berlin: the week of the alarm day
    notify.send_kpi_report(now=monday)
    [(recipients, mail)] = mails
    assert sorted(recipients) == ["chief@plant.example", "lead@plant.example"]
    week = f"{alarm_history:%Y-%m-%d} – {alarm_history + timedelta(days=6):%Y-%m-%d}"
    assert subject_of(mail) == f"Alarm KPIs {week}: 0.10 alarms per hour, within target"
    text = mail.get_payload(decode=True).decode()
    for line in [
        "Alarms: 16",  # the day before the week (dev-3 at 23:00) is not in it
        "Alarms per hour, average: 0.10 (target ≤ 6: within target)",
        "Busiest hour: 12 alarms (target ≤ 6: OVER TARGET)",
        "Peak alarms per 10 minutes: 12 (target ≤ 10: OVER TARGET)",
        "Time in flood: 0.1 % of 10-minute periods",
        "Chattering alarms: 1",
        "Shelvings: 1; suppressed in maintenance: 1",
        "  dev-1 temperature: 12 (75.0 %)",
        "  dev-2 temperature: 3 (18.8 %)",
        "  dev-3 temperature: 1 (6.2 %)",
    ]:
        assert line in text.splitlines(), line
    notify.send_kpi_report(now=monday + timedelta(days=7))  # the next week: none of these alarms
    assert "Alarms: 0" in mails[1][1].get_payload(decode=True).decode().splitlines()


def test_beat_sends_the_weekly_kpi_report_from_a_real_worker(plant, report_users, hub, smtp_sink, settings):
    from celery.schedules import crontab

    from iothub.celery import enqueue

    entry = settings.CELERY_BEAT_SCHEDULE["weekly-kpi-report"]
    assert (entry["task"], entry["schedule"]) == (
        "apps.alerts.tasks.send_kpi_report",
        crontab(minute=0, hour=6, day_of_week="mon"),
    )
    port, mails = smtp_sink
    hub.env.update(EMAIL_BACKEND="django.core.mail.backends.smtp.EmailBackend", EMAIL_HOST="127.0.0.1", EMAIL_PORT=str(port))
    hub.celery_worker()
    enqueue("apps.alerts.tasks.send_kpi_report", {})
    eventually(lambda: mails, timeout=30, message="the report sent by the worker")
    [(recipients, mail)] = mails
    last_day = timezone.localdate() - timedelta(days=1)
    assert sorted(recipients) == ["chief@plant.example", "lead@plant.example"]
    assert subject_of(mail).startswith(
        f"Alarm KPIs {last_day - timedelta(days=6):%Y-%m-%d} – {last_day:%Y-%m-%d}: 0.00 alarms per hour"
    )
