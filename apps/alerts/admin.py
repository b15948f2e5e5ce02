from django.contrib import admin
from django.utils.html import format_html_join

from apps.devices.admin import DeviceAdmin, DeviceTypeAdmin, LocationAdmin
from apps.devices.models import Device, DeviceType, Location

from .models import Alert, AlertEvent, MaintenanceWindow, Notification, NotificationRoute, Threshold
from .selectors import effective_thresholds


class ThresholdInline(admin.TabularInline):
    model = Threshold
    extra = 0
    fields = [
        "metric",
        "warning_min",
        "warning_max",
        "critical_min",
        "critical_max",
        "hysteresis",
        "hold_seconds",
        "rate_max",
        "rate_critical_max",
        "rate_window",
        "predict_minutes",
        "predict_window",
        "enabled",
    ]


# The device master's pages with the thresholds that apply to them: alerts extends the admin of
# devices, which knows nothing of alerts (dependencies run devices <- telemetry <- alerts).
admin.site.unregister([Location, DeviceType, Device])


@admin.register(Location)
class LocationWithThresholdsAdmin(LocationAdmin):
    inlines = [*LocationAdmin.inlines, ThresholdInline]


@admin.register(DeviceType)
class DeviceTypeWithThresholdsAdmin(DeviceTypeAdmin):
    inlines = [*DeviceTypeAdmin.inlines, ThresholdInline]


@admin.register(Device)
class DeviceWithThresholdsAdmin(DeviceAdmin):
    inlines = [*DeviceAdmin.inlines, ThresholdInline]
    readonly_fields = [*DeviceAdmin.readonly_fields, "effective_thresholds"]

    @admin.display(description="thresholds in force")
    def effective_thresholds(self, obj):
        """The threshold each metric of the device answers to (device > location > type > global)."""
        if obj.pk is None:
            return "–"
        metrics = list(obj.device_type.metrics.all())
        effective = effective_thresholds(device=obj, metrics=metrics)
        thresholds = Threshold.objects.in_bulk([b.pk for b in effective.values() if b])
        return format_html_join(
            "",
            "<div>{}: {}</div>",
            ((m.key, thresholds[effective[m.pk].pk] if effective[m.pk] else "none") for m in metrics),
        )


@admin.register(Threshold)
class ThresholdAdmin(admin.ModelAdmin):
    list_display = [
        "metric",
        "scope_label",
        "warning_min",
        "warning_max",
        "critical_min",
        "critical_max",
        "hysteresis",
        "hold_seconds",
        "rate_max",
        "rate_critical_max",
        "predict_minutes",
        "enabled",
    ]
    list_filter = ["enabled", "metric", "device_type", "location__factory"]
    search_fields = ["metric__key", "device__device_id", "location__loc_id", "device_type__name"]
    autocomplete_fields = ["device", "location"]
    list_select_related = ["metric", "device", "location", "device_type"]


class AlertEventInline(admin.TabularInline):
    model = AlertEvent
    extra = 0
    can_delete = False
    readonly_fields = ["kind", "at", "level", "value", "user", "note"]

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Alert)
class AlertAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "device",
        "metric",
        "level",
        "state",
        "opened_at",
        "first_value",
        "peak_value",
        "acknowledged_by",
        "resolved_at",
    ]
    list_filter = ["state", "level", "metric", "device__location__factory", "device__location__building"]
    search_fields = ["device__device_id", "device__location__loc_id"]
    list_select_related = ["device", "metric", "acknowledged_by"]
    date_hierarchy = "opened_at"
    readonly_fields = [f.name for f in Alert._meta.fields]
    inlines = [AlertEventInline]

    def has_add_permission(self, request):
        return False


@admin.register(MaintenanceWindow)
class MaintenanceWindowAdmin(admin.ModelAdmin):
    list_display = ["__str__", "device", "location", "start", "end", "reason", "created_by"]
    list_filter = ["location__factory"]
    search_fields = ["device__device_id", "location__loc_id", "reason"]
    autocomplete_fields = ["device", "location"]
    readonly_fields = ["created_by", "created_at"]
    date_hierarchy = "start"

    def save_model(self, request, obj, form, change):
        if not change:
            obj.created_by = request.user
        super().save_model(request, obj, form, change)


@admin.register(NotificationRoute)
class NotificationRouteAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "transport",
        "target",
        "min_level",
        "factory",
        "location",
        "max_per_window",
        "window_seconds",
        "renotify_after",
        "enabled",
    ]
    list_filter = ["transport", "min_level", "enabled"]
    search_fields = ["name", "target", "factory"]
    autocomplete_fields = ["location"]


@admin.register(Notification)
class NotificationAdmin(admin.ModelAdmin):
    list_display = ["created_at", "route", "kind", "event", "alert", "status", "attempts", "sent_at", "last_error"]
    list_filter = ["status", "kind", "route"]
    readonly_fields = [f.name for f in Notification._meta.fields]
    date_hierarchy = "created_at"

    def has_add_permission(self, request):
        return False
