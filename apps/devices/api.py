"""REST API of the device master: locations, metrics, device types, devices."""

import logging

from django.contrib.admin.models import ADDITION, CHANGE, DELETION, LogEntry
from django.db import transaction
from django.db.models import ProtectedError
from django.utils.translation import gettext, ngettext
from rest_framework import serializers, viewsets

from iothub.api import Conflict, HubAPIMixin, SlugRelatedField

from .filters import DeviceFilterSet, DeviceTypeFilterSet, LocationFilterSet, MetricFilterSet
from .models import Device, DeviceType, Location, Metric, metric_errors
from .services import set_devices_active

log = logging.getLogger(__name__)


def audit(request, instance, action_flag):
    """Record who changed what through the API in the admin's log (Admin › Log entries)."""
    LogEntry.objects.log_actions(
        request.user.pk,
        [instance],
        action_flag,
        change_message=f"via API ({request.method} {request.path})",
        single_object=True,
    )


class DeviceMasterViewSet(HubAPIMixin, viewsets.ModelViewSet):
    """CRUD of device master objects, audited; deleting one that others still refer to answers 409."""

    def perform_create(self, serializer):
        super().perform_create(serializer)
        audit(self.request, serializer.instance, ADDITION)

    def perform_update(self, serializer):
        super().perform_update(serializer)
        audit(self.request, serializer.instance, CHANGE)

    def perform_destroy(self, instance):
        try:
            with transaction.atomic():  # a refused delete leaves no audit entry behind
                audit(self.request, instance, DELETION)  # first: the entry needs the object's id
                instance.delete()
        except ProtectedError as error:
            example = next(iter(error.protected_objects))
            count = len(error.protected_objects)
            message = ngettext(
                "%(object)s is still in use by %(count)d object, e.g. %(example)s.",
                "%(object)s is still in use by %(count)d objects, e.g. %(example)s.",
                count,
            ) % {"object": instance, "count": count, "example": example}
            raise Conflict(message) from error


class LocationSerializer(serializers.ModelSerializer):
    """A location (architecture §6 location shape)."""

    class Meta:
        model = Location
        fields = ["loc_id", "factory", "building", "floor", "area", "name"]


class MetricSerializer(serializers.ModelSerializer):
    """A metric; one with an expression is calculated from other metrics of the device (apps.devices.expressions)."""

    class Meta:
        model = Metric
        fields = ["key", "unit", "label", "precision", "expression", "max_input_age"]

    def validate(self, attrs):
        instance = self.instance
        key = attrs.get("key", instance and instance.key)
        expression = attrs.get("expression", instance.expression if instance else "")
        errors = metric_errors(key=key, expression=expression, pk=instance and instance.pk)
        if errors:
            raise serializers.ValidationError(errors)
        return attrs


class DeviceTypeSerializer(serializers.ModelSerializer):
    """A device type with its metrics and primary metric by key."""

    metrics = SlugRelatedField(slug_field="key", many=True, queryset=Metric.objects.all())
    primary_metric = SlugRelatedField(slug_field="key", queryset=Metric.objects.all())

    class Meta:
        model = DeviceType
        fields = ["name", "metrics", "primary_metric", "expected_interval"]

    def validate(self, attrs):
        metrics = attrs.get("metrics", self.instance.metrics.all() if self.instance else [])
        primary_metric = attrs.get("primary_metric", self.instance and self.instance.primary_metric)
        if primary_metric not in metrics:
            raise serializers.ValidationError({"primary_metric": gettext("Must be one of the type's metrics.")})
        return attrs


class DeviceSerializer(serializers.ModelSerializer):
    """A device (architecture §6 device shape): type by name, location by loc_id."""

    device_type = SlugRelatedField(slug_field="name", queryset=DeviceType.objects.all())
    location = SlugRelatedField(slug_field="loc_id", queryset=Location.objects.all())

    class Meta:
        model = Device
        fields = ["device_id", "name", "device_type", "location", "is_active", "last_seen_at"]
        read_only_fields = ["last_seen_at"]


class LocationViewSet(DeviceMasterViewSet):
    """Locations, looked up by loc_id."""

    queryset = Location.objects.all()
    serializer_class = LocationSerializer
    filterset_class = LocationFilterSet
    lookup_field = "loc_id"
    lookup_value_regex = "[^/]+"


class MetricViewSet(DeviceMasterViewSet):
    """Metrics, looked up by key."""

    queryset = Metric.objects.all()
    serializer_class = MetricSerializer
    filterset_class = MetricFilterSet
    lookup_field = "key"


class DeviceTypeViewSet(DeviceMasterViewSet):
    """Device types, looked up by name."""

    queryset = DeviceType.objects.select_related("primary_metric").prefetch_related("metrics")
    serializer_class = DeviceTypeSerializer
    filterset_class = DeviceTypeFilterSet
    lookup_field = "name"
    lookup_value_regex = "[^/]+"


class DeviceViewSet(DeviceMasterViewSet):
    """Devices, looked up by device_id."""

    queryset = Device.objects.select_related("device_type", "location")
    serializer_class = DeviceSerializer
    filterset_class = DeviceFilterSet
    lookup_field = "device_id"
    lookup_value_regex = "[^/]+"

    def perform_update(self, serializer):
        was_active = serializer.instance.is_active
        super().perform_update(serializer)
        device = serializer.instance
        if device.is_active != was_active:
            # The MQTT account follows the flag, as in the admin.
            for failed, error in set_devices_active(devices=[device], active=device.is_active):
                log.warning("MQTT account of %s not changed: %s", failed.device_id, error)
