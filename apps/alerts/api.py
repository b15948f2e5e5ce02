"""REST API of thresholds (CRUD) and alerts (history, acknowledge, resolve)."""

from copy import copy
from datetime import timedelta

import django_filters
from django.core.exceptions import ValidationError as DjangoValidationError
from django.utils import timezone
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _
from drf_spectacular.utils import PolymorphicProxySerializer, extend_schema
from rest_framework import serializers, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from apps.devices.api import DeviceMasterViewSet
from apps.devices.filters import location_filterset
from apps.devices.models import Device, DeviceType, Location, Metric
from apps.devices.selectors import locations_at
from apps.telemetry.api import LocationQuerySerializer, PlantPeriodField
from iothub.api import Conflict, ErrorSerializer, HubAPIMixin, IsPlantStaff, SlugRelatedField

from .kpis import LONGEST_KPI_PERIOD, alarm_kpis
from .models import Alert, MaintenanceWindow, Threshold
from .selectors import effective_thresholds
from .serializers import AlertSerializer
from .services import AlertNotActive, acknowledge_alert, resolve_alert, shelve_alert, unshelve_alert


class ModelCleanSerializer(serializers.ModelSerializer):
    """Validated as a whole by the model's own clean(), for a partial update too."""

    def validate(self, attrs):
        instance = copy(self.instance) if self.instance else self.Meta.model()
        for field, value in attrs.items():
            setattr(instance, field, value)
        try:
            instance.clean()
        except DjangoValidationError as error:
            raise serializers.ValidationError(serializers.as_serializer_error(error)) from error
        return attrs


class ThresholdSerializer(ModelCleanSerializer):
    """A threshold (architecture §6 threshold shape), validated by the model's own rules."""

    metric = SlugRelatedField(slug_field="key", queryset=Metric.objects.all())
    device = SlugRelatedField(slug_field="device_id", queryset=Device.objects.all(), allow_null=True, required=False)
    location = SlugRelatedField(slug_field="loc_id", queryset=Location.objects.all(), allow_null=True, required=False)
    device_type = SlugRelatedField(slug_field="name", queryset=DeviceType.objects.all(), allow_null=True, required=False)

    class Meta:
        model = Threshold
        fields = ["id", *Threshold.EDITABLE_FIELDS]
        extra_kwargs = {"hysteresis": {"min_value": 0}}


class ThresholdFilterSet(django_filters.FilterSet):
    """Thresholds by metric and by scope (device, location, device type)."""

    metric = django_filters.CharFilter(field_name="metric__key")
    device = django_filters.CharFilter(field_name="device__device_id")
    location = django_filters.CharFilter(field_name="location__loc_id")
    device_type = django_filters.CharFilter(field_name="device_type__name")

    class Meta:
        model = Threshold
        fields = ["enabled"]


class EffectiveThresholdSerializer(serializers.Serializer):
    """The threshold in force for one metric of a device, and its scope."""

    metric = serializers.CharField()
    scope = serializers.CharField(allow_null=True)
    threshold = ThresholdSerializer(allow_null=True)


class EffectiveQuerySerializer(serializers.Serializer):
    device = SlugRelatedField(slug_field="device_id", queryset=Device.objects.select_related("device_type"))


PLATFORM_LEVELS = ("warning", "critical")


