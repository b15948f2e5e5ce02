"""Device MQTT credentials on the real Mosquitto: the dynamic-security listener (MQTT_SECURE_URL),
accounts provisioned by the hub over $CONTROL/dynamic-security/v1 with the admin (MQTT_ADMIN_URL),
per-device ACLs, disable on deactivation, rotation, the admin actions, and the hub's service account."""

import hashlib
import json
import os
import ssl
import subprocess
import threading
import time
import uuid
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.urls import reverse

from apps.devices import dynsec, services
from apps.devices.models import Device
from apps.telemetry.models import Reading

from .support import eventually, now_ms

NOT_AUTHORIZED = 135
BAD_CREDENTIALS = 134


def accepted(puback):
    """PUBACK success, or 16 "no matching subscribers": the broker took the message either way."""
    return puback in (0, 16)


def secure_url():
    url = os.environ.get("MQTT_SECURE_URL")
    if not url or not dynsec.admin_url():
        pytest.fail(
            'MQTT_SECURE_URL and MQTT_ADMIN_URL are not set: run scripts/services.sh up, then eval "$(scripts/services.sh env)"'
        )
    return url


def with_credentials(url, username, password):
    parts = urlsplit(url)
    return f"{parts.scheme}://{username}:{password}@{parts.hostname}:{parts.port}"


class Session:
    """One MQTT v5 connection that records CONNACK, SUBACKs, PUBACK reason codes, messages and
    disconnects; it does not reconnect by itself."""

    def __init__(self, username=None, password=None, *, url=None, client_id=None, ca=None):
        self.url = urlsplit(url or secure_url())
        client_id = client_id or f"test-sec-{uuid.uuid4().hex[:10]}"
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5, reconnect_on_failure=False
        )
        if self.url.scheme == "mqtts":
            self.client.tls_set(ca_certs=ca or settings.MQTT_CA)
        if username is not None:
            self.client.username_pw_set(username, password)
        self.cond = threading.Condition()
        self.connack = None
        self.subacks = {}
        self.pubacks = {}
        self.messages = []
        self.disconnected = threading.Event()
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_publish = self._on_publish
        self.client.on_message = self._on_message
        self.client.on_disconnect = self._on_disconnect

    def _notify(self, update):
        with self.cond:
            update()
            self.cond.notify_all()

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        self._notify(lambda: setattr(self, "connack", reason_code))

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):
        self._notify(lambda: self.subacks.__setitem__(mid, reason_codes[0]))

    def _on_publish(self, client, userdata, mid, reason_code, properties):
        self._notify(lambda: self.pubacks.__setitem__(mid, reason_code))

    def _on_message(self, client, userdata, message):
        self._notify(lambda: self.messages.append((message.topic, message.payload)))

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        self.disconnected.set()

    def _wait(self, ready, what, timeout=10):
        with self.cond:
            assert self.cond.wait_for(ready, timeout), f"no {what} within {timeout} s"
            return ready()

    def connect(self):
        """Connect; returns the CONNACK reason code (and stays connected only if it succeeded)."""
        self.client.connect(self.url.hostname, self.url.port)
        self.client.loop_start()
        connack = self._wait(lambda: self.connack, "CONNACK")
        if connack.is_failure:
            self.close()
        return connack

    def subscribe(self, topic):
        _, mid = self.client.subscribe(topic, qos=1)
        return self._wait(lambda: self.subacks.get(mid), f"SUBACK for {topic}")

    def publish(self, topic, payload):
        """QoS 1; returns the PUBACK reason code."""
        info = self.client.publish(topic, payload if isinstance(payload, bytes) else json.dumps(payload), qos=1)
        return self._wait(lambda: self.pubacks.get(info.mid), f"PUBACK for {topic}")

    def received(self, topic):
        with self.cond:
            return [payload for t, payload in self.messages if t == topic]

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def sessions():
    opened = []

    def open_session(*args, **kwargs):
        session = Session(*args, **kwargs)
        opened.append(session)
        return session

    yield open_session
    for session in opened:
        session.close()


