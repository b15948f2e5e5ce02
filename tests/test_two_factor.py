"""A second factor for the people who edit the device master (django-otp, real database): enrolment
with a QR code, recovery codes that work once, and the admin closed to unverified sessions of
enrolled staff, and of every superuser when IOTHUB_REQUIRE_2FA=1."""

import re
import time

import pytest
import time_machine
from django.contrib.auth import get_user_model
from django.test import Client
from django_otp.oath import totp
from django_otp.plugins.otp_totp.models import TOTPDevice

PASSWORD = "a-correct-password-1"


@pytest.fixture
def root(db):
    get_user_model().objects.create_superuser("root", password=PASSWORD)
    client = Client()
    assert client.post("/accounts/login/", {"username": "root", "password": PASSWORD}).status_code == 302
    return client


def after_the_throttle(codes_later=1):
    """django-otp refuses any code for a while after a wrong one (1 s, doubling), and a code once
    used: move past the throttle to a later 30-second code."""
    return time_machine.travel(time.time() + 30 * codes_later + 1, tick=True)


def code_of(device):
    return f"{totp(device.bin_key, step=device.step, digits=device.digits, t0=device.t0, drift=device.drift):06d}"


def enrol(client):
    page = client.get("/accounts/two-factor/setup/?next=/admin/")
    assert page.status_code == 200 and "<svg" in page.content.decode()  # the QR code, inline
    device = TOTPDevice.objects.get(user__username="root", confirmed=False)
    assert (
        client.post("/accounts/two-factor/setup/", {"code": "000000", "next": "/admin/"}).status_code == 200
    )  # wrong: asked again
    with after_the_throttle():
        done = client.post("/accounts/two-factor/setup/", {"code": code_of(device), "next": "/admin/"})
    codes = re.findall(r"<code>(\w+)</code>", done.content.decode())
    assert len(codes) == 10
    return device, codes


def test_an_enrolled_admin_gives_a_code_before_the_admin_opens(root):
    assert root.get("/admin/").status_code == 200  # not required, not enrolled: password only
    device, codes = enrol(root)
    assert root.get("/admin/").status_code == 200  # enrolling verified this session

    again = Client()
    again.post("/accounts/login/", {"username": "root", "password": PASSWORD})
    closed = again.get("/admin/devices/device/")
    assert closed.status_code == 302 and closed["Location"] == "/accounts/two-factor/verify/?next=%2Fadmin%2Fdevices%2Fdevice%2F"
    assert again.post("/accounts/two-factor/verify/", {"code": "123456"}).status_code == 200  # wrong: refused
    with after_the_throttle(codes_later=2):  # enrolment used the next one
        opened = again.post("/accounts/two-factor/verify/?next=/admin/devices/device/", {"code": code_of(device)})
    assert opened.status_code == 302 and opened["Location"] == "/admin/devices/device/"
    assert again.get("/admin/devices/device/").status_code == 200


def test_a_recovery_code_works_once(root):
    _, codes = enrol(root)
    for attempt in ("first", "second"):
        client = Client()
        client.post("/accounts/login/", {"username": "root", "password": PASSWORD})
        answer = client.post("/accounts/two-factor/verify/?next=/admin/", {"code": codes[0]})
        assert (answer.status_code, attempt) == ((302, "first") if attempt == "first" else (200, "second"))


def test_superusers_must_enrol_when_required(root, settings):
    settings.IOTHUB_REQUIRE_2FA = True
    sent = root.get("/admin/")
    assert sent.status_code == 302 and sent["Location"].startswith("/accounts/two-factor/setup/")
    enrol(root)
    assert root.get("/admin/").status_code == 200
    # Plain staff without an authenticator are not forced (the requirement names superusers).
    get_user_model().objects.create_user("viewer", password=PASSWORD, is_staff=True)
    viewer = Client()
    viewer.post("/accounts/login/", {"username": "viewer", "password": PASSWORD})
    assert viewer.get("/admin/").status_code == 200
