"""Writes of the device master, and device credentials (MQTT passwords, HTTP ingest tokens)."""

from django.db import IntegrityError, transaction
from django.utils import timezone

from . import credentials, dynsec
from .models import Device
from .signals import devices_changed

# -- MQTT credentials (Mosquitto dynamic security, docs/security.md) ------------------------------
# The broker is changed first and the database second: if the broker fails, nothing changes and
# the caller gets a DynsecError; the password is never stored, only its digest.


def provision_mqtt_credentials(*, device):
    """Create or rotate the device's MQTT account; returns the new password (show it once).

    Username = device_id; its role lets it publish to sensors/<device_id> and
    sensors/<device_id>/... only. Rotating disconnects sessions that used the old password. An
    inactive device gets its password, but the account stays disabled until it is activated."""
    credentials.check_device_id_for_mqtt(device.device_id)
    password = credentials.new_mqtt_password()
    with dynsec.DynsecClient() as client:
        dynsec.set_device_credentials(client, device_id=device.device_id, password=password, enabled=device.is_active)
    device.mqtt_password_hash = credentials.digest(password)
    device.mqtt_password_rotated_at = timezone.now()
    device.save(update_fields=["mqtt_password_hash", "mqtt_password_rotated_at"])
    return password


def disable_mqtt_credentials(*, device):
    """Refuse the device's MQTT logins (and disconnect it) until enabled again; a device without
    MQTT credentials needs nothing."""
    _set_mqtt_enabled(device, enabled=False)


def enable_mqtt_credentials(*, device):
    """Accept the device's MQTT logins again (its password is unchanged)."""
    _set_mqtt_enabled(device, enabled=True)


def _set_mqtt_enabled(device, *, enabled):
    if not device.has_mqtt_credentials:
        return
    with dynsec.DynsecClient() as client:
        dynsec.set_client_enabled(client, username=device.device_id, enabled=enabled)


def delete_mqtt_credentials(*, device):
    """Remove the device's MQTT account and role (e.g. before deleting the device)."""
    if not device.has_mqtt_credentials:
        return
    with dynsec.DynsecClient() as client:
        dynsec.delete_device_credentials(client, device_id=device.device_id)
    device.mqtt_password_hash = ""
    device.mqtt_password_rotated_at = None
    if device.pk is not None:
        device.save(update_fields=["mqtt_password_hash", "mqtt_password_rotated_at"])


def set_devices_active(*, devices, active):
    """Activate or deactivate devices and enable or disable their MQTT accounts to match.

    The database changes in any case (ingest dead-letters an inactive device's readings even if
    the broker still lets it in); returns [(device, DynsecError)] for accounts the broker could
    not change, so the caller can report them and retry."""
    devices = list(devices)
    # update() skips auto_now; the ingest device cache watches updated_at.
    changed = Device.objects.filter(pk__in=[d.pk for d in devices])
    changed.update(is_active=active, updated_at=timezone.now())
    devices_changed.send(sender=Device, factories=set(changed.values_list("location__factory", flat=True)))
    failures = []
    with_credentials = [d for d in devices if d.has_mqtt_credentials]
    if with_credentials:
        try:
            with dynsec.DynsecClient() as client:
                for device in with_credentials:
                    try:
                        dynsec.set_client_enabled(client, username=device.device_id, enabled=active)
                    except dynsec.DynsecCommandError as error:
                        failures.append((device, error))
        except dynsec.DynsecError as error:
            done = {d.pk for d, _ in failures}
            failures += [(d, error) for d in with_credentials if d.pk not in done]
    for device in devices:
        device.is_active = active
    return failures


def provision_mqtt_service_account(*, username):
    """Create or rotate the hub's own MQTT account (ingest, bridge): may subscribe to sensors/#
    and $share/<any group>/sensors/#. Returns the password for MQTT_URL (shown once, not stored)."""
    credentials.check_device_id_for_mqtt(username)
    if Device.objects.filter(device_id=username).exists():
        raise ValueError(f"{username!r} is a device id; choose another name for the service account")
    password = credentials.new_mqtt_password()
    with dynsec.DynsecClient() as client:
        dynsec.set_service_credentials(client, username=username, password=password)
    return password


# -- HTTP ingest tokens -----------------------------------------------------------------------------


def issue_ingest_token(*, device):
    """Issue (or replace) the device's HTTP ingest token; returns it (show it once).

    POST /api/v1/ingest/ with `Authorization: Device <token>`. The old token stops working at once."""
    for _attempt in range(5):
        prefix, token = credentials.new_ingest_token()
        device.ingest_token_prefix = prefix
        device.ingest_token_hash = credentials.digest(token)
        device.ingest_token_issued_at = timezone.now()
        try:
            with transaction.atomic():
                device.save(update_fields=["ingest_token_prefix", "ingest_token_hash", "ingest_token_issued_at"])
        except IntegrityError:  # a prefix collision (48 random bits): draw again
            continue
        return token
    raise RuntimeError("could not draw a unique ingest token prefix")


def revoke_ingest_token(*, device):
    """The device's HTTP ingest token stops working (401) until a new one is issued."""
    device.ingest_token_prefix = None
    device.ingest_token_hash = ""
    device.ingest_token_issued_at = None
    device.save(update_fields=["ingest_token_prefix", "ingest_token_hash", "ingest_token_issued_at"])
