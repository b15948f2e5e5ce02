"""How integrators authenticate: JWT (expiry, rotation, revocation), personal API tokens (the
command, the page, read-only or write, revocation) — on the real database."""

import hashlib
from datetime import timedelta
from io import StringIO

import pytest
import time_machine
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from apps.accounts.models import APIToken
from apps.accounts.services import issue_api_token
from apps.alerts.models import Alert

PASSWORD = "integrator-pw-123"


@pytest.fixture
def integrator(plant):
    return get_user_model().objects.create_user("integrator", password=PASSWORD, is_staff=True)


@pytest.fixture
def alert(plant):
    return Alert.objects.create(
        device=plant["devices"][0], metric=plant["temperature"], level="warning", opened_at=timezone.now()
    )


def bearer(access):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {access}")
    return client


def with_token(key):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


def obtain(username="integrator", password=PASSWORD):
    return APIClient().post("/api/v1/auth/token/", {"username": username, "password": password}, format="json")


def refresh(token):
    return APIClient().post("/api/v1/auth/token/refresh/", {"refresh": token}, format="json")


# --- JWT ------------------------------------------------------------------------------------------


def test_a_jwt_access_token_works_on_the_api_until_it_expires(integrator, alert):
    pair = obtain()
    assert pair.status_code == 200 and set(pair.json()) == {"access", "refresh"}
    client = bearer(pair.json()["access"])
    assert client.get("/api/v1/realtime/?loc_id=N-ASM-1-LA").status_code == 200
    assert client.post(f"/api/v1/alerts/{alert.pk}/acknowledge/", {}, format="json").status_code == 200  # JWTs may write
    with time_machine.travel(timezone.now() + timedelta(seconds=240)):  # a 5-minute token, well inside
        assert client.get("/api/v1/metrics/").status_code == 200
    with time_machine.travel(timezone.now() + timedelta(seconds=360)):  # and well past it
        expired = client.get("/api/v1/metrics/")
    assert expired.status_code == 401
    assert expired.json() == {"detail": ["Given token not valid for any token type"]}


def test_a_refresh_token_rotates_and_the_used_one_is_revoked(integrator):
    first = obtain().json()
    with time_machine.travel(timezone.now() + timedelta(minutes=10)):
        rotated = refresh(first["refresh"])
        assert rotated.status_code == 200 and set(rotated.json()) == {"access", "refresh"}
        assert rotated.json()["refresh"] != first["refresh"]
        assert bearer(rotated.json()["access"]).get("/api/v1/metrics/").status_code == 200
        reused = refresh(first["refresh"])
    assert reused.status_code == 401
    assert reused.json() == {"detail": ["Token is blacklisted"]}
    with time_machine.travel(timezone.now() + timedelta(days=1, minutes=11)):
        assert refresh(rotated.json()["refresh"]).status_code == 401  # over a day after it was issued


def test_a_refresh_token_can_be_revoked(integrator):
    pair = obtain().json()
    assert APIClient().post("/api/v1/auth/token/blacklist/", {"refresh": pair["refresh"]}, format="json").status_code == 200
    assert refresh(pair["refresh"]).status_code == 401


def test_a_jwt_is_refused_for_wrong_credentials_an_inactive_user_or_a_forged_token(integrator):
    assert obtain(password="wrong").status_code == 401
    access = obtain().json()["access"]
    integrator.is_active = False
    integrator.save()
    assert bearer(access).get("/api/v1/metrics/").status_code == 401
    assert obtain().status_code == 401
    header, payload, signature = access.split(".")
    assert bearer(f"{header}.{payload}.{signature[::-1]}").get("/api/v1/metrics/").json() == {
        "detail": ["Given token not valid for any token type"]
    }


# --- personal API tokens --------------------------------------------------------------------------


