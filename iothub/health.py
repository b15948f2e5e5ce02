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


class NotConfigured(Exception):
    """A dependency this deployment does not use (e.g. Redis in the embedded demo)."""


def check_redis():
    if not settings.REDIS_URL:
        raise NotConfigured
    cache.set("readyz", 1, timeout=10)


# An MQTT 3.1.1 CONNECT (clean session, keep-alive 10 s, client id "iothub-readyz") and DISCONNECT:
# a broker that answers CONNECT with a CONNACK is up, whatever it answers (it may refuse anonymous
# clients). A bare TCP connect and close makes brokers log a client lost before its CONNECT.
MQTT_CONNECT = b"\x10\x19\x00\x04MQTT\x04\x02\x00\x0a\x00\x0diothub-readyz"
MQTT_DISCONNECT = b"\xe0\x00"
MQTT_CONNACK = 0x20


def check_mqtt():
    url = urlsplit(settings.MQTT_URL)
    with socket.create_connection((url.hostname or "127.0.0.1", url.port or 1883), timeout=2) as conn:
        conn.sendall(MQTT_CONNECT)
        answer = conn.recv(4)
        if not answer or answer[0] != MQTT_CONNACK:
            raise ConnectionError(f"no CONNACK from the MQTT broker (got {answer!r})")
        conn.sendall(MQTT_DISCONNECT)


def check_celery_broker():
    if not settings.CELERY_BROKER_URL:
        raise NotConfigured  # tasks run in the web process (eager Celery)
    from iothub.celery import app

    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=2)


CHECKS = {"database": check_database, "redis": check_redis, "mqtt": check_mqtt, "celery_broker": check_celery_broker}


def readyz(request):
    """200 when every configured dependency answers, else 503 naming what failed; a dependency
    this hub runs without (Redis, a Celery broker in the demo) is "not configured"."""
    results = {}
    for name, check in CHECKS.items():
        try:
            check()
            results[name] = "ok"
        except NotConfigured:
            results[name] = "not configured"
        except Exception as e:  # any failure means "not ready"; the message says which
            results[name] = f"error: {e}"[:200]
    ready = all(v in ("ok", "not configured") for v in results.values())
    return JsonResponse({"ready": ready, "checks": results}, status=200 if ready else 503)


def metrics(request):
    return HttpResponse(generate_latest(), content_type=CONTENT_TYPE_LATEST)