class PlatformThresholdSerializer(serializers.Serializer):
    """The plant platform's flat threshold: one band (warning or critical) of a metric for a sensor
    type, or for every sensor without one. It maps onto the hub threshold of that metric scoped to
    the device type named `sensor_type` (global without), as its `<level>_min` and `<level>_max`."""

    sensor_type = SlugRelatedField(
        slug_field="name",
        queryset=DeviceType.objects.all(),
        allow_null=True,
        required=False,
        error_messages={"does_not_exist": "No device type is named {value}: sensor_type maps onto the hub's device types."},
    )
    metric_name = SlugRelatedField(slug_field="key", queryset=Metric.objects.all())
    min_value = serializers.FloatField(allow_null=True, required=False)
    max_value = serializers.FloatField(allow_null=True, required=False)
    level = serializers.ChoiceField(
        PLATFORM_LEVELS,
        error_messages={"invalid_choice": _("The hub's thresholds have warning and critical bands only, not {input!r}.")},
    )

    def validate(self, attrs):
        if attrs.get("min_value") is None and attrs.get("max_value") is None:
            raise serializers.ValidationError(_("Set min_value, max_value or both."))
        return attrs

    def hub_fields(self):
        """The hub threshold's fields (ThresholdSerializer input) that the flat form sets."""
        flat = self.validated_data
        level = flat["level"]
        return {
            "metric": flat["metric_name"].key,
            "device": None,
            "location": None,
            "device_type": flat["sensor_type"].name if flat.get("sensor_type") else None,
            f"{level}_min": flat.get("min_value"),
            f"{level}_max": flat.get("max_value"),
        }

    def hub_errors(self, errors):
        """Errors of the hub's fields under the flat form's names (a band of the other level keeps its own)."""
        level = self.validated_data["level"]
        names = {"metric": "metric_name", "device_type": "sensor_type", f"{level}_min": "min_value", f"{level}_max": "max_value"}
        return {names.get(field, field): messages for field, messages in errors.items()}


HUB_SCOPE_AND_BANDS = {*Threshold.SCOPE_FIELDS, *Threshold.BAND_FIELDS}


def platform_form(data):
    """The flat form's serializer when `data` is in it; None for the hub's own form."""
    keys = set(data) if isinstance(data, dict) else set()
    if not keys & set(PlatformThresholdSerializer().fields):
        return None
    if keys & HUB_SCOPE_AND_BANDS:
        raise serializers.ValidationError(
            "Send either the hub's threshold fields or the platform's flat form (sensor_type, metric_name, min_value, max_value, level)."
        )
    flat = PlatformThresholdSerializer(data=data)
    flat.is_valid(raise_exception=True)
    return flat


class ThresholdViewSet(DeviceMasterViewSet):
    """Thresholds: global, or for one device, location or device type. POST and PUT also take the
    platform's flat form (PlatformThresholdSerializer); POST of a band whose threshold exists sets
    that band on it (200)."""

    queryset = Threshold.objects.select_related("metric", "device", "location", "device_type").order_by("pk")
    serializer_class = ThresholdSerializer
    filterset_class = ThresholdFilterSet

    @extend_schema(
        request=PolymorphicProxySerializer("ThresholdForm", [ThresholdSerializer, PlatformThresholdSerializer], None),
        responses={200: ThresholdSerializer, 201: ThresholdSerializer},
    )
    def create(self, request, *args, **kwargs):
        flat = platform_form(request.data)
        if flat is None:
            return super().create(request, *args, **kwargs)
        fields = flat.hub_fields()
        existing = (
            self.get_queryset()
            .filter(metric__key=fields["metric"], device_type__name=fields["device_type"], device=None, location=None)
            .first()
        )
        return self.save_platform_form(flat, existing, status=200 if existing else 201)

    @extend_schema(request=PolymorphicProxySerializer("ThresholdForm", [ThresholdSerializer, PlatformThresholdSerializer], None))
    def update(self, request, *args, **kwargs):
        flat = platform_form(request.data)
        if flat is None:
            return super().update(request, *args, **kwargs)
        return self.save_platform_form(flat, self.get_object(), status=200)

    def save_platform_form(self, flat, instance, *, status):
        serializer = self.get_serializer(instance, data=flat.hub_fields(), partial=instance is not None)
        if not serializer.is_valid():
            raise serializers.ValidationError(flat.hub_errors(serializer.errors))
        if instance is None:
            self.perform_create(serializer)
        else:
            self.perform_update(serializer)
        return Response(serializer.data, status=status)

    @extend_schema(parameters=[EffectiveQuerySerializer], responses=EffectiveThresholdSerializer(many=True))
    @action(detail=False, filterset_class=None, pagination_class=None)
    def effective(self, request):
        """The threshold in force for every metric of `?device=` (device > location > device type > global)."""
        query = EffectiveQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        device = query.validated_data["device"]
        metrics = list(device.device_type.metrics.all())
        effective = effective_thresholds(device=device, metrics=metrics)
        thresholds = self.get_queryset().in_bulk([bands.pk for bands in effective.values() if bands])
        rows = []
        for metric in metrics:
            threshold = thresholds.get(effective[metric.pk].pk) if effective[metric.pk] else None
            rows.append({"metric": metric.key, "scope": threshold.scope_label if threshold else None, "threshold": threshold})
        return Response(EffectiveThresholdSerializer(rows, many=True).data)


