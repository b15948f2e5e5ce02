from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator
from django.db import models
from django.utils.translation import gettext_lazy as _
from django.utils.translation import pgettext_lazy

from .expressions import ExpressionError, check_dependencies, parse_expression

OFFLINE_AFTER_INTERVALS = 3  # missed reports before a device counts as offline
DEFAULT_MAX_INPUT_AGE = 300  # s: the oldest input a calculated metric is computed from


class Location(models.Model):
    """A place in the plant where sensors hang: factory → building → floor → area."""

    loc_id = models.CharField(_("location id"), max_length=64, unique=True)
    factory = models.CharField(_("factory"), max_length=100, db_index=True)
    building = models.CharField(_("building"), max_length=100, blank=True)
    floor = models.CharField(_("floor"), max_length=50, blank=True)
    area = models.CharField(_("area"), max_length=100, blank=True)
    name = models.CharField(_("name"), max_length=200, blank=True)
    updated_at = models.DateTimeField(_("updated"), auto_now=True)

    class Meta:
        ordering = ["factory", "building", "floor", "loc_id"]
        verbose_name = _("location")
        verbose_name_plural = _("locations")
        indexes = [models.Index(fields=["factory", "building", "floor"])]

    def __str__(self):
        return self.name or self.loc_id


class Metric(models.Model):
    """A quantity, e.g. temperature in °C: measured by sensors, or calculated in ingest from other
    metrics of the same device when it has an expression (apps.devices.expressions)."""

    key = models.SlugField(_("key"), max_length=64, unique=True)
    unit = models.CharField(_("unit"), max_length=20, blank=True)
    label = models.CharField(_("label"), max_length=100, blank=True)
    precision = models.PositiveSmallIntegerField(
        _("precision"),
        default=1,
        db_default=1,
        validators=[MaxValueValidator(6)],
        help_text=_(
            "Decimal places of its values where the API writes them as decimal strings (the platform-compatible realtime answer)."
        ),
    )
    expression = models.TextField(
        _("expression"),
        blank=True,
        help_text=_(
            "Empty for a measured metric. A calculated metric's formula over other metric keys of the "
            "same device, e.g. temperature + 0.1 * humidity; functions exp, log, sqrt, min, max, abs, "
            "round and “… if … else …”."
        ),
    )
    max_input_age = models.PositiveIntegerField(
        _("max input age"),
        default=DEFAULT_MAX_INPUT_AGE,
        help_text=_("Seconds: a calculated value is computed only from inputs at most this old."),
    )
    updated_at = models.DateTimeField(_("updated"), auto_now=True)

    class Meta:
        ordering = ["key"]
        verbose_name = _("metric")
        verbose_name_plural = _("metrics")

    def __str__(self):
        return self.key

    @property
    def is_calculated(self):
        return bool(self.expression)

    def clean(self):
        errors = metric_errors(key=self.key, expression=self.expression, pk=self.pk)
        if errors:
            raise ValidationError(errors)


def metric_errors(*, key, expression, pk=None):
    """{field: message} of what keeps a metric from being saved: an expression that does not parse,
    uses names that are not metric keys or functions off the whitelist, refers to its own metric or
    closes a cycle; a new key for a metric that expressions use. pk: the metric being edited."""
    others = Metric.objects.exclude(pk=pk) if pk else Metric.objects.all()
    known = dict(others.values_list("key", "expression"))
    graph = {other: parse_expression(text).inputs for other, text in known.items() if text.strip()}
    if pk:
        old_key = Metric.objects.filter(pk=pk).values_list("key", flat=True).first()
        users = sorted(other for other, inputs in graph.items() if old_key in inputs)
        if old_key != key and users:
            return {
                "key": _("“{old}” is used by the expression of {users}: change those first.").format(
                    old=old_key, users=", ".join(users)
                )
            }
    if not expression.strip():
        return {}
    try:
        parsed = parse_expression(expression, known_names={*known, key})
        check_dependencies(key, parsed.inputs, graph)
    except ExpressionError as error:
        return {"expression": str(error)}
    return {}


class DeviceType(models.Model):
    """A sensor model: which metrics it reports and how often."""

    name = models.CharField(_("name"), max_length=100, unique=True)
    metrics = models.ManyToManyField(Metric, related_name="device_types", verbose_name=_("metrics"))
    primary_metric = models.ForeignKey(
        Metric,
        on_delete=models.PROTECT,
        related_name="+",
        verbose_name=_("primary metric"),
        help_text=_("The metric of compact payloads {id, ts, v}."),
    )
    expected_interval = models.PositiveIntegerField(
        _("expected interval"), default=60, help_text=_("Seconds between two readings of a healthy device.")
    )
    updated_at = models.DateTimeField(_("updated"), auto_now=True)

    class Meta:
        ordering = ["name"]
        verbose_name = _("device type")
        verbose_name_plural = _("device types")

    def __str__(self):
        return self.name

    @property
    def offline_after(self):
        """Seconds of silence after which a device of this type counts as offline."""
        return OFFLINE_AFTER_INTERVALS * self.expected_interval


class Device(models.Model):
    """One sensor; its device_id is its identity on MQTT (topic sensors/<device_id>)."""

    device_id = models.CharField(_("device id"), max_length=64, unique=True)
    name = models.CharField(_("name"), max_length=200, blank=True)
    device_type = models.ForeignKey(DeviceType, on_delete=models.PROTECT, related_name="devices", verbose_name=_("device type"))
    location = models.ForeignKey(Location, on_delete=models.PROTECT, related_name="devices", verbose_name=_("location"))
    is_active = models.BooleanField(pgettext_lazy("device", "active"), default=True)
    last_seen_at = models.DateTimeField(_("last seen"), null=True, blank=True)
    updated_at = models.DateTimeField(_("updated"), auto_now=True, db_index=True)
    # Credentials (docs/security.md). Secrets are shown once when issued; only their SHA-256
    # digests are kept. Set by apps.devices.services, which saves with update_fields, so
    # updated_at (the ingest device cache's change marker) does not move.
    mqtt_password_hash = models.CharField(
        _("MQTT password digest"),
        max_length=64,
        blank=True,
        editable=False,
        help_text=_("SHA-256 of the device's MQTT password; empty: no MQTT credentials issued."),
    )
    mqtt_password_rotated_at = models.DateTimeField(_("MQTT password set at"), null=True, blank=True, editable=False)
    ingest_token_prefix = models.CharField(
        _("HTTP ingest token prefix"),
        max_length=16,
        unique=True,
        null=True,
        blank=True,
        editable=False,
        help_text=_("The clear prefix of the device's HTTP ingest token, to look it up."),
    )
    ingest_token_hash = models.CharField(_("HTTP ingest token digest"), max_length=64, blank=True, editable=False)
    ingest_token_issued_at = models.DateTimeField(_("HTTP ingest token issued at"), null=True, blank=True, editable=False)

    class Meta:
        ordering = ["device_id"]
        verbose_name = _("device")
        verbose_name_plural = _("devices")

    def __str__(self):
        return self.device_id

    @property
    def has_mqtt_credentials(self):
        return bool(self.mqtt_password_hash)

    @property
    def has_ingest_token(self):
        return bool(self.ingest_token_hash)