def test_the_command_prints_a_token_that_works(integrator, alert):
    out = StringIO()
    call_command("api_token", "integrator", "--name", "MES export", stdout=out, stderr=StringIO())
    key = out.getvalue().strip()
    token = APIToken.objects.get()
    assert (token.name, token.can_write, token.user) == ("MES export", False, integrator)
    assert token.digest == hashlib.sha256(key.encode()).hexdigest() and key not in (token.prefix, token.digest)
    assert with_token(key).get("/api/v1/alerts/").status_code == 200
    refused = with_token(key).post(f"/api/v1/alerts/{alert.pk}/acknowledge/", {}, format="json")
    assert (refused.status_code, refused.json()) == (403, {"detail": ["This API token is read-only."]})
    out = StringIO()
    call_command("api_token", "integrator", "--write", stdout=out, stderr=StringIO())
    assert (
        with_token(out.getvalue().strip()).post(f"/api/v1/alerts/{alert.pk}/acknowledge/", {}, format="json").status_code == 200
    )


def test_the_command_refuses_an_unknown_user(db):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="No user 'ghost'"):
        call_command("api_token", "ghost", stdout=StringIO())


def test_a_user_creates_names_and_revokes_their_own_tokens_on_the_page(integrator, alert):
    browser = Client()
    assert browser.get("/accounts/tokens/").status_code == 302  # anonymous: to the login page
    browser.force_login(integrator)
    page = browser.get("/accounts/tokens/")
    assert page.status_code == 200 and b"No tokens yet." in page.content
    created = browser.post("/accounts/tokens/", {"name": "Grafana"})
    key = created.context["key"]
    assert key and key.encode() in created.content
    token = APIToken.objects.get(user=integrator)
    assert (token.name, token.can_write) == ("Grafana", False)
    assert with_token(key).get("/api/v1/realtime/?loc_id=N-ASM-1-LA").status_code == 200
    again = browser.get("/accounts/tokens/")
    assert b"Grafana" in again.content and key.encode() not in again.content  # the key is shown once
    writer = browser.post("/accounts/tokens/", {"name": "MES", "can_write": "on"}).context["key"]
    assert with_token(writer).post(f"/api/v1/alerts/{alert.pk}/acknowledge/", {}, format="json").status_code == 200

    other = get_user_model().objects.create_user("other", is_staff=True)
    others_token, others_key = issue_api_token(user=other, name="theirs")
    browser.post(f"/accounts/tokens/{others_token.pk}/revoke/")
    assert with_token(others_key).get("/api/v1/metrics/").status_code == 200  # not theirs to revoke
    assert b"theirs" not in browser.get("/accounts/tokens/").content

    assert browser.post(f"/accounts/tokens/{token.pk}/revoke/").status_code == 302
    revoked = with_token(key).get("/api/v1/metrics/")
    assert (revoked.status_code, revoked.json()) == (401, {"detail": ["Invalid token."]})
    token.refresh_from_db()
    assert token.revoked_at is not None
    assert browser.get(f"/accounts/tokens/{token.pk}/revoke/").status_code == 405


def test_a_token_of_an_inactive_user_or_with_a_wrong_secret_is_refused(integrator):
    token, key = issue_api_token(user=integrator, name="x")
    assert with_token(key[:8] + "x" * (len(key) - 8)).get("/api/v1/metrics/").status_code == 401
    integrator.is_active = False
    integrator.save()
    assert with_token(key).get("/api/v1/metrics/").status_code == 401


def test_keys_of_drf_authtoken_are_carried_over(integrator):
    """A hub that had DRF's authtoken table: its keys keep working, allowed to write."""
    import importlib

    from django.apps import apps

    carry_over = importlib.import_module("apps.accounts.migrations.0002_carry_over_authtoken_keys").carry_over
    key = "0123456789abcdef0123456789abcdef01234567"
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE authtoken_token (key varchar(40) PRIMARY KEY, user_id integer, created timestamptz)")
        cursor.execute("INSERT INTO authtoken_token VALUES (%s, %s, now() - interval '1 day')", [key, integrator.pk])
    try:
        with connection.schema_editor() as editor:
            carry_over(apps, editor)
    finally:
        with connection.cursor() as cursor:
            cursor.execute("DROP TABLE authtoken_token")
    token = APIToken.objects.get()
    assert token.can_write and token.created_at < timezone.now() - timedelta(hours=23)
    assert with_token(key).get("/api/v1/metrics/").status_code == 200
