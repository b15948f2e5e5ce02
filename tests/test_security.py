"""Web security and observability: deploy checks, CSRF, login everywhere, structured logs with batch ids."""

import secrets
import subprocess
import sys

import orjson
import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone

from apps.alerts.models import Alert

from .support import ROOT, eventually, now_ms


def test_it_passes_the_deploy_checklist_with_production_settings(hub_env):
    env = {
        **hub_env,
        "SECRET_KEY": secrets.token_urlsafe(50),
        "DEBUG": "0",
        "IOTHUB_HTTPS": "1",
        "ALLOWED_HOSTS": "hub.plant.example",
    }
    run = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stdout + run.stderr


def test_it_requires_the_csrf_token_on_dashboard_forms(plant):
    user = get_user_model().objects.create_user("op", password="op-pw-12345", is_staff=True)
    alert = Alert.objects.create(device=plant["devices"][0], level="offline", opened_at=timezone.now())
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    assert client.post(f"/alerts/{alert.pk}/acknowledge/", {"note": "x"}).status_code == 403
    alert.refresh_from_db()
    assert alert.state == "open"


@pytest.mark.parametrize("path", ["/", "/alerts/", "/devices/dev-1/", "/admin/"])
def test_it_sends_anonymous_users_to_log_in(plant, path):
    response = Client().get(path)
    assert response.status_code == 302 and "login" in response["Location"]


def test_it_logs_json_with_the_batch_id(plant, hub, publisher, unique):
    hub.env.update(LOG_FORMAT="json", LOG_LEVEL="DEBUG")
    proc = hub.ingest("--source", "mqtt", "--client-id", f"log-ingest-{unique}")
    publisher("sensors/dev-1", {"ts": now_ms(), "temperature": 20})

    def batch_line():
        for line in open(proc.log_path):
            if line.startswith("{") and "batch stored" in line:
                return orjson.loads(line)

    record = eventually(batch_line, message="a JSON log line of the stored batch")
    assert record["level"] == "DEBUG" and record["logger"] == "apps.telemetry.pipeline"
    assert len(record["batch_id"]) == 12
    assert record["message"].startswith("batch stored: ")


def test_it_carries_the_batch_id_into_the_workers_log_lines(plant, caplog):
    import logging

    from pythonjsonlogger.orjson import OrjsonFormatter

    from apps.alerts.tasks import evaluate_batch

    caplog.set_level(logging.DEBUG, logger="apps.alerts.tasks")
    evaluate_batch.apply(kwargs={"rows": [], "last_seen": [], "batch_id": "0123456789ab"})
    [record] = [r for r in caplog.records if r.name == "apps.alerts.tasks"]
    options = {key: value for key, value in settings.LOGGING["formatters"]["json"].items() if key != "()"}
    line = orjson.loads(OrjsonFormatter(**options).format(record))
    assert (line["batch_id"], line["message"]) == ("0123456789ab", "batch evaluated: 0 readings, 0 alert changes")


def test_every_page_sends_the_security_headers(plant):
    """The app's own assets only (inline scripts by nonce), no sniffing, same-origin referrers, no framing."""
    get_user_model().objects.create_superuser("chief", password="chief-pw-1")
    client = Client()
    client.post("/accounts/login/", {"username": "chief", "password": "chief-pw-1"})
    assert "'nonce-" in client.get("/alerts/")["Content-Security-Policy"]
    pages = ["/", "/devices/dev-1/", "/alerts/", "/health/", "/accounts/tokens/", "/admin/", "/api/docs/", "/api/v1/metrics/"]
    for path in pages + ["/accounts/login/"]:
        response = (client if path != "/accounts/login/" else Client()).get(path)
        assert response.status_code == 200, path
        policy = response["Content-Security-Policy"]
        directives = dict(part.strip().split(" ", 1) for part in policy.split(";"))
        assert directives["default-src"] == "'self'", path
        # A nonce appears where the page has an inline script; no page may run any other inline script.
        assert directives["script-src"].split(" 'nonce-")[0] == "'self'" and "unsafe" not in directives["script-src"], path
        assert directives["frame-ancestors"] == "'none'" and directives["object-src"] == "'none'", path
        assert (response["X-Content-Type-Options"], response["Referrer-Policy"], response["X-Frame-Options"]) == (
            "nosniff",
            "same-origin",
            "DENY",
        ), path
