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
    return "ok"


NOT_CONFIGURED = "not configured"


def check_redis():
    if not settings.REDIS_URL:
        return NOT_CONFIGURED
    cache.set("readyz", 1, timeout=10)
    return "ok"


def check_mqtt():
    url = urlsplit(settings.MQTT_URL)
    socket.create_connection((url.hostname or "127.0.0.1", url.port or 1883), timeout=2).close()
    return "ok"


def check_celery_broker():
    if not settings.CELERY_BROKER_URL:
        return NOT_CONFIGURED  # tasks run in the process that fires them (the demo)
    from iothub.celery import app

    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=2)
    return "ok"


CHECKS = {"database": check_database, "redis": check_redis, "mqtt": check_mqtt, "celery_broker": check_celery_broker}


def readyz(request):
    """200 when every configured dependency answers, else 503 naming what failed; a dependency
    this hub runs without (Redis, a Celery broker in the demo) is "not configured"."""
    results = {}
    for name, check in CHECKS.items():
        try:
            results[name] = check()
        except Exception as e:  # any failure means "not ready"; the message says which
            results[name] = f"error: {e}"[:200]
    ready = not any(v.startswith("error") for v in results.values())
    return JsonResponse({"ready": ready, "checks": results}, status=200 if ready else 503)


def metrics(request):
    return HttpResponse(generate_latest(), content_type=CONTENT_TYPE_LATEST)
