"""Faults on the real services: processes killed mid-stream, graceful stop, live device-master edits.

Every test streams known readings and checks each is stored exactly once."""

import signal
import threading
import time

from django.db import transaction
from django.utils import timezone

from apps.devices.models import Device
from apps.telemetry.models import DeadLetter, Reading

from .support import eventually

STREAM = 3000


def stream(publisher, *, count=STREAM, rate=1000, device="dev-1"):
    """Publish `count` readings with distinct timestamps in a thread; returns it (join to wait for PUBACKs)."""
    start = int(time.time() * 1000) - count  # one millisecond apart, all in the recent past

    def run():
        began = time.monotonic()
        for i in range(count):
            publisher(f"sensors/{device}", {"ts": start + i, "temperature": i / 10})
            ahead = i / rate - (time.monotonic() - began)
            if ahead > 0:
                time.sleep(ahead)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def stored_count():
    return Reading.objects.count()


def assert_stored_exactly_once(count=STREAM):
    eventually(lambda: stored_count() >= count, timeout=60, message=f"{count} readings")
    time.sleep(1)  # anything redelivered late would land now
    assert stored_count() == count
    values = sorted(Reading.objects.values_list("value", flat=True))
    assert values == [i / 10 for i in range(count)]


def kill_when_stored(proc, at_least):
    eventually(lambda: stored_count() >= at_least, timeout=30, message=f"{at_least} readings before the kill")
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)


def test_it_loses_and_doubles_nothing_when_mqtt_ingest_is_killed(plant, hub, publisher, unique):
    client_id = f"fault-ingest-{unique}"
    first = hub.ingest("--source", "mqtt", "--client-id", client_id)
    sender = stream(publisher)
    kill_when_stored(first, 500)
    hub.ingest("--source", "mqtt", "--client-id", client_id)  # same session: gets what was not acknowledged
    sender.join()
    assert_stored_exactly_once()


def test_it_loses_and_doubles_nothing_when_kafka_ingest_is_killed(plant, hub, publisher, unique):
    bridge = hub.start("bridge", "--client-id", f"fault-bridge-{unique}")
    hub.wait_for_output(bridge, "subscribed")
    first = hub.ingest("--source", "kafka")
    sender = stream(publisher)
    kill_when_stored(first, 500)
    hub.start("ingest", "--source", "kafka")  # same group: resumes at the committed offsets once the dead member times out
    sender.join()
    assert_stored_exactly_once()


def test_it_loses_and_doubles_nothing_when_the_bridge_is_killed(plant, hub, publisher, unique):
    client_id = f"fault-bridge-{unique}"
    bridge = hub.start("bridge", "--client-id", client_id)
    hub.wait_for_output(bridge, "subscribed")
    hub.ingest("--source", "kafka")
    sender = stream(publisher)
    kill_when_stored(bridge, 500)
    restarted = hub.start("bridge", "--client-id", client_id)
    hub.wait_for_output(restarted, "subscribed")
    sender.join()
    assert_stored_exactly_once()


def test_it_stops_gracefully_on_sigterm(plant, hub, publisher, unique):
    client_id = f"term-ingest-{unique}"
    first = hub.ingest("--source", "mqtt", "--client-id", client_id)
    sender = stream(publisher, count=2000)
    eventually(lambda: stored_count() >= 300, timeout=30, message="300 readings")
    first.send_signal(signal.SIGTERM)
    assert first.wait(15) == 0
    assert "stopped after" in open(first.log_path).read()
    hub.ingest("--source", "mqtt", "--client-id", client_id)
    sender.join()
    assert_stored_exactly_once(2000)


def test_it_takes_device_master_edits_without_a_restart(plant, hub, publisher, unique):
    hub.ingest("--source", "mqtt", "--client-id", f"master-ingest-{unique}")
    publisher("sensors/dev-new", {"temperature": 1.0})
    eventually(lambda: DeadLetter.objects.filter(reason="unknown_device").exists(), message="unknown device")
    with transaction.atomic():  # one change for the ingest's master cache to notice
        Device.objects.create(device_id="dev-new", device_type=plant["type"], location=plant["location"])
        Device.objects.filter(device_id="dev-2").update(is_active=False, updated_at=timezone.now())

    def new_device_accepted():  # published again until ingest has reloaded its master (every 0.5 s in tests)
        publisher("sensors/dev-new", {"temperature": 2.0})
        return Reading.objects.filter(device__device_id="dev-new").exists()

    eventually(new_device_accepted, timeout=20, interval=0.2, message="the new device's reading")
    publisher("sensors/dev-2", {"temperature": 3.0})
    eventually(lambda: DeadLetter.objects.filter(reason="inactive_device").exists(), message="inactive device rejected")
    assert not Reading.objects.filter(device__device_id="dev-2").exists()
