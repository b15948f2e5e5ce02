from django.contrib import admin
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html

from apps.alerts.admin import ThresholdInline

from .models import Device, DeviceType, Location, Metric


@admin.register(Location)
class LocationAdmin(admin.ModelAdmin):
    list_display = ["loc_id", "name", "factory", "building", "floor", "area"]
    list_filter = ["factory", "building", "floor"]
    search_fields = ["loc_id", "name", "factory", "building", "area"]
    inlines = [ThresholdInline]


@admin.register(Metric)
class MetricAdmin(admin.ModelAdmin):
    list_display = ["key", "label", "unit"]
    search_fields = ["key", "label"]


@admin.register(DeviceType)
class DeviceTypeAdmin(admin.ModelAdmin):
    list_display = ["name", "primary_metric", "expected_interval"]
    filter_horizontal = ["metrics"]
    search_fields = ["name"]
    inlines = [ThresholdInline]


@admin.register(Device)
class DeviceAdmin(admin.ModelAdmin):
    list_display = ["device_id", "name", "device_type", "location", "is_active", "last_seen_at", "dashboard_link"]
    list_filter = ["is_active", "device_type", "location__factory", "location__building", "location__floor"]
    search_fields = ["device_id", "name", "location__loc_id", "location__name"]
    list_select_related = ["device_type", "location"]
    autocomplete_fields = ["location"]
    readonly_fields = ["last_seen_at"]
    actions = ["activate", "deactivate"]
    inlines = [ThresholdInline]

    @admin.display(description="dashboard")
    def dashboard_link(self, obj):
        return format_html('<a href="{}">live view</a>', reverse("dashboard:device", args=[obj.device_id]))

    @admin.action(description="Activate selected devices")
    def activate(self, request, queryset):
        # update() skips auto_now; the ingest device cache watches updated_at.
        queryset.update(is_active=True, updated_at=timezone.now())

    @admin.action(description="Deactivate selected devices")
    def deactivate(self, request, queryset):
        queryset.update(is_active=False, updated_at=timezone.now())
