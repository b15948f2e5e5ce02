"""In-memory snapshot of the device master for the ingest hot path.

Readings are enriched with dict lookups only. A cheap fingerprint query every few seconds
(max updated_at and row counts) notices admin edits, and only then is the snapshot reloaded,
so a new, moved or deactivated device takes effect within IOTHUB_DEVICE_CACHE_REFRESH seconds.
"""

import time
from dataclasses import dataclass

from django.db.models import Count, Max

from apps.alerts.models import Threshold
from apps.alerts.thresholds import ThresholdIndex, load_threshold_index
from apps.devices.models import Device, DeviceType


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    pk: int
    device_id: str
    is_active: bool
    location_pk: int
    type_pk: int
    type_name: str
    metrics: dict  # metric key → metric pk, shared by every device of a type
    primary_metric: str


@dataclass(frozen=True, slots=True)
class DeviceMaster:
    devices: dict  # device_id → DeviceInfo
    thresholds: ThresholdIndex
    metric_keys: dict  # metric pk → key


def load_device_master():
    types = {}
    metric_keys = {}
    for device_type in DeviceType.objects.select_related("primary_metric").prefetch_related("metrics"):
        metrics = {m.key: m.pk for m in device_type.metrics.all()}
        metrics.setdefault(device_type.primary_metric.key, device_type.primary_metric_id)
        metric_keys.update({pk: key for key, pk in metrics.items()})
        types[device_type.pk] = (device_type.name, metrics, device_type.primary_metric.key)
    devices = {}
    rows = Device.objects.values_list("pk", "device_id", "is_active", "location_id", "device_type_id")
    for pk, device_id, is_active, location_pk, type_pk in rows.iterator(chunk_size=10_000):
        type_name, metrics, primary = types[type_pk]
        devices[device_id] = DeviceInfo(pk, device_id, is_active, location_pk, type_pk, type_name, metrics, primary)
    return DeviceMaster(devices=devices, thresholds=load_threshold_index(), metric_keys=metric_keys)


def master_fingerprint():
    return (
        tuple(Device.objects.aggregate(Max("updated_at"), Count("pk")).values()),
        tuple(DeviceType.objects.aggregate(Max("updated_at"), Count("pk"), Count("metrics")).values()),
        tuple(Threshold.objects.aggregate(Max("updated_at"), Count("pk")).values()),
    )


class DeviceMasterCache:
    """Holds the current DeviceMaster and refreshes it when the database says it changed."""

    def __init__(self, *, refresh_seconds):
        self.refresh_seconds = refresh_seconds
        self._master = None
        self._fingerprint = None
        self._checked_at = 0.0

    def get(self):
        now = time.monotonic()
        if self._master is None or now - self._checked_at >= self.refresh_seconds:
            self._checked_at = now
            fingerprint = master_fingerprint()
            if fingerprint != self._fingerprint:
                self._master = load_device_master()
                self._fingerprint = fingerprint
        return self._master

    def invalidate(self):
        self._master = None
        self._fingerprint = None
