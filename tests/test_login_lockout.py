"""Login brute force is stopped (django-axes on the real PostgreSQL): 10 failures for one username
or from one address within 15 minutes lock further attempts for 15 minutes, on the dashboard login
and the admin login alike; an admin sees the attempts and unlocks by deleting them."""

from datetime import timedelta

import time_machine
from axes.models import AccessAttempt, AccessFailureLog
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse
from django.utils import timezone

PASSWORD = "a-correct-password-1"


def login(client, username, password, *, path="/accounts/login/", address="10.1.2.3"):
    return client.post(path, {"username": username, "password": password}, REMOTE_ADDR=address)


def fail(client, username, times, **where):
    """`times` failed logins; the one that reaches the limit is answered with the lock already."""
    return [login(client, username, "wrong", **where).status_code for _ in range(times)]


def test_ten_failures_for_one_username_lock_it_even_with_the_right_password(db):
    get_user_model().objects.create_user("operator", password=PASSWORD)
    client = Client()
    assert fail(client, "operator", 9) == [200] * 9  # the form again, with its error
    assert login(client, "operator", PASSWORD).status_code == 302  # nine failures: still in
    client.logout()
    assert fail(client, "operator", 1, address="10.9.9.9") == [429]  # the tenth, from elsewhere: the username counts
    locked = login(client, "operator", PASSWORD, address="10.7.7.7")
    assert locked.status_code == 429
    assert "Too many failed logins" in locked.content.decode() and "15 minutes" in locked.content.decode()
    # The audit trail: every failure and the refused attempt, with where they came from.
    trail = AccessFailureLog.objects.filter(username="operator").order_by("attempt_time")
    assert list(trail.values_list("ip_address", "locked_out")) == (
        [("10.1.2.3", False)] * 9 + [("10.9.9.9", True), ("10.7.7.7", True)]  # the tenth locks
    )


def test_ten_failures_from_one_address_lock_every_username_there(db):
    get_user_model().objects.create_user("operator", password=PASSWORD)
    client = Client()
    for n in range(10):
        login(client, f"guess-{n}", "wrong", address="10.5.5.5")
    assert login(client, "operator", PASSWORD, address="10.5.5.5").status_code == 429
    assert login(client, "operator", PASSWORD, address="10.6.6.6").status_code == 302  # elsewhere: fine


def test_the_admin_login_locks_too_and_an_admin_unlocks_by_deleting_the_attempt(db):
    get_user_model().objects.create_superuser("root", password=PASSWORD)
    get_user_model().objects.create_user("operator", password=PASSWORD)
    client = Client()
    admin_login = reverse("admin:login")
    fail(client, "operator", 10, path=admin_login)
    assert login(client, "operator", PASSWORD, path=admin_login).status_code == 429

    admin = Client()
    assert login(admin, "root", PASSWORD, address="10.8.8.8").status_code == 302
    page = admin.get(reverse("admin:axes_accessattempt_changelist"))
    assert page.status_code == 200 and "operator" in page.content.decode()
    attempt = AccessAttempt.objects.get(username="operator")
    admin.post(reverse("admin:axes_accessattempt_delete", args=[attempt.pk]), {"post": "yes"})
    assert login(client, "operator", PASSWORD).status_code == 302


def test_a_lock_ends_after_the_cool_off_and_old_failures_expire(db):
    get_user_model().objects.create_user("operator", password=PASSWORD)
    client = Client()
    fail(client, "operator", 10)
    assert login(client, "operator", PASSWORD).status_code == 429
    with time_machine.travel(timezone.now() + timedelta(minutes=16)):
        assert login(client, "operator", PASSWORD).status_code == 302


def test_the_jwt_token_endpoint_locks_alike_and_says_so_in_the_api_error_shape(db):
    get_user_model().objects.create_user("operator", password=PASSWORD)
    client = Client()
    token = "/api/v1/auth/token/"
    for _ in range(10):
        assert client.post(token, {"username": "operator", "password": "wrong"}, REMOTE_ADDR="10.3.3.3").status_code in (401, 429)
    locked = client.post(token, {"username": "operator", "password": PASSWORD}, REMOTE_ADDR="10.4.4.4")
    assert locked.status_code == 429
    assert "Too many failed logins" in locked.json()["detail"][0]
