"""Health endpoints against the real services."""

from django.test import Client


def test_it_is_alive(db):
    assert Client().get("/healthz").content == b"ok"


def test_it_is_ready_when_every_service_answers(db):
    response = Client().get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"ready": True, "checks": {"database": "ok", "redis": "ok", "mqtt": "ok", "celery_broker": "ok"}}


def test_it_says_not_configured_for_services_the_hub_runs_without(db, settings):
    settings.REDIS_URL = ""
    settings.CELERY_BROKER_URL = ""
    response = Client().get("/readyz")
    assert response.status_code == 200
    assert response.json()["checks"] == {
        "database": "ok",
        "redis": "not configured",
        "mqtt": "ok",
        "celery_broker": "not configured",
    }


def test_it_is_not_ready_when_mqtt_is_away(db, settings):
    settings.MQTT_URL = "mqtt://127.0.0.1:1"
    response = Client().get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["mqtt"].startswith("error")


def test_it_checks_the_embedded_broker_without_making_it_warn(db, settings, caplog):
    from apps.demo.embedded_broker import start_embedded_broker

    from .support import free_port

    port = free_port()
    start_embedded_broker("127.0.0.1", port)
    settings.MQTT_URL = f"mqtt://127.0.0.1:{port}"
    with caplog.at_level("WARNING"):
        for _ in range(3):
            assert Client().get("/readyz").json()["checks"]["mqtt"] == "ok"
    assert not [r for r in caplog.records if r.name.startswith("amqtt")], caplog.text


def test_it_exports_prometheus_metrics(db):
    response = Client().get("/metrics")
    assert response.status_code == 200
    assert b"python_info" in response.content


def test_it_exports_ingest_and_worker_metrics_for_prometheus(plant, hub, publisher, unique):
    import urllib.request

    from .support import eventually, free_port, now_ms

    ingest_port, worker_port = free_port(), free_port()
    hub.env["IOTHUB_WORKER_METRICS_PORT"] = str(worker_port)
    hub.ingest("--source", "mqtt", "--client-id", f"metrics-ingest-{unique}", "--metrics-port", str(ingest_port))
    hub.celery_worker()
    publisher("sensors/dev-1", {"ts": now_ms(), "temperature": 36.0})
    publisher("sensors/ghost", {"temperature": 1})

    def scrape(port):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            return response.read().decode()

    eventually(
        lambda: 'iothub_ingest_dead_letters_total{reason="unknown_device"} 1.0' in scrape(ingest_port), message="ingest metrics"
    )
    ingest = scrape(ingest_port)
    assert "iothub_ingest_messages_total 2.0" in ingest and "iothub_ingest_latency_seconds_bucket" in ingest
    eventually(
        lambda: 'iothub_alert_changes_total{event="opened",level="critical"} 1.0' in scrape(worker_port), message="worker metrics"
    )