@pytest.fixture
def admin_reader(sessions):
    """The dynamic-security admin on the secure listener: may subscribe to every topic."""
    parts = urlsplit(dynsec.admin_url())
    session = sessions(parts.username, parts.password)
    assert session.connect() == 0
    return session


@pytest.fixture
def make_device(plant, unique):
    """Devices with ids unique to this test (the broker's accounts outlive the test database);
    their broker accounts are deleted afterwards."""
    made = []
    url = dynsec.admin_url()  # a test may change it in between

    def make(suffix="a", **fields):
        device = Device.objects.create(
            device_id=f"sec-{unique}-{suffix}", device_type=plant["type"], location=plant["location"], **fields
        )
        made.append(device)
        return device

    yield make
    with dynsec.DynsecClient(url) as client:
        for device in made:
            dynsec.delete_device_credentials(client, device_id=device.device_id)


@pytest.fixture
def admin_site(client, transactional_db):
    user = get_user_model().objects.create_superuser("sec-admin", password="sec-admin-pw-1")
    client.force_login(user)
    return client


def admin_action(admin_site, action, devices):
    url = reverse("admin:devices_device_changelist")
    response = admin_site.post(url, {"action": action, "_selected_action": [d.pk for d in devices]}, follow=True)
    assert response.status_code == 200
    return [str(m) for m in response.context["messages"]]


# --- provisioning and the ACL ---------------------------------------------------------------------


def test_a_provisioned_device_publishes_to_its_own_topics(make_device, sessions, admin_reader):
    device = make_device()
    password = services.provision_mqtt_credentials(device=device)

    # Only a digest is stored, never the password itself.
    device.refresh_from_db()
    assert device.mqtt_password_hash == hashlib.sha256(password.encode()).hexdigest()
    assert device.mqtt_password_rotated_at is not None
    assert password not in {str(v) for v in Device.objects.filter(pk=device.pk).values().get().values()}

    topic = f"sensors/{device.device_id}"
    assert admin_reader.subscribe(f"{topic}/#") == 1  # granted QoS 1; also matches the topic itself
    sensor = sessions(device.device_id, password, client_id=device.device_id)
    assert sensor.connect() == 0
    assert accepted(sensor.publish(topic, {"ts": now_ms(), "temperature": 21.5}))
    assert accepted(sensor.publish(f"{topic}/line-a", {"v": 1.0}))
    eventually(lambda: admin_reader.received(topic) and admin_reader.received(f"{topic}/line-a"), timeout=10, message="delivery")
    assert json.loads(admin_reader.received(topic)[0])["temperature"] == 21.5


def test_a_device_cannot_publish_for_another_device_or_subscribe(make_device, sessions, admin_reader):
    device, other = make_device("a"), make_device("b")
    password = services.provision_mqtt_credentials(device=device)
    services.provision_mqtt_credentials(device=other)
    other_topic = f"sensors/{other.device_id}"
    forbidden = [other_topic, f"{other_topic}/x", f"sensors/{device.device_id}x", f"sensors-{device.device_id}"]
    for topic in [
        f"{other_topic}/#",
        f"sensors/{device.device_id}x",
        f"sensors-{device.device_id}",
        f"sensors/{device.device_id}",
    ]:
        assert admin_reader.subscribe(topic) == 1

    sensor = sessions(device.device_id, password, client_id=device.device_id)
    assert sensor.connect() == 0
    # MQTT v5: the broker answers the QoS 1 PUBLISH with PUBACK "Not authorized" and drops it.
    for topic in forbidden:
        assert sensor.publish(topic, {"v": 99.0}) == NOT_AUTHORIZED, topic
    # Nor can it read anything, its own topic included.
    assert sensor.subscribe("sensors/#") == NOT_AUTHORIZED
    assert sensor.subscribe(f"sensors/{device.device_id}") == NOT_AUTHORIZED
    # A marker published afterwards arrives; the refused messages before it never do.
    assert accepted(sensor.publish(f"sensors/{device.device_id}", b"marker"))
    eventually(lambda: admin_reader.received(f"sensors/{device.device_id}"), message="marker")
    assert [t for t, _ in admin_reader.messages] == [f"sensors/{device.device_id}"]


