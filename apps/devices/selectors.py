"""Reads of the device master."""

from .models import Device, Location

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
    devices = Device.objects.filter(**location_filters("location__", factory=factory, building=building, floor=floor, loc_id=loc_id))
    if active_only:
        devices = devices.filter(is_active=True)
    return devices.order_by("location__factory", "location__building", "location__floor", "location__loc_id", "device_id")
