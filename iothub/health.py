"""Liveness, readiness and Prometheus metrics of the web process."""

import socket
from urllib.parse import urlsplit

from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.http import HttpResponse, JsonResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest


def healthz(request):
    return HttpResponse("ok", content_type="text/plain")


def check_database():
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def check_redis():
    if settings.REDIS_URL:
        cache.set("readyz", 1, timeout=10)


def check_mqtt():
    url = urlsplit(settings.MQTT_URL)
    socket.create_connection((url.hostname or "127.0.0.1", url.port or 1883), timeout=2).close()


def check_celery_broker():
    if settings.CELERY_BROKER_URL:
        from iothub.celery import app

        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)


CHECKS = {"database": check_database, "redis": check_redis, "mqtt": check_mqtt, "celery_broker": check_celery_broker}


def readyz(request):
    """200 when every dependency answers, else 503 naming what failed."""
    results = {}
    for name, check in CHECKS.items():
        try:
            check()
            results[name] = "ok"
        except Exception as e:  # any failure means "not ready"; the message says which
            results[name] = f"error: {e}"[:200]
    ready = all(v == "ok" for v in results.values())
    return JsonResponse({"ready": ready, "checks": results}, status=200 if ready else 503)


def metrics(request):
    return HttpResponse(generate_latest(), content_type=CONTENT_TYPE_LATEST)
