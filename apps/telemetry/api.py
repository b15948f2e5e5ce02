"""REST API of telemetry: realtime status, aggregation (also in the plant platform's shapes), raw readings (JSON or CSV), dead letters."""

import csv
import io
import re
from datetime import UTC, date, datetime, time, timedelta
from typing import NamedTuple

import django_filters
from asgiref.sync import sync_to_async
from django.http import StreamingHttpResponse
from django.utils import timezone
from django.utils.translation import gettext
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    PolymorphicProxySerializer,
    extend_schema,
    extend_schema_field,
    inline_serializer,
)
from rest_framework import mixins, serializers, viewsets
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.pagination import CursorPagination
from rest_framework.renderers import BaseRenderer
from rest_framework.settings import api_settings
from rest_framework.views import APIView

from apps.devices.api import LocationSerializer
from apps.devices.models import Device, Metric
from apps.devices.selectors import LOCATION_FILTERS, PLANT, locations_at
from iothub.api import HubAPIMixin, IsAdmin, SlugRelatedField, rendered_answer

from .aggregation import INTERVALS, aggregate_readings
from .compat import platform_hours, platform_realtime
from .models import DeadLetter, Reading
from .rollups import plant_tz
from .selectors import realtime_status

CSV_HEADER = ("time", "device", "metric", "value")
CSV_CHUNK_ROWS = 5000
CSV_CHUNK_BYTES = 256 * 1024
PERIOD_PATTERN = r"^\d{4}(\d{2}){0,2}$"


class LocationQuerySerializer(serializers.Serializer):
    """Which devices: those at the location given by any of these fields."""

    factory = serializers.CharField(required=False, allow_blank=True)
    building = serializers.CharField(required=False, allow_blank=True)
    floor = serializers.CharField(required=False, allow_blank=True)
    loc_id = serializers.CharField(required=False, allow_blank=True)


class MetricStatusSerializer(serializers.Serializer):
    """Latest value of one metric (schema only): status null where no threshold applies, ts in epoch ms."""

    value = serializers.FloatField(allow_null=True)
    status = serializers.ChoiceField(["normal", "warning", "critical"], allow_null=True)
    ts = serializers.IntegerField(allow_null=True)


class DeviceStatusSerializer(serializers.Serializer):
    """One device of the realtime answer (schema only)."""

    device = serializers.CharField()
    name = serializers.CharField()
    location = LocationSerializer()
    offline = serializers.BooleanField()
    metrics = serializers.DictField(child=MetricStatusSerializer())


class RealtimeSerializer(serializers.Serializer):
    """The realtime answer (architecture §6 realtime shape; schema only)."""

    capture_dt = serializers.DateTimeField()
    ymd = serializers.CharField(help_text="capture_dt's plant local day, yyyyMMdd")
    hh = serializers.CharField(help_text="capture_dt's plant local hour, 00-23")
    measurements = DeviceStatusSerializer(many=True)


class RealtimeView(HubAPIMixin, APIView):
    """Latest value and status of every metric of every active device at a location."""

    @extend_schema(parameters=[LocationQuerySerializer], responses=RealtimeSerializer)
    def get(self, request):
        query = LocationQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        return rendered_answer(request, lambda: realtime_status(**query.validated_data))


class Period(NamedTuple):
    """A span of time: start inclusive, end exclusive."""

    start: datetime
    end: datetime


