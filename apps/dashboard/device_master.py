"""The overview follows the device master: a change of a device or location (admin, API, import,
activation) tells every open overview which factories to render again, once per transaction."""

import logging
import threading

from django.db import transaction
from django.db.models.signals import post_delete, post_save, pre_save

from apps.devices.models import Device, Location
from apps.devices.signals import devices_changed
from apps.live.broadcast import LIVE_GROUP, group_send_all

log = logging.getLogger(__name__)
pending = threading.local()


def factories_changed(factories):
    """Push the factories changed in this transaction once it commits (at once outside one)."""
    factories = {f for f in factories if f is not None}
    if not factories:
        return
    if not hasattr(pending, "factories"):
        pending.factories = set()
    pending.factories |= factories
    transaction.on_commit(push_factories)


def push_factories():
    factories = getattr(pending, "factories", None)
    if not factories:
        return  # pushed by an earlier callback of the same transaction
    pending.factories = set()
    try:
        group_send_all([(LIVE_GROUP, {"type": "live.devices", "factories": sorted(factories)})])
    except Exception:  # best effort, like every live view: a reload shows the change
        log.warning("live push of device-master changes failed", exc_info=True)


def remember_factory_before(sender, instance, **kwargs):
    """Where the row stood before this save: a moved device or renamed factory changes two."""
    instance._factory_before = None
    if instance.pk is not None:
        lookup = "location__factory" if sender is Device else "factory"
        instance._factory_before = sender.objects.filter(pk=instance.pk).values_list(lookup, flat=True).first()


def device_saved(sender, instance, **kwargs):
    location = instance.location if instance.location_id else None
    factories_changed({getattr(instance, "_factory_before", None), location and location.factory})


def location_saved(sender, instance, **kwargs):
    factories_changed({getattr(instance, "_factory_before", None), instance.factory})


def connect():
    for model in (Device, Location):
        pre_save.connect(remember_factory_before, sender=model, dispatch_uid=f"dashboard-{model.__name__}-before")
    post_save.connect(device_saved, sender=Device, dispatch_uid="dashboard-device-saved")
    post_delete.connect(device_saved, sender=Device, dispatch_uid="dashboard-device-deleted")
    post_save.connect(location_saved, sender=Location, dispatch_uid="dashboard-location-saved")
    post_delete.connect(location_saved, sender=Location, dispatch_uid="dashboard-location-deleted")
    devices_changed.connect(
        lambda sender, factories, **kwargs: factories_changed(factories), weak=False, dispatch_uid="dashboard-devices-changed"
    )
