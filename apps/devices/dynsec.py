"""A small client of Mosquitto's dynamic-security plugin, over MQTT.

The hub provisions device accounts itself: commands go as JSON to `$CONTROL/dynamic-security/v1`
and the plugin answers on `$CONTROL/dynamic-security/v1/response` (to the asking connection
only), one response per command, in order, echoing each command's `correlationData`.
The connection logs in with the plugin's admin account (MQTT_ADMIN_URL), on the listener that
loads the plugin.

    with DynsecClient() as dynsec:
        set_device_credentials(dynsec, device_id="s001t", password=pw, enabled=True)

Every failure is a DynsecError with a message an admin can act on: not configured, broker not
reachable, admin login refused, no answer in time, or the plugin's own error for a command.
"""

import json
import threading
import uuid

from django.conf import settings

from iothub.mqtt import mqtt_client

CONTROL_TOPIC = "$CONTROL/dynamic-security/v1"
RESPONSE_TOPIC = f"{CONTROL_TOPIC}/response"
DEFAULT_TIMEOUT = 10.0

DEVICE_ROLE_PREFIX = "device-"
SERVICE_ROLE = "iothub-ingest"  # the role docker/mosquitto/README.md creates by hand: same ACLs, and more

# The plugin's answers (Mosquitto 2.0.x) that mean "already as wanted".
ROLE_EXISTS = "Role already exists"
CLIENT_EXISTS = "Client already exists"
ACL_EXISTS = "ACL with this topic already exists"
CLIENT_NOT_FOUND = "Client not found"
ROLE_NOT_FOUND = "Role not found"


def admin_url():
    """mqtt://<admin>:<password>@host:port of the plugin's admin account, or "" when not set."""
    return settings.MQTT_ADMIN_URL


class DynsecError(Exception):
    """Provisioning through the dynamic-security plugin failed."""


class DynsecNotConfigured(DynsecError):
    pass


class DynsecUnavailable(DynsecError):
    """The broker cannot be reached, refuses the admin, or does not answer in time."""


class DynsecCommandError(DynsecError):
    def __init__(self, command, error):
        super().__init__(f"dynamic security refused {command}: {error}")
        self.command = command
        self.error = error


def safe_url(url):
    """The URL without its password, for error messages."""
    head, at, tail = url.rpartition("@")
    if not at:
        return url
    scheme, _, userinfo = head.partition("://")
    return f"{scheme}://{userinfo.partition(':')[0]}:***@{tail}"


class DynsecClient:
    """One admin connection; `execute` sends commands and waits for their responses."""

    def __init__(self, url=None, *, timeout=DEFAULT_TIMEOUT):
        self.url = url if url is not None else admin_url()
        self.timeout = timeout
        self.client = None
        self.lock = threading.Condition()
        self.responses = {}  # correlationData → response
        self.acks = {}  # mid → PUBACK reason code
        self.connack = None
        self.suback = None

    # -- connection -------------------------------------------------------------------------

    def __enter__(self):
        self.connect()
        return self

    def __exit__(self, *exc):
        self.close()

    def connect(self):
        if not self.url:
            raise DynsecNotConfigured(
                "MQTT_ADMIN_URL is not set: the hub needs the broker's dynamic-security admin "
                "(mqtt://<admin>:<password>@host:port) to manage device credentials"
            )
        client, kwargs = mqtt_client(self.url, client_id=f"iothub-dynsec-{uuid.uuid4().hex[:12]}", protocol=5)
        client.connect_timeout = self.timeout
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        where = safe_url(self.url)
        try:
            client.connect(**kwargs)
        except OSError as error:
            raise DynsecUnavailable(f"cannot reach the MQTT broker at {where}: {error}") from None
        self.client = client
        client.loop_start()
        try:
            connack = self._wait(lambda: self.connack, "the broker's CONNACK")
            if connack.is_failure:
                raise DynsecUnavailable(f"the MQTT broker at {where} refused the admin login: {connack}")
            client.subscribe(RESPONSE_TOPIC, qos=1)
            suback = self._wait(lambda: self.suback, "the subscription to the plugin's responses")
            if suback.is_failure:
                raise DynsecUnavailable(
                    f"{where}: not allowed to read {RESPONSE_TOPIC} ({suback}); is the dynamic-security "
                    "plugin loaded on this listener, and is this its admin account?"
                )
        except BaseException:
            self.close()
            raise

    def close(self):
        if self.client is not None:
            self.client.disconnect()
            self.client.loop_stop()
            self.client = None

    def _wait(self, ready, what):
        with self.lock:
            if not self.lock.wait_for(ready, timeout=self.timeout):
                raise DynsecUnavailable(f"no answer from the MQTT broker within {self.timeout:g} s ({what})")
            return ready()

    # -- paho callbacks (network thread) ------------------------------------------------------

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        with self.lock:
            self.connack = reason_code
            self.lock.notify_all()

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):
        with self.lock:
            self.suback = reason_codes[0]
            self.lock.notify_all()

    def _on_publish(self, client, userdata, mid, reason_code, properties):
        with self.lock:
            self.acks[mid] = reason_code
            self.lock.notify_all()

    def _on_message(self, client, userdata, message):
        try:
            responses = json.loads(message.payload)["responses"]
        except (ValueError, KeyError, TypeError):
            return
        with self.lock:
            for response in responses:
                if isinstance(response, dict) and response.get("correlationData"):
                    self.responses[response["correlationData"]] = response
            self.lock.notify_all()

    # -- commands -----------------------------------------------------------------------------

    def execute(self, *commands, accept=()):
        """Send commands (dicts with "command" and its arguments) in one message; return their
        responses in order. A response with an error not in `accept` raises DynsecCommandError
        (the commands before it have been applied: the plugin runs them one by one)."""
        if self.client is None:
            raise DynsecError("DynsecClient is not connected (use it as a context manager)")
        if not commands:
            return []
        ids = [uuid.uuid4().hex for _ in commands]
        body = {"commands": [{**command, "correlationData": cid} for command, cid in zip(commands, ids)]}
        info = self.client.publish(CONTROL_TOPIC, json.dumps(body), qos=1)
        puback = self._wait(lambda: self.acks.get(info.mid), f"the PUBACK of {commands[0]['command']}")
        if puback.is_failure:
            raise DynsecUnavailable(f"the broker refused the command message: {puback}; is this the plugin's admin account?")
        self._wait(
            lambda: all(cid in self.responses for cid in ids),
            f"the response to {commands[0]['command']}; is the dynamic-security plugin loaded on the "
            f"listener of {safe_url(self.url)}?",
        )
        with self.lock:
            responses = [self.responses.pop(cid) for cid in ids]
        for response in responses:
            error = response.get("error")
            if error and error not in accept:
                raise DynsecCommandError(response.get("command", "?"), error)
        return responses

    def execute_one(self, command, *, accept=()):
        return self.execute(command, accept=accept)[0]


