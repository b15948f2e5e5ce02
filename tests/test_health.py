"""Health endpoints against the real services."""

from django.test import Client


def test_it_is_alive(db):
    assert Client().get("/healthz").content == b"ok"


def test_it_is_ready_when_every_service_answers(db):
    response = Client().get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"ready": True, "checks": {"database": "ok", "redis": "ok", "mqtt": "ok", "celery_broker": "ok"}}


def test_it_is_not_ready_when_mqtt_is_away(db, settings):
    settings.MQTT_URL = "mqtt://127.0.0.1:1"
    response = Client().get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["mqtt"].startswith("error")


def test_it_exports_prometheus_metrics(db):
    response = Client().get("/metrics")
    assert response.status_code == 200
    assert b"python_info" in response.content