class MaintenanceWindowSerializer(ModelCleanSerializer):
    """A maintenance window of one device or one location: {"device" or "loc_id", "start", "end", "reason"}."""

    device = SlugRelatedField(slug_field="device_id", queryset=Device.objects.all(), allow_null=True, required=False)
    loc_id = SlugRelatedField(
        source="location", slug_field="loc_id", queryset=Location.objects.all(), allow_null=True, required=False
    )
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = MaintenanceWindow
        fields = ["id", "device", "loc_id", "start", "end", "reason", "created_by", "created_at"]


class MaintenanceWindowFilterSet(django_filters.FilterSet):
    """Windows by target, and those still to come or running (`?current=true`)."""

    device = django_filters.CharFilter(field_name="device__device_id")
    loc_id = django_filters.CharFilter(field_name="location__loc_id")
    current = django_filters.BooleanFilter(method="filter_current")

    class Meta:
        model = MaintenanceWindow
        fields = []

    def filter_current(self, queryset, name, value):
        now = timezone.now()
        return queryset.filter(end__gt=now) if value else queryset.filter(end__lte=now)


class MaintenanceWindowViewSet(DeviceMasterViewSet):
    """Maintenance windows: admins write, plant staff read."""

    queryset = MaintenanceWindow.objects.select_related("device", "location", "created_by")
    serializer_class = MaintenanceWindowSerializer
    filterset_class = MaintenanceWindowFilterSet

    def perform_create(self, serializer):
        serializer.validated_data["created_by"] = self.request.user
        super().perform_create(serializer)


class AlertFilterSet(location_filterset("device__location")):
    """Alerts by state, level, device, metric and where the device hangs."""

    device = django_filters.CharFilter(field_name="device__device_id")
    metric = django_filters.CharFilter(field_name="metric__key")

    class Meta:
        model = Alert
        fields = ["state", "level"]


class AlertNoteSerializer(serializers.Serializer):
    """The optional note of an acknowledgement or resolution."""

    note = serializers.CharField(max_length=1000, allow_blank=True, default="")


class ShelveSerializer(AlertNoteSerializer):
    """How long to shelve an alert (1 minute to 1 day) and why."""

    minutes = serializers.IntegerField(min_value=1, max_value=1440)


DAYLIGHT_SAVING_SLACK = timedelta(hours=1)  # plant-local days: a span may have an hour more


class KpiQuerySerializer(LocationQuerySerializer):
    """A span of plant local days and, optionally, where (factory, building, floor or loc_id)."""

    start = PlantPeriodField(help_text=_("From the start of this day (yyyyMMdd; or a month yyyyMM, a year yyyy)."))
    end = PlantPeriodField(help_text=_("To the end of this day (yyyyMMdd; or a month yyyyMM, a year yyyy)."))

    def validate(self, attrs):
        if attrs["end"].end <= attrs["start"].start:
            raise serializers.ValidationError({"end": _("Must not end before start begins.")})
        # A longer span is no report anyone reads, and thousands of years of buckets took the worker down.
        if attrs["end"].end - attrs["start"].start > LONGEST_KPI_PERIOD + DAYLIGHT_SAVING_SLACK:
            raise serializers.ValidationError({"end": _("Must end at most a year after start begins.")})
        return attrs


