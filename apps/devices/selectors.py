"""Reads of the device master."""

from dataclasses import dataclass

from .models import Device, DeviceType, Location, Metric
from .snapshots import MasterSnapshot

LOCATION_FILTERS = ("factory", "building", "floor", "loc_id")


def location_json(location):
    return {
        "loc_id": location.loc_id,
        "factory": location.factory,
        "building": location.building,
        "floor": location.floor,
        "area": location.area,
        "name": location.name,
    }


def location_filters(prefix="", **fields):
    """ORM filters for the location fields that have a value (factory, building, floor, loc_id)."""
    return {f"{prefix}{name}": fields[name] for name in LOCATION_FILTERS if fields.get(name)}


def locations_at(*, factory=None, building=None, floor=None, loc_id=None):
    """Locations filtered by their fields, in plant order."""
    return Location.objects.filter(**location_filters(factory=factory, building=building, floor=floor, loc_id=loc_id))


def devices_at(*, factory=None, building=None, floor=None, loc_id=None, active_only=False):
    """Devices filtered by location fields, in plant order."""
    devices = Device.objects.filter(
        **location_filters("location__", factory=factory, building=building, floor=floor, loc_id=loc_id)
    )
    if active_only:
        devices = devices.filter(is_active=True)
    return devices.order_by("location__factory", "location__building", "location__floor", "location__loc_id", "device_id")


NO_VALUE = {"value": None, "status": None, "ts": None}


@dataclass(frozen=True, slots=True)
class LiveDevice:
    """What a live view shows of a device besides its values."""

    device_id: str
    name: str
    is_active: bool
    location: dict  # location_json, shared by the devices of a location
    no_values: dict  # {metric key: NO_VALUE} of its type by key, shared by the devices of a type
    offline_after_ms: float

    def is_offline(self, newest_ms, now_ms):
        return is_offline(newest_ms=newest_ms, now_ms=now_ms, offline_after_ms=self.offline_after_ms)


def is_offline(*, newest_ms, now_ms, offline_after_ms):
    """Offline: nothing ever heard, or nothing for longer than its type allows. The dashboard's
    live.js applies the same rule to an open page (watchSilence)."""
    return not newest_ms or now_ms - newest_ms > offline_after_ms


@dataclass(frozen=True, slots=True)
class Plant:
    """Every location in plant order with its devices by device_id, and the precision of each metric."""

    locations: tuple  # (Location, tuple of LiveDevice)
    precisions: dict  # {metric key: decimal places}

    def locations_at(self, *, factory=None, building=None, floor=None, loc_id=None):
        """(Location, its LiveDevices) of the locations matching the given fields, in plant order."""
        wanted = location_filters(factory=factory, building=building, floor=floor, loc_id=loc_id).items()
        return [
            (location, devices)
            for location, devices in self.locations
            if all(getattr(location, name) == value for name, value in wanted)
        ]

    def devices_at(self, *, factory=None, building=None, floor=None, loc_id=None, active_only=False):
        """The devices at the locations matching the given fields, in plant order (as devices_at)."""
        return [
            device
            for _, devices in self.locations_at(factory=factory, building=building, floor=floor, loc_id=loc_id)
            for device in devices
            if device.is_active or not active_only
        ]


def type_view(device_type):
    """(no_values, offline_after_ms) of a LiveDevice of this type."""
    return {metric.key: NO_VALUE for metric in device_type.metrics.all()}, device_type.offline_after * 1000


def live_device(device):
    """The LiveDevice of one Device (with its type and location)."""
    return LiveDevice(
        device.device_id, device.name, device.is_active, location_json(device.location), *type_view(device.device_type)
    )


def load_plant():
    """The Plant as the database has it now (10,000 devices: ~0.1 s, once per change)."""
    types = {device_type.pk: type_view(device_type) for device_type in DeviceType.objects.prefetch_related("metrics")}
    locations = {location.pk: (location, location_json(location), []) for location in Location.objects.all()}
    rows = devices_at().values_list("device_id", "name", "is_active", "location_id", "device_type_id")
    for device_id, name, is_active, location_pk, type_pk in rows.iterator(chunk_size=10_000):
        if location_pk not in locations or type_pk not in types:
            continue  # created after those were read: the marks moved, the next get() reloads
        _, json, at_location = locations[location_pk]
        at_location.append(LiveDevice(device_id, name, is_active, json, *types[type_pk]))
    return Plant(
        locations=tuple((location, tuple(at)) for location, _, at in locations.values()),
        precisions=dict(Metric.objects.values_list("key", "precision")),
    )


PLANT = MasterSnapshot(
    load=load_plant, tables=(Location, Metric, DeviceType, DeviceType.metrics.through, Device), refresh_seconds=0
)
