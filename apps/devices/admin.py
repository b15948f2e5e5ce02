from django.contrib import admin, messages
from django.contrib.admin.models import LogEntry
from django.shortcuts import redirect
from django.urls import reverse
from django.utils.html import format_html
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _
from import_export.admin import ImportExportModelAdmin

from . import services
from .dynsec import DynsecError
from .models import Device, DeviceType, Location, Metric
from .resources import SPREADSHEET_FORMATS, DeviceResource, LocationResource

# Credential actions talk to the broker once per device: keep a selection to what one request can do.
MAX_CREDENTIAL_DEVICES = 200
IMPORT_ERRORS_SHOWN = 10  # of a confirmed import that failed: the first rows' errors


class PlantImportAdmin(ImportExportModelAdmin):
    """CSV/XLSX import and export, all or nothing at both steps: the preview offers no confirmation
    while a row has an error, and a confirmed file that meets one (the plant changed since the
    preview) is rolled back as a whole and its errors shown."""

    formats = SPREADSHEET_FORMATS

    def get_import_data_kwargs(self, **kwargs):
        return {**super().get_import_data_kwargs(**kwargs), "rollback_on_validation_errors": True}

    def process_result(self, result, request):
        if not (result.has_errors() or result.has_validation_errors()):
            return super().process_result(result, request)
        row = gettext("row %(number)s: %(errors)s")
        problems = [str(error.error) for error in result.base_errors]
        problems += [
            row % {"number": number, "errors": error.error} for number, errors in result.row_errors() for error in errors
        ]
        problems += [
            row
            % {
                "number": invalid.number,
                "errors": "; ".join(f"{field}: {' '.join(texts)}" for field, texts in invalid.error_dict.items()),
            }
            for invalid in result.invalid_rows
        ]
        self.message_user(
            request,
            gettext("Nothing was imported. %(errors)s") % {"errors": " | ".join(problems[:IMPORT_ERRORS_SHOWN])},
            messages.ERROR,
        )
        return redirect(f"admin:{self.opts.app_label}_{self.opts.model_name}_import")


@admin.register(Location)
class LocationAdmin(PlantImportAdmin):
    resource_classes = [LocationResource]
    list_display = ["loc_id", "name", "factory", "building", "floor", "area"]
    list_filter = ["factory", "building", "floor"]
    search_fields = ["loc_id", "name", "factory", "building", "area"]


@admin.register(Metric)
class MetricAdmin(admin.ModelAdmin):
    list_display = ["key", "label", "unit", "expression"]
    search_fields = ["key", "label", "expression"]
    fieldsets = [
        (None, {"fields": ["key", "label", "unit", "precision"]}),
        (_("Calculated metric"), {"fields": ["expression", "max_input_age"]}),
    ]


@admin.register(DeviceType)
class DeviceTypeAdmin(admin.ModelAdmin):
    list_display = ["name", "primary_metric", "expected_interval"]
    filter_horizontal = ["metrics"]
    search_fields = ["name"]


