from django.contrib import admin
from django.db import models
from django.utils.html import format_html, format_html_join
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _
from import_export.admin import ImportExportModelAdmin

from apps.devices.admin import DeviceAdmin, DeviceTypeAdmin, LocationAdmin
from apps.devices.models import Device, DeviceType, Location
from apps.devices.resources import SPREADSHEET_FORMATS

from .models import Alert, AlertEvent, MaintenanceWindow, Notification, NotificationRoute, Threshold
from .resources import ThresholdResource
from .selectors import effective_thresholds


def band_text(threshold, level):
    """ "below 10 °C or above 30 °C": where a threshold's warning or critical band begins."""
    unit = f" {threshold.metric.unit}" if threshold.metric.unit else ""
    low, high = getattr(threshold, f"{level}_min"), getattr(threshold, f"{level}_max")
    parts = [
        gettext("below %s") % f"{low:g}{unit}" if low is not None else "",
        gettext("above %s") % f"{high:g}{unit}" if high is not None else "",
    ]
    return gettext(" or ").join(p for p in parts if p) or "—"


def thresholds_table(rows):
    """rows: (metric, threshold or None) → a small table: metric, warning, critical, where it is set."""
    body = format_html_join(
        "",
        "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
        (
            (metric.label or metric.key, band_text(t, "warning"), band_text(t, "critical"), t.scope_label)
            if t
            else (metric.label or metric.key, "—", "—", gettext("no threshold"))
            for metric, t in rows
        ),
    )
    return format_html(
        '<table class="thresholds-in-force"><thead><tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th></tr></thead>'
        "<tbody>{}</tbody></table>",
        gettext("Metric"),
        gettext("Warning"),
        gettext("Critical"),
        gettext("Set for"),
        body,
    )


class ThresholdInline(admin.StackedInline):
    """Stacked, with the band limits side by side where there is room: fits a phone too."""

    model = Threshold
    extra = 0
    fields = [
        "metric",
        ("warning_min", "warning_max"),
        ("critical_min", "critical_max"),
        ("hysteresis", "hold_seconds"),
        ("rate_max", "rate_critical_max", "rate_window"),
        ("predict_minutes", "predict_window"),
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

    @admin.display(description=_("thresholds in force"))
    def effective_thresholds(self, obj):
        """The threshold each metric of the device answers to (device > location > type > global)."""
        if obj.pk is None:
            return "–"
        metrics = list(obj.device_type.metrics.all())
        effective = effective_thresholds(device=obj, metrics=metrics)
        thresholds = Threshold.objects.select_related("metric", "device", "location", "device_type").in_bulk(
            [b.pk for b in effective.values() if b]
        )
        return thresholds_table([(m, thresholds[effective[m.pk].pk] if effective[m.pk] else None) for m in metrics])


@admin.register(Threshold)
class ThresholdAdmin(ImportExportModelAdmin):
    resource_classes = [ThresholdResource]
    formats = SPREADSHEET_FORMATS
    list_display = [
        "metric",
        "scope_label",
        "warning",
        "critical",
        "hysteresis",
        "hold_seconds",
        "rate",
        "predict_minutes",
        "enabled",
    ]
    list_filter = ["enabled", "metric", "device_type", "location__factory"]
    search_fields = ["metric__key", "device__device_id", "location__loc_id", "device_type__name"]
    # A raw id for the device (thousands of them), a plain choice of location: Django's autocomplete
    # widget leaves an empty field without an accessible name.
    raw_id_fields = ["device"]
    list_select_related = ["metric", "device", "location", "device_type"]

    @admin.display(description=_("scope"))
    def scope_label(self, obj):
        return obj.scope_label

    @admin.display(description=_("warning"))
    def warning(self, obj):
        return band_text(obj, "warning")

    @admin.display(description=_("critical"))
    def critical(self, obj):
        return band_text(obj, "critical")

    @admin.display(description=_("rate of change"))
    def rate(self, obj):
        """ "faster than 1.5 °C/min (critical 4 °C/min)": where the rate-of-change bands begin."""
        unit = f" {obj.metric.unit}/min" if obj.metric.unit else "/min"
        parts = [
            gettext("faster than %s") % f"{obj.rate_max:g}{unit}" if obj.rate_max is not None else "",
            gettext("critical faster than %s") % f"{obj.rate_critical_max:g}{unit}" if obj.rate_critical_max is not None else "",
        ]
        return gettext(" or ").join(p for p in parts if p) or "—"


class AlertEventInline(admin.TabularInline):
    model = AlertEvent
    extra = 0
    can_delete = False
    readonly_fields = ["kind", "at", "level", "value", "user", "note"]

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Alert)
class AlertAdmin(admin.ModelAdmin):
    list_display = ["id", "device", "metric", "level", "state", "opened_at", "peak_value", "acknowledged_by", "resolved_at"]
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
    list_display = ["__str__", "reason", "created_by"]
    list_filter = ["location__factory"]
    search_fields = ["device__device_id", "location__loc_id", "reason"]
    # As thresholds: a raw id for the device, a plain choice of location.
    raw_id_fields = ["device"]
    list_select_related = ["device", "location", "created_by"]
    readonly_fields = ["created_by", "created_at"]
    date_hierarchy = "start"

    def formfield_for_dbfield(self, db_field, request, **kwargs):
        """Start and end: the admin's split widget has one label for its date and time inputs, so
        each input gets its own accessible name."""
        field = super().formfield_for_dbfield(db_field, request, **kwargs)
        if isinstance(db_field, models.DateTimeField) and field is not None:
            for widget, part in zip(field.widget.widgets, (gettext("date"), gettext("time")), strict=True):
                widget.attrs["aria-label"] = f"{db_field.verbose_name} {part}"
        return field

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


@admin.register(Notification)
class NotificationAdmin(admin.ModelAdmin):
    list_display = ["created_at", "route", "kind", "event", "alert", "status", "attempts", "sent_at", "last_error"]
    list_filter = ["status", "kind", "route"]
    readonly_fields = [f.name for f in Notification._meta.fields]
    date_hierarchy = "created_at"

    def has_add_permission(self, request):
        return False
