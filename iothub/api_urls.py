"""The REST API under /api/: version 1 of the endpoints, the OpenAPI schema and its docs page."""

import threading

from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView
from rest_framework.routers import APIRootView, DefaultRouter
from rest_framework_simplejwt.views import TokenBlacklistView, TokenRefreshView

from apps.alerts.api import AlertViewSet, MaintenanceWindowViewSet, ThresholdViewSet
from apps.devices.api import DeviceTypeViewSet, DeviceViewSet, LocationViewSet, MetricViewSet
from apps.telemetry.api import (
    AggregationView,
    DeadLetterViewSet,
    PlatformAggregationView,
    PlatformRealtimeView,
    ReadingViewSet,
    RealtimeView,
)
from apps.telemetry.http_ingest import IngestView
from iothub.api import HubAPIMixin, IsPlantStaff
from iothub.lockout import TokenObtainView

app_name = "api"


class HubAPIRootView(HubAPIMixin, APIRootView):
    """The index of version 1 of the API, for plant staff like the rest of it."""


class SchemaView(SpectacularAPIView):
    """The OpenAPI schema, generated for one request at a time: drf-spectacular's generator keeps
    state in globals (extensions it loads on first use, its warnings, settings it patches), and a
    fresh daphne answered some of several schema requests at once with a 500
    (tfranzel/drf-spectacular#1123)."""

    permission_classes = [IsPlantStaff]
    generating = threading.Lock()

    def dispatch(self, request, *args, **kwargs):  # not get: drf-spectacular describes its own get in the schema
        with self.generating:
            return super().dispatch(request, *args, **kwargs)


router = DefaultRouter()
router.trailing_slash = "/?"  # the platform's clients write /thresholds/{id} without the slash (DRF's init knows only "/" or "")
router.APIRootView = HubAPIRootView
router.register("locations", LocationViewSet)
router.register("metrics", MetricViewSet)
router.register("device-types", DeviceTypeViewSet)
router.register("devices", DeviceViewSet)
router.register("thresholds", ThresholdViewSet)
router.register("readings", ReadingViewSet)
router.register("alerts", AlertViewSet)
router.register("deadletters", DeadLetterViewSet)
router.register("maintenance-windows", MaintenanceWindowViewSet)

# The plant platform's realtime and aggregation paths (docs/compatibility.md), with and without
# the trailing slash: its clients switch to the hub by changing only the host.
platform_urls = [
    path(
        f"v1/realtime/{field}/<str:{field}>{slash}", PlatformRealtimeView.as_view(field=field), name=f"platform-realtime-{field}"
    )
    for field in ("factory", "building", "floor", "loc_id")
    for slash in ("", "/")
] + [
    path(
        f"v1/aggregation/<str:metric>/{kind}/<str:{field}>{slash}",
        PlatformAggregationView.as_view(field=field),
        name=f"platform-aggregation-{kind}",
    )
    for kind, field in (("location", "loc_id"), ("factory", "factory"))
    for slash in ("", "/")
]

urlpatterns = [
    *platform_urls,
    path("v1/realtime/", RealtimeView.as_view(), name="realtime"),
    path("v1/aggregation/<str:metric>/", AggregationView.as_view(), name="aggregation"),
    path("v1/ingest/", IngestView.as_view(), name="ingest"),
    path("v1/auth/token/", TokenObtainView.as_view(), name="token"),
    path("v1/auth/token/refresh/", TokenRefreshView.as_view(), name="token-refresh"),
    path("v1/auth/token/blacklist/", TokenBlacklistView.as_view(), name="token-blacklist"),
    path("v1/", include(router.urls)),
    path("schema/", SchemaView.as_view(), name="schema"),
    # The split view serves Swagger UI's set-up script from a URL, not inline: the CSP allows no inline script.
    path("docs/", SpectacularSwaggerSplitView.as_view(url_name="api:schema", permission_classes=[IsPlantStaff]), name="docs"),
]