@admin.register(Device)
class DeviceAdmin(PlantImportAdmin):
    resource_classes = [DeviceResource]
    # The list fits a laptop screen; credentials and the thresholds in force are on the change page.
    list_display = ["device_id", "name", "device_type", "location", "is_active", "last_seen_at", "dashboard_link"]
    list_filter = ["is_active", "device_type", "location__factory", "location__building", "location__floor"]
    search_fields = ["device_id", "name", "location__loc_id", "location__name"]
    list_select_related = ["device_type", "location"]
    readonly_fields = ["last_seen_at", "mqtt_credentials", "http_token", "dashboard_link"]
    actions = ["activate", "deactivate", "rotate_mqtt_password", "issue_ingest_token", "revoke_ingest_token"]

    @admin.display(description=_("dashboard"))
    def dashboard_link(self, obj):
        if obj.pk is None:
            return "–"
        return format_html('<a href="{}">{}</a>', reverse("dashboard:device", args=[obj.device_id]), gettext("live view"))

    @admin.display(description=_("MQTT credentials"))
    def mqtt_credentials(self, obj):
        if not obj.has_mqtt_credentials:
            return "—"
        if obj.mqtt_password_rotated_at:
            return gettext("set %(when)s") % {"when": f"{obj.mqtt_password_rotated_at:%Y-%m-%d %H:%M}"}
        return gettext("set")

    @admin.display(description=_("HTTP token"))
    def http_token(self, obj):
        if not obj.has_ingest_token:
            return "—"
        return f"{obj.ingest_token_prefix}… {obj.ingest_token_issued_at:%Y-%m-%d %H:%M}"

    # -- activation: the broker account follows the device's active flag ----------------------

    def _set_active(self, request, devices, active):
        failures = services.set_devices_active(devices=devices, active=active)
        message = (
            gettext(
                "%(device)s: activated, but its MQTT account could not be enabled: %(error)s. "
                "Run the action again once the broker is reachable."
            )
            if active
            else gettext(
                "%(device)s: deactivated, but its MQTT account could not be disabled: %(error)s. "
                "Run the action again once the broker is reachable."
            )
        )
        for device, error in failures:
            self.message_user(request, message % {"device": device, "error": error}, messages.ERROR)
        return failures

    @admin.action(description=_("Activate selected devices"), permissions=["change"])
    def activate(self, request, queryset):
        devices = list(queryset)
        failures = self._set_active(request, devices, True)
        text = ngettext("%(count)d device activated.", "%(count)d devices activated.", len(devices))
        self.message_user(request, self._with_failures(text % {"count": len(devices)}, failures))

    @admin.action(description=_("Deactivate selected devices"), permissions=["change"])
    def deactivate(self, request, queryset):
        devices = list(queryset)
        failures = self._set_active(request, devices, False)
        text = ngettext(
            "%(count)d device deactivated: its readings are dead-lettered and its MQTT login refused.",
            "%(count)d devices deactivated: their readings are dead-lettered and their MQTT logins refused.",
            len(devices),
        )
        self.message_user(request, self._with_failures(text % {"count": len(devices)}, failures))

    @staticmethod
    def _with_failures(text, failures):
        return f"{text} {gettext('See the errors above.')}" if failures else text

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        if change and "is_active" in form.changed_data and obj.has_mqtt_credentials:
            try:
                if obj.is_active:
                    services.enable_mqtt_credentials(device=obj)
                else:
                    services.disable_mqtt_credentials(device=obj)
            except DynsecError as error:
                message = (
                    gettext("%(device)s: saved, but its MQTT account could not be enabled: %(error)s.")
                    if obj.is_active
                    else gettext("%(device)s: saved, but its MQTT account could not be disabled: %(error)s.")
                )
                self.message_user(
                    request,
                    f"{message % {'device': obj, 'error': error}} {gettext('Use the activate/deactivate action to retry.')}",
                    messages.ERROR,
                )

    # -- deletion: remove the broker account too (after the row, which may be protected) -----

    def delete_model(self, request, obj):
        super().delete_model(request, obj)
        self._delete_mqtt_accounts(request, [obj])

    def delete_queryset(self, request, queryset):
        devices = [d for d in queryset if d.has_mqtt_credentials]
        super().delete_queryset(request, queryset)
        self._delete_mqtt_accounts(request, devices)

    def _delete_mqtt_accounts(self, request, devices):
        for device in devices:
            try:
                services.delete_mqtt_credentials(device=device)
            except DynsecError as error:
                self.message_user(
                    request,
                    gettext("%(device)s: deleted, but its MQTT account is still on the broker: %(error)s")
                    % {"device": device, "error": error},
                    messages.WARNING,
                )

    # -- credentials: new secrets are shown once, here, and never stored ------------------------

    def _too_many(self, request, queryset):
        if queryset.count() > MAX_CREDENTIAL_DEVICES:
            self.message_user(
                request,
                gettext("Select at most %(count)d devices for credential actions.") % {"count": MAX_CREDENTIAL_DEVICES},
                messages.ERROR,
            )
            return True
        return False

    @admin.action(description=_("Rotate MQTT password (shown once)"), permissions=["change"])
    def rotate_mqtt_password(self, request, queryset):
        if self._too_many(request, queryset):
            return
        for device in queryset:
            try:
                password = services.provision_mqtt_credentials(device=device)
            except (DynsecError, ValueError) as error:
                self.message_user(
                    request,
                    gettext("%(device)s: MQTT password not changed: %(error)s") % {"device": device, "error": error},
                    messages.ERROR,
                )
                continue
            text = gettext(
                "%(device)s: MQTT username and client id %(device)s, new password %(password)s — copy it now, it is not "
                "stored and will not be shown again. Sessions with the old password were disconnected."
            ) % {"device": device, "password": password}
            if not device.is_active:
                text += " " + gettext("The device is inactive: its login stays disabled until it is activated.")
            self.message_user(request, text, messages.WARNING)

    @admin.action(description=_("Issue new HTTP ingest token (shown once)"), permissions=["change"])
    def issue_ingest_token(self, request, queryset):
        if self._too_many(request, queryset):
            return
        for device in queryset:
            token = services.issue_ingest_token(device=device)
            self.message_user(
                request,
                gettext(
                    "%(device)s: HTTP ingest token %(token)s — send it as 'Authorization: Device <token>' to "
                    "/api/v1/ingest/. Copy it now, it is not stored and will not be shown again; the previous token "
                    "no longer works."
                )
                % {"device": device, "token": token},
                messages.WARNING,
            )

    @admin.action(description=_("Revoke HTTP ingest token"), permissions=["change"])
    def revoke_ingest_token(self, request, queryset):
        devices = [d for d in queryset if d.has_ingest_token]
        for device in devices:
            services.revoke_ingest_token(device=device)
        self.message_user(
            request,
            ngettext(
                "HTTP ingest token revoked for %(count)d device.",
                "HTTP ingest token revoked for %(count)d devices.",
                len(devices),
            )
            % {"count": len(devices)},
        )


@admin.register(LogEntry)
class AuditLogAdmin(admin.ModelAdmin):
    """Who changed which device, threshold or location, when — in the admin or through the API."""

    list_display = ["action_time", "user", "content_type", "object_repr", "action_flag", "change_message"]
    list_filter = ["action_flag", "content_type", "user"]
    search_fields = ["object_repr", "change_message"]
    date_hierarchy = "action_time"

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