def test_wrong_or_missing_credentials_are_refused_at_connect(make_device, sessions, unique):
    device = make_device()
    services.provision_mqtt_credentials(device=device)
    assert sessions(device.device_id, "not-the-password", client_id=device.device_id).connect() in (
        NOT_AUTHORIZED,
        BAD_CREDENTIALS,
    )
    assert sessions("sec-nobody-here", "whatever").connect() in (NOT_AUTHORIZED, BAD_CREDENTIALS)
    assert sessions().connect() in (NOT_AUTHORIZED, BAD_CREDENTIALS)  # anonymous: only on the other listener
    # A device without MQTT credentials has no account at all.
    assert sessions(make_device("b").device_id, "", client_id=f"sec-{unique}-b").connect() in (NOT_AUTHORIZED, BAD_CREDENTIALS)


def test_a_device_connects_with_its_own_client_id_only(make_device, sessions, unique):
    """MQTT closes an older connection when a CONNECT reuses its client id; bound to its own id, a
    device cannot knock the hub's consumers (or any other client) off the broker."""
    device = make_device()
    password = services.provision_mqtt_credentials(device=device)
    bystander = sessions(url=os.environ["MQTT_URL"], client_id=f"sec-ingest-{unique}")
    assert bystander.connect() == 0

    for client_id in [f"sec-ingest-{unique}", f"{device.device_id}-2"]:
        assert sessions(device.device_id, password, client_id=client_id).connect() in (NOT_AUTHORIZED, BAD_CREDENTIALS)
    assert not bystander.disconnected.wait(1)
    assert sessions(device.device_id, password, client_id=device.device_id).connect() == 0


def test_rotation_refuses_the_old_password_and_disconnects_its_sessions(make_device, sessions):
    device = make_device()
    old = services.provision_mqtt_credentials(device=device)
    first_hash = Device.objects.get(pk=device.pk).mqtt_password_hash
    connected = sessions(device.device_id, old, client_id=device.device_id)
    assert connected.connect() == 0

    new = services.provision_mqtt_credentials(device=device)

    assert new != old
    assert Device.objects.get(pk=device.pk).mqtt_password_hash not in ("", first_hash)
    assert connected.disconnected.wait(10), "the session with the old password was not disconnected"
    assert sessions(device.device_id, old, client_id=device.device_id).connect() in (NOT_AUTHORIZED, BAD_CREDENTIALS)
    fresh = sessions(device.device_id, new, client_id=device.device_id)
    assert fresh.connect() == 0
    assert accepted(fresh.publish(f"sensors/{device.device_id}", {"v": 1.0}))


def test_ids_that_would_widen_the_acl_get_no_credentials():
    for bad in ["a/b", "a+", "a#", "$sys"]:
        device = Device(device_id=bad)
        with pytest.raises(ValueError):
            services.provision_mqtt_credentials(device=device)


# --- deactivation and the admin ------------------------------------------------------------------


def test_deactivating_in_the_admin_disables_the_account_and_activating_enables_it(make_device, sessions, admin_site):
    device = make_device()
    password = services.provision_mqtt_credentials(device=device)
    connected = sessions(device.device_id, password, client_id=device.device_id)
    assert connected.connect() == 0

    messages = admin_action(admin_site, "deactivate", [device])

    assert not Device.objects.get(pk=device.pk).is_active
    assert not [m for m in messages if "could not" in m], messages
    assert connected.disconnected.wait(10), "the deactivated device's session was not disconnected"
    assert sessions(device.device_id, password, client_id=device.device_id).connect() in (NOT_AUTHORIZED, BAD_CREDENTIALS)

    admin_action(admin_site, "activate", [device])

    assert Device.objects.get(pk=device.pk).is_active
    again = sessions(device.device_id, password, client_id=device.device_id)  # the same password works again
    assert again.connect() == 0
    assert accepted(again.publish(f"sensors/{device.device_id}", {"v": 2.0}))