class AlarmKpisSerializer(serializers.Serializer):
    """EEMUA 191 / ISA-18.2 alarm KPIs of a period (schema only)."""

    start = serializers.DateTimeField()
    end = serializers.DateTimeField()
    alarms = serializers.IntegerField()
    alarms_per_hour = serializers.DictField(help_text=_("average, peak, and the EEMUA 191 target (6)"))
    alarms_per_10min = serializers.DictField(help_text=_("average and peak"))
    peak_alarms_per_10min = serializers.IntegerField()
    flood_percent = serializers.FloatField(help_text=_("share of 10-minute periods with more than 10 alarms"))
    chattering = serializers.ListField(
        child=serializers.DictField(), help_text=_("alarms opened 3 times or more within a minute")
    )
    stale = serializers.IntegerField(help_text=_("alarms active for more than 24 hours at the end of the period"))
    top = serializers.ListField(child=serializers.DictField(), help_text=_("the 10 most frequent alarms and their share"))
    shelved = serializers.IntegerField()
    suppressed = serializers.IntegerField()


class AlertViewSet(HubAPIMixin, viewsets.ReadOnlyModelViewSet):
    """Alert history, newest first; plant staff acknowledge and resolve."""

    queryset = Alert.objects.select_related("device__location", "metric", "acknowledged_by").order_by("-opened_at", "-pk")
    serializer_class = AlertSerializer
    filterset_class = AlertFilterSet
    permission_classes = [IsPlantStaff]

    @extend_schema(request=AlertNoteSerializer, responses={200: AlertSerializer, 409: ErrorSerializer})
    @action(detail=True, methods=["post"])
    def acknowledge(self, request, pk=None):
        """Acknowledge the alert; a resolved alert answers 409 with its state."""
        return self.change_state(acknowledge_alert, AlertNoteSerializer)

    @extend_schema(request=AlertNoteSerializer, responses={200: AlertSerializer, 409: ErrorSerializer})
    @action(detail=True, methods=["post"])
    def resolve(self, request, pk=None):
        """Resolve the alert; a resolved alert answers 409 with its state."""
        return self.change_state(resolve_alert, AlertNoteSerializer)

    @extend_schema(request=ShelveSerializer, responses={200: AlertSerializer, 409: ErrorSerializer})
    @action(detail=True, methods=["post"])
    def shelve(self, request, pk=None):
        """Shelve an active alert for `minutes` (1–1440): no notifications or reminders until then; a
        resolved alert answers 409 with its state."""
        return self.change_state(shelve_alert, ShelveSerializer)

    @extend_schema(request=AlertNoteSerializer, responses={200: AlertSerializer, 409: ErrorSerializer})
    @action(detail=True, methods=["post"])
    def unshelve(self, request, pk=None):
        """End a shelving early: the alert returns to its state and is notified again; a resolved alert
        answers 409 with its state."""
        return self.change_state(unshelve_alert, AlertNoteSerializer)

    def change_state(self, change, body_serializer):
        alert = self.get_object()
        body = body_serializer(data=self.request.data)
        body.is_valid(raise_exception=True)
        try:
            change(alert_id=alert.pk, user=self.request.user, **body.validated_data)
        except AlertNotActive as error:
            message = gettext("Alert %(id)s is already %(state)s. Nothing changed.") % {
                "id": error.alert.pk,
                "state": error.alert.get_state_display(),
            }
            raise Conflict(message, code="alert_not_active", state=[error.alert.state]) from error
        return Response(AlertSerializer(self.get_object()).data)

    @extend_schema(parameters=[KpiQuerySerializer], responses=AlarmKpisSerializer)
    @action(detail=False, filterset_class=None, pagination_class=None)
    def kpis(self, request):
        """Alarm KPIs (EEMUA 191 / ISA-18.2) of `?start=yyyyMMdd&end=yyyyMMdd`, for the plant or `?loc_id=` (or factory,
        building, floor); from rollups that beat refreshes every minute."""
        query = KpiQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        params = query.validated_data
        where = {name: params.get(name) for name in ("factory", "building", "floor", "loc_id")}
        locations = locations_at(**where) if any(where.values()) else None
        return Response(alarm_kpis(start=params["start"].start, end=params["end"].end, locations=locations, now=timezone.now()))