# -- what the hub provisions ---------------------------------------------------------------------


def device_role(device_id):
    return f"{DEVICE_ROLE_PREFIX}{device_id}"


def device_topics(device_id):
    """The topics a device may publish to (architecture §4): its own, nothing else."""
    return [f"sensors/{device_id}", f"sensors/{device_id}/#"]


def ensure_role(dynsec, rolename, acls, *, textname=""):
    """Create a role with (acltype, topic) allow ACLs; existing roles and ACLs are kept."""
    dynsec.execute(
        {"command": "createRole", "rolename": rolename, "textname": textname},
        *[
            {"command": "addRoleACL", "rolename": rolename, "acltype": acltype, "topic": topic, "allow": True}
            for acltype, topic in acls
        ],
        accept={ROLE_EXISTS, ACL_EXISTS},
    )


def ensure_client(dynsec, *, username, password, rolename, enabled, clientid=None, textname=""):
    """Create the client with `password` and `rolename` (and, if given, the only client id it may
    connect with), or set them on an existing one; then enable or disable it. Changing the
    password or client id, or disabling, disconnects its sessions."""
    command = {
        "command": "createClient",
        "username": username,
        "password": password,
        "textname": textname,
        "roles": [{"rolename": rolename}],
    }
    if clientid:
        command["clientid"] = clientid
    created = dynsec.execute_one(command, accept={CLIENT_EXISTS})
    if created.get("error") == CLIENT_EXISTS:
        dynsec.execute_one({"command": "setClientPassword", "username": username, "password": password})
        current = dynsec.execute_one({"command": "getClient", "username": username}).get("data", {}).get("client", {})
        if rolename not in {r.get("rolename") for r in current.get("roles", [])}:
            # (2.0.11 answers "Internal error" when the client already has the role: ask first.)
            dynsec.execute_one({"command": "addClientRole", "username": username, "rolename": rolename})
        if clientid and current.get("clientid") != clientid:
            dynsec.execute_one({"command": "setClientId", "username": username, "clientid": clientid})
    set_client_enabled(dynsec, username=username, enabled=enabled)


def set_client_enabled(dynsec, *, username, enabled):
    """Enable or disable a client; a disabled client's sessions are disconnected at once."""
    dynsec.execute_one({"command": "enableClient" if enabled else "disableClient", "username": username})


def set_device_credentials(dynsec, *, device_id, password, enabled):
    """The device's client and its own role: publish to its topics only.

    Username and client id are both the device id: bound to its own client id, a device can never
    take over another connection's session (MQTT lets a CONNECT with a client id in use close the
    older connection — the hub's ingest included, whatever account it uses)."""
    role = device_role(device_id)
    ensure_role(
        dynsec, role, [("publishClientSend", topic) for topic in device_topics(device_id)], textname=f"iothub device {device_id}"
    )
    ensure_client(
        dynsec,
        username=device_id,
        password=password,
        rolename=role,
        enabled=enabled,
        clientid=device_id,
        textname=f"iothub device {device_id}",
    )


def delete_device_credentials(dynsec, *, device_id):
    """Remove the device's client and role; absent ones are fine."""
    dynsec.execute(
        {"command": "deleteClient", "username": device_id},
        {"command": "deleteRole", "rolename": device_role(device_id)},
        accept={CLIENT_NOT_FOUND, ROLE_NOT_FOUND},
    )


def service_acls():
    """What the hub's ingest and bridge need: read every device's readings, also as a shared
    subscription in any group (Mosquitto checks `$share/<group>/...` against the pattern)."""
    return [
        ("subscribePattern", "sensors/#"),
        ("subscribePattern", "$share/+/sensors/#"),
        ("publishClientReceive", "sensors/#"),
        ("unsubscribePattern", "sensors/#"),
        ("unsubscribePattern", "$share/+/sensors/#"),
    ]


def set_service_credentials(dynsec, *, username, password):
    """A service account for `ingest --source mqtt` and `bridge` (their MQTT_URL credentials)."""
    ensure_role(dynsec, SERVICE_ROLE, service_acls(), textname="iothub ingest and bridge")
    ensure_client(
        dynsec, username=username, password=password, rolename=SERVICE_ROLE, enabled=True, textname="iothub service account"
    )
