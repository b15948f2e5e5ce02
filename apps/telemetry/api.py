"""REST API of telemetry: realtime status, aggregation, raw readings (JSON or CSV), dead letters."""

import csv
import io
import re
from datetime import UTC, date, datetime, time, timedelta
from typing import NamedTuple

import django_filters
from asgiref.sync import sync_to_async
from django.http import StreamingHttpResponse
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field
from rest_framework import mixins, serializers, viewsets
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import CursorPagination
from rest_framework.renderers import BaseRenderer
from rest_framework.settings import api_settings
from rest_framework.views import APIView

from apps.devices.api import LocationSerializer
from apps.devices.models import Metric
from apps.devices.selectors import LOCATION_FILTERS, locations_at
from iothub.api import HubAPIMixin, IsAdmin, rendered_answer

from .aggregation import INTERVALS, aggregate_readings
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
    """The realtime answer (design §6 realtime shape; schema only)."""

    capture_dt = serializers.DateTimeField()
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

    default_error_messages = {"invalid": "Use yyyy, yyyyMM or yyyyMMdd."}

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
            self.fail("invalid")
        tz = plant_tz()
        return Period(datetime.combine(first, time.min, tzinfo=tz), datetime.combine(after, time.min, tzinfo=tz))


class AggregationQuerySerializer(LocationQuerySerializer):
    """The query of an aggregation: a span of plant local days, a bucket size, which devices."""

    start_date = PlantPeriodField(help_text="From the start of this year, month or day (yyyy, yyyyMM or yyyyMMdd).")
    end_date = PlantPeriodField(help_text="To the end of this year, month or day (yyyy, yyyyMM or yyyyMMdd).")
    interval = serializers.ChoiceField(INTERVALS, default="hour")
    device = serializers.CharField(required=False, allow_blank=True, help_text="Only this device (device_id).")

    def validate(self, attrs):
        if attrs["end_date"].end <= attrs["start_date"].start:
            raise ValidationError({"end_date": "Must not end before start_date begins."})
        return attrs


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
    """The aggregation answer (design §6 aggregation shape; schema only)."""

    metric = serializers.CharField()
    interval = serializers.ChoiceField(INTERVALS)
    results = LocationBucketsSerializer(many=True)


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
        found = Metric.objects.filter(key=metric).first()
        if found is None:
            raise ValidationError({"metric": f"Unknown metric {metric!r}."})
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
                    device_id=params.get("device") or None,
                ),
            },
        )


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


class ReadingFilterSet(django_filters.FilterSet):
    """Readings of one device's metric, optionally in [start, end)."""

    device = django_filters.CharFilter(field_name="device__device_id", required=True)
    metric = django_filters.CharFilter(field_name="metric__key", required=True)
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