def test_unticking_active_in_the_change_form_disables_the_account(make_device, sessions, admin_site, plant):
    device = make_device()
    password = services.provision_mqtt_credentials(device=device)
    url = reverse("admin:devices_device_change", args=[device.pk])
    form = {
        "device_id": device.device_id,
        "name": "",
        "device_type": plant["type"].pk,
        "location": plant["location"].pk,
        "thresholds-TOTAL_FORMS": "0",
        "thresholds-INITIAL_FORMS": "0",
    }  # is_active left out: unticked
    response = admin_site.post(url, form)
    assert response.status_code == 302, response.content.decode()[:2000]
    assert not Device.objects.get(pk=device.pk).is_active
    assert sessions(device.device_id, password, client_id=device.device_id).connect() in (NOT_AUTHORIZED, BAD_CREDENTIALS)


def test_the_rotate_action_shows_the_new_password_once(make_device, sessions, admin_site):
    device = make_device()
    messages = admin_action(admin_site, "rotate_mqtt_password", [device])

    shown = [m for m in messages if device.device_id in m and "new password" in m]
    assert len(shown) == 1, messages
    password = shown[0].split("new password ")[1].split(" ")[0]
    assert Device.objects.get(pk=device.pk).mqtt_password_hash == hashlib.sha256(password.encode()).hexdigest()
    assert sessions(device.device_id, password, client_id=device.device_id).connect() == 0
    # Shown once: the next page does not repeat it.
    page = admin_site.get(reverse("admin:devices_device_changelist")).content.decode()
    assert password not in page


def test_the_admin_reports_a_broker_it_cannot_reach(make_device, admin_site, settings):
    device = make_device()
    settings.MQTT_ADMIN_URL = with_credentials(secure_url(), "iothub-admin", "wrong-password")

    messages = admin_action(admin_site, "rotate_mqtt_password", [device])

    assert any("MQTT password not changed" in m and "refused the admin login" in m for m in messages), messages
    assert Device.objects.get(pk=device.pk).mqtt_password_hash == ""
    settings.MQTT_ADMIN_URL = ""
    with pytest.raises(dynsec.DynsecNotConfigured):
        services.provision_mqtt_credentials(device=device)


def test_deleting_a_device_in_the_admin_removes_its_account(make_device, admin_site):
    device = make_device()
    services.provision_mqtt_credentials(device=device)
    url = reverse("admin:devices_device_delete", args=[device.pk])
    assert admin_site.post(url, {"post": "yes"}).status_code == 302
    with dynsec.DynsecClient() as client:
        with pytest.raises(dynsec.DynsecCommandError, match="Client not found"):
            client.execute_one({"command": "getClient", "username": device.device_id})
        with pytest.raises(dynsec.DynsecCommandError, match="Role not found"):
            client.execute_one({"command": "getRole", "rolename": dynsec.device_role(device.device_id)})


# --- the control API itself ------------------------------------------------------------------------


def test_the_anonymous_listener_cannot_administer_accounts(sessions, unique):
    """Anonymous clients (MQTT_URL) reach no dynamic-security API: the plugin serves only its listener."""
    anonymous = sessions(url=os.environ["MQTT_URL"])
    assert anonymous.connect() == 0
    anonymous.subscribe(dynsec.RESPONSE_TOPIC)
    command = {"commands": [{"command": "createClient", "username": f"sec-intruder-{unique}", "password": "x"}]}
    anonymous.publish(dynsec.CONTROL_TOPIC, command)
    time.sleep(1)
    assert not anonymous.messages
    with dynsec.DynsecClient() as client:
        with pytest.raises(dynsec.DynsecCommandError, match="Client not found"):
            client.execute_one({"command": "getClient", "username": f"sec-intruder-{unique}"})
    assert sessions(f"sec-intruder-{unique}", "x").connect() in (NOT_AUTHORIZED, BAD_CREDENTIALS)


