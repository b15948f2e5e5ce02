"""The REST API under /api/: version 1 of the endpoints, the OpenAPI schema and its docs page."""

from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.routers import APIRootView, DefaultRouter

from apps.alerts.api import AlertViewSet, MaintenanceWindowViewSet, ThresholdViewSet
from apps.devices.api import DeviceTypeViewSet, DeviceViewSet, LocationViewSet, MetricViewSet
from apps.telemetry.api import AggregationView, DeadLetterViewSet, ReadingViewSet, RealtimeView
from apps.telemetry.http_ingest import IngestView
from iothub.api import HubAPIMixin, IsPlantStaff

app_name = "api"


class HubAPIRootView(HubAPIMixin, APIRootView):
    """The index of version 1 of the API, for plant staff like the rest of it."""


router = DefaultRouter()
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

urlpatterns = [
    path("v1/realtime/", RealtimeView.as_view(), name="realtime"),
    path("v1/aggregation/<str:metric>/", AggregationView.as_view(), name="aggregation"),
    path("v1/ingest/", IngestView.as_view(), name="ingest"),
    path("v1/", include(router.urls)),
    path("schema/", SpectacularAPIView.as_view(permission_classes=[IsPlantStaff]), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api:schema", permission_classes=[IsPlantStaff]), name="docs"),
]
