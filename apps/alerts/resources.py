"""CSV/XLSX import and export of thresholds in the admin (django-import-export): one row per
threshold, its scope by natural keys (device id, location id, device type name; none: global)."""

from import_export import fields, resources
from import_export.widgets import ForeignKeyWidget

from apps.devices.models import Device, DeviceType, Location, Metric

from .models import Threshold


class ThresholdResource(resources.ModelResource):
    metric = fields.Field("metric", "metric", ForeignKeyWidget(Metric, "key"))
    device = fields.Field("device", "device", ForeignKeyWidget(Device, "device_id"))
    location = fields.Field("location", "location", ForeignKeyWidget(Location, "loc_id"))
    device_type = fields.Field("device_type", "device_type", ForeignKeyWidget(DeviceType, "name"))

    class Meta:
        model = Threshold
        # A threshold is known by its metric and scope: importing a row updates the one of that scope.
        import_id_fields = list(Threshold.SCOPE_FIELDS)
        fields = list(Threshold.EDITABLE_FIELDS)
        clean_model_instances = True
        skip_unchanged = True
        report_skipped = False
