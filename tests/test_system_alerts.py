"""The hub watching itself: pipeline alerts from real ingest processes and the real Kafka group lag."""

import signal

import pytest

from apps.alerts.models import Alert
from apps.alerts.services import watch_pipeline
from apps.telemetry.metrics import pipeline_summaries

from .support import eventually, now_ms


def system_alert(subject):
    return Alert.objects.filter(source="system", subject=subject).order_by("-opened_at").first()


def test_it_raises_a_critical_alert_when_no_ingest_process_reports(plant):
    [(alert, kind)] = [c for c in watch_pipeline() if c[0].subject == "ingest_processes"]
    assert (kind, alert.level, alert.device, alert.last_value) == ("opened", "critical", None, 0.0)
    assert watch_pipeline() == []  # still down: no new change


def test_it_warns_on_kafka_lag_and_resolves_when_the_consumer_catches_up(plant, hub, publisher, unique, settings):
    settings.IOTHUB = {
        **settings.IOTHUB,
        "KAFKA_TOPIC": hub.env["IOTHUB_KAFKA_TOPIC"],
        "KAFKA_GROUP": hub.env["IOTHUB_KAFKA_GROUP"],
        "KAFKA_LAG_WARNING": 40,
        "KAFKA_LAG_CRITICAL": 1000,
    }
    bridge = hub.start("bridge", "--client-id", f"lag-bridge-{unique}")
    hub.wait_for_output(bridge, "subscribed")
    consumer = hub.ingest("--source", "kafka")
    publisher("sensors/dev-1", {"ts": now_ms(), "temperature": 20})
    eventually(lambda: plant["devices"][0].reading_set.exists(), message="first reading via Kafka")
    consumer.send_signal(signal.SIGTERM)
    assert consumer.wait(20) == 0
    for i in range(60):
        publisher("sensors/dev-1", {"ts": now_ms() - i, "temperature": 20 + i / 100})
    eventually(lambda: any(c[0].subject == "kafka_lag" for c in watch_pipeline()), timeout=30, message="lag alert")
    alert = system_alert("kafka_lag")
    assert (alert.level, alert.state) == ("warning", "open") and alert.last_value >= 40
    hub.start("ingest", "--source", "kafka")

    def caught_up():
        watch_pipeline()
        return system_alert("kafka_lag").state == "resolved"

    eventually(caught_up, timeout=60, interval=1, message="lag alert resolved")


def test_it_warns_on_a_dead_letter_rate_above_one_percent_and_resolves_after(plant, hub, publisher, unique):
    hub.env["IOTHUB_PIPELINE_WINDOW"] = "12"
    hub.ingest("--source", "mqtt", "--client-id", f"dlq-ingest-{unique}")
    for i in range(100):
        bad = i % 20 == 0  # 5 %
        publisher("sensors/dev-1", b"{not json" if bad else {"ts": now_ms() - i, "temperature": 20})
    eventually(lambda: sum(s["window_messages"] for s in pipeline_summaries()) >= 100, timeout=30, message="ingest summary")
    watch_pipeline()
    alert = system_alert("dead_letter_rate")
    assert alert.level == "warning" and alert.last_value == pytest.approx(0.05, abs=0.005)

    # Clean traffic only: once the bad messages leave the 12 s window, the alert resolves.
    def clean_and_check():
        publisher("sensors/dev-2", {"ts": now_ms(), "temperature": 20})
        watch_pipeline()
        return system_alert("dead_letter_rate").state == "resolved"

    eventually(clean_and_check, timeout=40, interval=1, message="dead-letter alert resolved")
