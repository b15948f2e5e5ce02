"""CSV/XLSX import and export of the device master in the admin (django-import-export): a preview
of every change with per-row errors before anything is saved, and all-or-nothing imports."""

from import_export import fields, resources
from import_export.formats.base_formats import CSV, XLSX
from import_export.widgets import ForeignKeyWidget

from .models import Device, DeviceType, Location

SPREADSHEET_FORMATS = [CSV, XLSX]  # of the admins' import and export


class LocationResource(resources.ModelResource):
    class Meta:
        model = Location
        import_id_fields = ["loc_id"]
        fields = ["loc_id", "name", "factory", "building", "floor", "area"]
        clean_model_instances = True
        skip_unchanged = True
        report_skipped = False


class DeviceResource(resources.ModelResource):
    device_type = fields.Field("device_type", "device_type", ForeignKeyWidget(DeviceType, "name"))
    location = fields.Field("location", "location", ForeignKeyWidget(Location, "loc_id"))

    class Meta:
        model = Device
        import_id_fields = ["device_id"]
        fields = ["device_id", "name", "device_type", "location", "is_active"]
        clean_model_instances = True
        skip_unchanged = True
        report_skipped = False
