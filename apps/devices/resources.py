"""CSV/XLSX import and export of the device master in the admin (django-import-export): a preview
of every change with per-row errors before anything is saved, and all-or-nothing imports.

Imports are built for a whole plant (10,000 devices well under a minute, `manage.py bench_import`):
existing rows are loaded in one query for the file (CachedInstanceLoader, related rows joined),
the rows a foreign key names in one query per column (PrefetchedForeignKeyWidget), and rows are
written with bulk_create / bulk_update in batches, inside the one transaction of the import.
"""

from django.core.exceptions import ValidationError
from django.utils import timezone
from django.utils.translation import gettext as _
from import_export import fields, resources
from import_export.formats.base_formats import CSV, XLSX
from import_export.instance_loaders import CachedInstanceLoader
from import_export.widgets import ForeignKeyWidget

from .models import Device, DeviceType, Location
from .signals import devices_changed

SPREADSHEET_FORMATS = [CSV, XLSX]  # of the admins' import and export
IMPORT_BATCH_SIZE = 1000


class PrefetchedForeignKeyWidget(ForeignKeyWidget):
    """A foreign key given by a natural key (a location id, a type name): the rows a file names are
    read in one query before its rows are imported (`prefetch`), not one query per row. A value
    that names no row is the row's error, on its column."""

    def __init__(self, model, field, **kwargs):
        super().__init__(model, field, **kwargs)
        self.rows = {}  # natural key → row, of the file being imported

    def prefetch(self, values):
        keys = {str(value).strip() for value in values if value not in (None, "")}
        self.rows = {str(getattr(row, self.field)): row for row in self.model.objects.filter(**{f"{self.field}__in": keys})}

    def clean(self, value, row=None, **kwargs):
        key = "" if value is None else str(value).strip()
        if not key:
            return None
        try:
            return self.rows[key]
        except KeyError:
            raise ValueError(_("No %(model)s “%(key)s”.") % {"model": self.model._meta.verbose_name, "key": key}) from None


class PlantResource(resources.ModelResource):
    """An import of the device master, whole plants at a time: bulk writes, one query for the rows
    the file updates and one per foreign key column. A key given twice in a file is an error of
    its second row. Where devices were added, changed or moved, the open overviews follow once the
    import commits (apps.devices.signals.devices_changed)."""

    class Meta:
        use_bulk = True
        batch_size = IMPORT_BATCH_SIZE
        instance_loader_class = CachedInstanceLoader
        skip_unchanged = True
        report_skipped = False

    def get_queryset(self):
        related = [name for name, field in self.fields.items() if isinstance(field.widget, ForeignKeyWidget)]
        queryset = super().get_queryset()
        return queryset.select_related(*related) if related else queryset

    def before_import(self, dataset, **kwargs):
        self.keys_seen = set()
        self.factories = set()
        self.changed_columns = set()
        for field in self.fields.values():
            if isinstance(field.widget, PrefetchedForeignKeyWidget) and field.column_name in dataset.headers:
                field.widget.prefetch(dataset[field.column_name])

    def before_import_row(self, row, **kwargs):
        (id_field,) = self.get_import_id_fields()
        key = str(row.get(id_field) or "").strip()
        if key in self.keys_seen:
            raise ValidationError({id_field: _("“%(key)s” is in the file more than once.") % {"key": key}})
        self.keys_seen.add(key)

    def validate_instance(self, instance, import_validation_errors=None, validate_unique=True):
        """The model's own checks, less the queries a plant-sized file cannot afford per row: the
        rows of its foreign keys were found by the widgets, and a key is unique in the file
        (before_import_row) and looked up among the stored rows (the instance loader)."""
        errors = dict(import_validation_errors or {})
        prefetched = [name for name, field in self.fields.items() if isinstance(field.widget, PrefetchedForeignKeyWidget)]
        try:
            instance.full_clean(exclude=[*errors, *prefetched], validate_unique=False)
        except ValidationError as error:
            errors = error.update_error_dict(errors)
        if errors:
            raise ValidationError(errors)

    def after_init_instance(self, instance, new, row, **kwargs):
        # Where it stands before the row is applied: a moved device changes two factories.
        instance.factory_before_import = None if new else self.factory_of(instance)
        instance.columns_before_import = {} if new else self.column_values(instance)

    def before_save_instance(self, instance, row, **kwargs):
        # bulk_update skips auto_now; the ingest device cache watches updated_at.
        instance.updated_at = timezone.now()
        self.factories |= {instance.factory_before_import, self.factory_of(instance)}
        before = instance.columns_before_import
        if before:  # an update: which columns it changes
            self.changed_columns |= {name for name, value in self.column_values(instance).items() if before[name] != value}

    def column_values(self, instance):
        """Column → value of the fields an import writes (foreign keys as ids)."""
        model = self._meta.model._meta
        return {name: getattr(instance, model.get_field(name).attname) for name in super().get_bulk_update_fields()}

    def get_bulk_update_fields(self):
        """The columns an update writes: those some row of the file changes (bulk_update writes a
        CASE over every row of a batch for each of them), and updated_at."""
        return [name for name in super().get_bulk_update_fields() if name in self.changed_columns] + ["updated_at"]

    def after_import(self, dataset, result, **kwargs):
        factories = self.factories - {None}
        if not kwargs.get("dry_run") and factories:
            devices_changed.send(sender=self._meta.model, factories=factories)


class LocationResource(PlantResource):
    class Meta:
        model = Location
        import_id_fields = ["loc_id"]
        fields = ["loc_id", "name", "factory", "building", "floor", "area"]

    def factory_of(self, location):
        return location.factory


class DeviceResource(PlantResource):
    device_type = fields.Field("device_type", "device_type", PrefetchedForeignKeyWidget(DeviceType, "name"))
    location = fields.Field("location", "location", PrefetchedForeignKeyWidget(Location, "loc_id"))

    class Meta:
        model = Device
        import_id_fields = ["device_id"]
        fields = ["device_id", "name", "device_type", "location", "is_active"]

    def factory_of(self, device):
        return device.location.factory if device.location_id else None
