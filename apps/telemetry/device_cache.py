"""In-memory snapshot of the device master for the ingest hot path.

Readings are enriched with dict lookups only. The change marks of the device master's tables,
read every few seconds, notice admin edits (apps.devices.snapshots), and only then is the snapshot
reloaded, so a new, moved or deactivated device takes effect within IOTHUB_DEVICE_CACHE_REFRESH seconds.
"""

from dataclasses import dataclass

from apps.devices.models import Device, DeviceType, Metric
from apps.devices.snapshots import MasterSnapshot

from .calculations import type_calculations
from .handoff import alert_rules


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    pk: int
    device_id: str
    is_active: bool
    location_pk: int
    type_pk: int
    type_name: str
    metrics: dict  # measured metric key → metric pk, shared by every device of a type
    primary_metric: str
    calculations: object = None  # the type's TypeCalculations (apps.telemetry.calculations), or None


@dataclass(frozen=True, slots=True)
class DeviceMaster:
    devices: dict  # device_id → DeviceInfo
    thresholds: object  # the alert rules' index (apps.telemetry.handoff.AlertRules.load)
    metric_keys: dict  # metric pk → key
    calculating: bool = False  # whether some device type has calculated metrics


def load_device_master():
    types = {}
    metric_keys = {}
    for device_type in DeviceType.objects.select_related("primary_metric").prefetch_related("metrics"):
        all_metrics = {m.key: m for m in device_type.metrics.all()}
        all_metrics.setdefault(device_type.primary_metric.key, device_type.primary_metric)
        metric_keys.update({m.pk: key for key, m in all_metrics.items()})
        measured = {key: m.pk for key, m in all_metrics.items() if not m.is_calculated}
        calculations = type_calculations(device_type.name, all_metrics)
        types[device_type.pk] = (device_type.name, measured, device_type.primary_metric.key, calculations)
    devices = {}
    rows = Device.objects.values_list("pk", "device_id", "is_active", "location_id", "device_type_id")
    for pk, device_id, is_active, location_pk, type_pk in rows.iterator(chunk_size=10_000):
        if type_pk not in types:
            continue  # its type was created after the types were read: the marks moved, the next get() reloads
        devices[device_id] = DeviceInfo(pk, device_id, is_active, location_pk, type_pk, *types[type_pk])
    return DeviceMaster(
        devices=devices,
        thresholds=alert_rules().load(),
        metric_keys=metric_keys,
        calculating=any(calculations for _, _, _, calculations in types.values()),
    )


class DeviceMasterCache(MasterSnapshot):
    """The ingest's DeviceMaster, reloaded within `refresh_seconds` of an admin edit."""

    def __init__(self, *, refresh_seconds):
        super().__init__(
            load=load_device_master,
            tables=(Metric, DeviceType, DeviceType.metrics.through, Device, *alert_rules().tables),
            refresh_seconds=refresh_seconds,
        )