@extend_schema_field({"type": "string", "pattern": PERIOD_PATTERN, "example": "202610"})
class PlantPeriodField(serializers.Field):
    """A year, month or day of plant local time written yyyy, yyyyMM or yyyyMMdd → its Period."""

    default_error_messages = {"invalid": "Use yyyy, yyyyMM or yyyyMMdd.", "not_a_date": "{value} is not a real date."}

    def to_internal_value(self, data):
        if not isinstance(data, str) or not re.fullmatch(PERIOD_PATTERN, data):
            self.fail("invalid")
        try:
            first = date(int(data[:4]), int(data[4:6] or 1), int(data[6:8] or 1))
            if len(data) == 4:
                after = date(first.year + 1, 1, 1)
            elif len(data) == 6:
                after = date(first.year + first.month // 12, first.month % 12 + 1, 1)
            else:
                after = first + timedelta(days=1)
        except (ValueError, OverflowError):
            self.fail("not_a_date", value=data)
        tz = plant_tz()
        return Period(datetime.combine(first, time.min, tzinfo=tz), datetime.combine(after, time.min, tzinfo=tz))


class PeriodQuerySerializer(serializers.Serializer):
    """A span of whole plant local years, months or days."""

    start_date = PlantPeriodField(help_text="From the start of this year, month or day (yyyy, yyyyMM or yyyyMMdd).")
    end_date = PlantPeriodField(help_text="To the end of this year, month or day (yyyy, yyyyMM or yyyyMMdd).")

    def validate(self, attrs):
        if attrs["end_date"].end <= attrs["start_date"].start:
            raise ValidationError({"end_date": gettext("Must not end before start_date begins.")})
        return attrs


class AggregationQuerySerializer(LocationQuerySerializer, PeriodQuerySerializer):
    """The query of an aggregation: a span of plant local days, a bucket size, which devices."""

    interval = serializers.ChoiceField(INTERVALS, default="hour")
    device = SlugRelatedField(
        slug_field="device_id",
        queryset=Device.objects.all(),
        required=False,
        allow_null=True,
        help_text="Only this device (device_id).",
    )


class BucketSerializer(serializers.Serializer):
    """One time bucket of one location (schema only)."""

    start = serializers.DateTimeField()
    min = serializers.FloatField()
    max = serializers.FloatField()
    avg = serializers.FloatField()
    count = serializers.IntegerField()


class LocationBucketsSerializer(serializers.Serializer):
    """The buckets of one location (schema only)."""

    location = LocationSerializer()
    buckets = BucketSerializer(many=True)


class AggregationSerializer(serializers.Serializer):
    """The aggregation answer (architecture §6 aggregation shape; schema only)."""

    metric = serializers.CharField()
    interval = serializers.ChoiceField(INTERVALS)
    results = LocationBucketsSerializer(many=True)


def known_metric(key):
    """The Metric of a path's key; an unknown one is a 400 naming the field."""
    found = Metric.objects.filter(key=key).first() if "\x00" not in key else None
    if found is None:
        raise ValidationError({"metric": gettext("Unknown metric %(key)r.") % {"key": key}})
    return found


class AggregationView(HubAPIMixin, APIView):
    """Min, max, avg and count of a metric per hour or plant local day, per location."""

    @extend_schema(
        parameters=[
            OpenApiParameter("metric", str, OpenApiParameter.PATH, description="Metric key."),
            AggregationQuerySerializer,
        ],
        responses=AggregationSerializer,
    )
    def get(self, request, metric):
        found = known_metric(metric)
        query = AggregationQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        params = query.validated_data
        return rendered_answer(
            request,
            lambda: {
                "metric": found.key,
                "interval": params["interval"],
                "results": aggregate_readings(
                    metric=found,
                    start=params["start_date"].start,
                    end=params["end_date"].end,
                    interval=params["interval"],
                    tz=plant_tz(),
                    locations=locations_at(**{name: params.get(name) for name in LOCATION_FILTERS}),
                    device_id=params["device"].device_id if params.get("device") else None,
                ),
            },
        )


# --- the plant platform's realtime and aggregation services (docs/compatibility.md) -------------


@extend_schema_field({"oneOf": [{"type": "integer"}, {"type": "string"}], "example": 1})
class PlatformFloorField(serializers.Field):
    """A floor: a number where the hub's floor is one ("1" → 1), else the hub's text."""


class PlatformLocationSerializer(serializers.Serializer):
    """Where a sensor sits, as the platform wrote it (schema only)."""

    factory = serializers.CharField()
    building = serializers.CharField()
    floor = PlatformFloorField()
    loc_id = serializers.CharField()


class PlatformValueSerializer(serializers.Serializer):
    """A latest value as a decimal string of the metric's precision, and its threshold status (schema only)."""

    value = serializers.CharField(allow_null=True, help_text='e.g. "22.1"')
    status = serializers.ChoiceField(["normal", "warning", "critical"], allow_null=True)


class PlatformMeasurementSerializer(serializers.Serializer):
    """One sensor (device) of the platform's realtime answer (schema only)."""

    location = PlatformLocationSerializer()
    metrics = serializers.DictField(child=PlatformValueSerializer())


class PlatformRealtimeSerializer(serializers.Serializer):
    """The platform's realtime answer (schema only)."""

    capture_dt = serializers.CharField(help_text="UTC, e.g. 2025-09-12T05:59:38.837000Z")
    ymd = serializers.CharField(help_text="capture_dt's plant local day, yyyyMMdd")
    hh = serializers.CharField(help_text="capture_dt's plant local hour, 00-23")
    measurements = PlatformMeasurementSerializer(many=True)


def platform_locations(field, value):
    """The Locations whose `field` (factory, building, floor or loc_id) is `value`; none: 404."""
    locations = [location for location, _ in PLANT.get().locations_at(**{field: value})]
    if not locations:
        raise NotFound(f"No location has {field} {value!r}.")
    return locations


class PlatformRealtimeView(HubAPIMixin, APIView):
    """The platform's realtime service: the latest value and status of every metric of every active
    sensor at the locations of a factory, building, floor or loc_id; 404 where no location has it."""

    field = None  # set per URL: factory, building, floor or loc_id

    @extend_schema(tags=["compatibility"], responses=PlatformRealtimeSerializer)
    def get(self, request, **path):
        value = path[self.field]
        platform_locations(self.field, value)
        return rendered_answer(request, lambda: platform_realtime(**{self.field: value}))


class PlatformLocationHoursSerializer(PlatformLocationSerializer):
    """A location with its hours (schema only)."""

    area = serializers.CharField()
    date = inline_serializer(
        "PlatformHour",
        {
            "ymd": serializers.CharField(),
            "hour": serializers.CharField(),
            "metrics": serializers.DictField(
                child=serializers.CharField(), help_text='{"<metric>_max": "27.00", "<metric>_avg": "27.00"}'
            ),
        },
        many=True,
    )


class PlatformAggregationView(HubAPIMixin, APIView):
    """The platform's aggregation service: hourly max and avg of a metric per location over whole
    plant local years, months or days."""

    field = None  # set per URL: loc_id (one location) or factory (its locations)

    @extend_schema(
        tags=["compatibility"],
        parameters=[PeriodQuerySerializer],
        responses={
            200: PolymorphicProxySerializer(
                "PlatformAggregation",
                serializers=[
                    inline_serializer("PlatformAggregationLocation", {"location": PlatformLocationHoursSerializer()}),
                    inline_serializer("PlatformAggregationLocations", {"locations": PlatformLocationHoursSerializer(many=True)}),
                ],
                resource_type_field_name=None,
            )
        },
    )
    def get(self, request, metric, **path):
        found = known_metric(metric)
        query = PeriodQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        locations = platform_locations(self.field, path[self.field])
        start, end = query.validated_data["start_date"].start, query.validated_data["end_date"].end

        def answer():
            hours = platform_hours(metric=found, start=start, end=end, locations=locations)
            return {"location": hours[0]} if self.field == "loc_id" else {"locations": hours}

        return rendered_answer(request, answer)


class ReadingSerializer(serializers.ModelSerializer):
    """One raw reading."""

    device = serializers.SlugRelatedField(slug_field="device_id", read_only=True)
    metric = serializers.SlugRelatedField(slug_field="key", read_only=True)

    class Meta:
        model = Reading
        fields = ["device", "metric", "time", "value"]


class UTCDateTimeFilter(django_filters.IsoDateTimeFilter):
    """ISO 8601 in any offset Python accepts; PostgreSQL refuses offsets beyond ±15:59, so it gets UTC."""

    def filter(self, qs, value):
        return super().filter(qs, value.astimezone(UTC) if value else value)


class KnownObjectFilter(django_filters.ModelChoiceFilter):
    """An object by its natural key `to_field_name`; an unknown one is a 400 naming the field, as in aggregation/."""

    def __init__(self, *, what, **kwargs):
        super().__init__(error_messages={"invalid_choice": f"Unknown {what} %(value)r."}, required=True, **kwargs)


class ReadingFilterSet(django_filters.FilterSet):
    """Readings of one device's metric, optionally in [start, end)."""

    device = KnownObjectFilter(what="device", queryset=Device.objects.all(), to_field_name="device_id")
    metric = KnownObjectFilter(what="metric", queryset=Metric.objects.all(), to_field_name="key")
    start = UTCDateTimeFilter(field_name="time", lookup_expr="gte")
    end = UTCDateTimeFilter(field_name="time", lookup_expr="lt")

    class Meta:
        model = Reading
        fields = []


class ReadingCursorPagination(CursorPagination):
    """Readings oldest first; follow the next link to walk them all."""

    ordering = "time"
    page_size = 1000
    page_size_query_param = "page_size"
    max_page_size = 10_000


class CSVRenderer(BaseRenderer):
    """text/csv for ?format=csv. Readings stream from the view; this renders the rest (errors) as a header row and a row."""

    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(data)
        writer.writerow(" ".join(map(str, value)) if isinstance(value, list) else value for value in data.values())
        return buffer.getvalue()


def csv_chunks(rows):
    """rows (a values_list of CSV_HEADER) as CSV text in chunks, read by a server-side cursor: constant memory."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_HEADER)
    tz = timezone.get_current_timezone()
    for at, device, metric, value in rows.iterator(chunk_size=CSV_CHUNK_ROWS):
        writer.writerow((at.astimezone(tz).isoformat(), device, metric, value))
        if buffer.tell() >= CSV_CHUNK_BYTES:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def started(chunks):
    """Run a generator to its first chunk now (the query, for csv_chunks), so a database error is an
    error response rather than a stream cut short; closing the result closes `chunks`."""
    first = next(chunks)

    def resumed():
        yield first
        yield from chunks

    return resumed()


async def async_chunks(chunks):
    """An asynchronous iterator over a generator that reads the database, each step in the request's sync thread.

    Asynchronous so that daphne streams the response: it would collect a synchronous iterator first.
    """
    next_chunk = sync_to_async(next)
    try:
        while (chunk := await next_chunk(chunks, None)) is not None:
            yield chunk
    finally:
        await sync_to_async(chunks.close)()


class ReadingViewSet(HubAPIMixin, mixins.ListModelMixin, viewsets.GenericViewSet):
    """Raw readings of one device's metric, cursor-paginated JSON or, with ?format=csv, one streamed CSV."""

    queryset = Reading.objects.select_related("device", "metric")
    serializer_class = ReadingSerializer
    filterset_class = ReadingFilterSet
    pagination_class = ReadingCursorPagination
    renderer_classes = [*api_settings.DEFAULT_RENDERER_CLASSES, CSVRenderer]

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "format",
                str,
                enum=["json", "csv"],
                description="csv: every matching reading as one streamed CSV (time,device,metric,value), not paginated.",
            )
        ],
        responses={(200, "application/json"): ReadingSerializer(many=True), (200, "text/csv"): OpenApiTypes.STR},
    )
    def list(self, request, *args, **kwargs):
        if request.accepted_renderer.format != CSVRenderer.format:
            return super().list(request, *args, **kwargs)
        rows = (
            self.filter_queryset(self.get_queryset())
            .order_by("time")
            .values_list("time", "device__device_id", "metric__key", "value")
        )
        response = StreamingHttpResponse(async_chunks(started(csv_chunks(rows))), content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = 'attachment; filename="readings.csv"'
        return response


class DeadLetterSerializer(serializers.ModelSerializer):
    """One rejected input with its reason."""

    class Meta:
        model = DeadLetter
        fields = ["id", "source", "topic", "received_at", "payload", "reason", "detail"]


class DeadLetterFilterSet(django_filters.FilterSet):
    """Dead letters by reason or source."""

    class Meta:
        model = DeadLetter
        fields = ["reason", "source"]


class DeadLetterViewSet(HubAPIMixin, viewsets.ReadOnlyModelViewSet):
    """Rejected input, newest first; admins only."""

    queryset = DeadLetter.objects.order_by("-received_at", "-pk")
    serializer_class = DeadLetterSerializer
    filterset_class = DeadLetterFilterSet
    permission_classes = [IsAdmin]
