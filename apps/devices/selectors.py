"""Reads of the device master."""

from .models import Device

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


def devices_at(*, factory=None, building=None, floor=None, loc_id=None, active_only=False):
    """Devices filtered by location fields, in plant order."""
    filters = {
        f"location__{name}": value
        for name, value in {"factory": factory, "building": building, "floor": floor, "loc_id": loc_id}.items()
        if value
    }
    devices = Device.objects.filter(**filters)
    if active_only:
        devices = devices.filter(is_active=True)
    return devices.order_by("location__factory", "location__building", "location__floor", "location__loc_id", "device_id")