def test_dynsec_errors_are_clear(unique):
    with dynsec.DynsecClient() as client:
        with pytest.raises(dynsec.DynsecCommandError) as error:
            client.execute_one({"command": "setClientPassword", "username": f"sec-none-{unique}", "password": "x"})
    assert (error.value.command, error.value.error) == ("setClientPassword", "Client not found")
    with pytest.raises(dynsec.DynsecUnavailable, match="refused the admin login"):
        with dynsec.DynsecClient(with_credentials(secure_url(), "iothub-admin", "nope"), timeout=5):
            pass
    with pytest.raises(dynsec.DynsecUnavailable, match="plugin loaded"):
        with dynsec.DynsecClient(os.environ["MQTT_URL"], timeout=1) as client:  # no plugin on that listener
            client.execute_one({"command": "listClients"})


# --- TLS ------------------------------------------------------------------------------------------


def other_ca(directory):
    """A CA certificate that did not sign the broker's."""
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=not the hub's CA",
            "-keyout",
            str(directory / "other.key"),
            "-out",
            str(directory / "other.crt"),
        ],
        check=True,
        capture_output=True,
    )
    return str(directory / "other.crt")


def test_the_secure_listener_speaks_only_tls_with_a_certificate_of_the_hub_ca(make_device, sessions, tmp_path):
    assert urlsplit(secure_url()).scheme == "mqtts" and settings.MQTT_CA
    device = make_device()
    password = services.provision_mqtt_credentials(device=device)
    # A client that trusts another CA refuses the broker before it sends its credentials.
    with pytest.raises(ssl.SSLCertVerificationError):
        sessions(device.device_id, password, client_id=device.device_id, ca=other_ca(tmp_path)).connect()
    # Plain MQTT to the TLS port gets no CONNACK: the broker drops the connection.
    plain = sessions(device.device_id, password, url=secure_url().replace("mqtts://", "mqtt://"), client_id=device.device_id)
    plain.client.connect(plain.url.hostname, plain.url.port)
    plain.client.loop_start()
    assert plain.disconnected.wait(10) and plain.connack is None
    # With the hub's CA: connected and publishing (the reading reaching storage over TLS is below).
    sensor = sessions(device.device_id, password, client_id=device.device_id)
    assert sensor.connect() == 0
    assert accepted(sensor.publish(f"sensors/{device.device_id}", {"ts": now_ms(), "temperature": 20.5}))


# --- the hub's own account -------------------------------------------------------------------------


def test_the_service_account_feeds_ingest_from_the_secure_listener(make_device, sessions, hub, unique):
    """Production's shape: ingest logs in with a service account (shared subscription), devices
    with their own accounts; nothing anonymous."""
    account = f"sec-svc-{unique}"
    svc_password = services.provision_mqtt_service_account(username=account)
    try:
        service = sessions(account, svc_password)
        assert service.connect() == 0
        assert service.subscribe(f"$share/sec-{unique}/sensors/#") == 1
        assert service.publish("sensors/anything", {"v": 1.0}) == NOT_AUTHORIZED  # reads only
        assert service.subscribe("$CONTROL/dynamic-security/v1/response") == NOT_AUTHORIZED
        service.close()

        hub.env["MQTT_URL"] = with_credentials(secure_url(), account, svc_password)
        hub.ingest("--source", "mqtt", "--client-id", f"sec-ingest-{unique}")
        device = make_device()
        password = services.provision_mqtt_credentials(device=device)
        sensor = sessions(device.device_id, password, client_id=device.device_id)
        assert sensor.connect() == 0
        ts = now_ms()
        assert accepted(sensor.publish(f"sensors/{device.device_id}", {"ts": ts, "temperature": 22.25, "humidity": 40.5}))

        rows = eventually(
            lambda: sorted(Reading.objects.filter(device=device).values_list("metric__key", "value")), message="readings"
        )
        assert rows == [("humidity", 40.5), ("temperature", 22.25)]
    finally:
        with dynsec.DynsecClient() as client:
            client.execute({"command": "deleteClient", "username": account}, accept={dynsec.CLIENT_NOT_FOUND})
