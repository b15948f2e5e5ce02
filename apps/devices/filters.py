"""django-filter FilterSets of the device master API."""

import django_filters

from .models import Device, DeviceType, Location, Metric
from .selectors import LOCATION_FILTERS


def location_filterset(location_path):
    """A FilterSet base with factory, building, floor and loc_id filters on the location at `location_path`."""
    filters = {name: django_filters.CharFilter(field_name=f"{location_path}__{name}") for name in LOCATION_FILTERS}
    return type("LocationFieldsFilterSet", (django_filters.FilterSet,), filters)


class LocationFilterSet(django_filters.FilterSet):
    """Locations by their own location fields."""

    class Meta:
        model = Location
        fields = ["loc_id", "factory", "building", "floor", "area"]


class MetricFilterSet(django_filters.FilterSet):
    """Metrics by key or unit."""

    class Meta:
        model = Metric
        fields = ["key", "unit"]


class DeviceTypeFilterSet(django_filters.FilterSet):
    """Device types by name or by a metric they report."""

    metric = django_filters.CharFilter(field_name="metrics__key")

    class Meta:
        model = DeviceType
        fields = ["name"]


class DeviceFilterSet(location_filterset("location")):
    """Devices by where they hang, their type and whether they are active."""

    device_type = django_filters.CharFilter(field_name="device_type__name")

    class Meta:
        model = Device
        fields = ["is_active"]
