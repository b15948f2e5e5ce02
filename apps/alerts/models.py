from datetime import timedelta
from zoneinfo import ZoneInfo

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _


class Level(models.TextChoices):
    NORMAL = "normal", _("normal")
    WARNING = "warning", _("warning")
    CRITICAL = "critical", _("critical")
    OFFLINE = "offline", _("offline")


SEVERITY = {Level.NORMAL: 0, Level.WARNING: 1, Level.CRITICAL: 2, Level.OFFLINE: 2}


class Threshold(models.Model):
    """Warning and critical bands of a metric for a device, location, device type or everyone.

    The most specific threshold wins: device > location > device type > global.
    """

    # Whom a threshold is for, its bands, and what an editor sets (the API, the CSV/XLSX import).
    SCOPE_FIELDS = ("metric", "device", "location", "device_type")
    BAND_FIELDS = ("warning_min", "warning_max", "critical_min", "critical_max")
    RATE_FIELDS = ("rate_max", "rate_critical_max", "rate_window")
    PREDICTION_FIELDS = ("predict_minutes", "predict_window")
    EDITABLE_FIELDS = (*SCOPE_FIELDS, *BAND_FIELDS, "hysteresis", "hold_seconds", *RATE_FIELDS, *PREDICTION_FIELDS, "enabled")

    metric = models.ForeignKey("devices.Metric", verbose_name=_("metric"), on_delete=models.CASCADE, related_name="thresholds")
    device = models.ForeignKey(
        "devices.Device", verbose_name=_("device"), null=True, blank=True, on_delete=models.CASCADE, related_name="thresholds"
    )
    location = models.ForeignKey(
        "devices.Location", verbose_name=_("location"), null=True, blank=True, on_delete=models.CASCADE, related_name="thresholds"
    )
    device_type = models.ForeignKey(
        "devices.DeviceType",
        verbose_name=_("device type"),
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="thresholds",
    )
    warning_min = models.FloatField(_("warning below"), null=True, blank=True)
    warning_max = models.FloatField(_("warning above"), null=True, blank=True)
    critical_min = models.FloatField(_("critical below"), null=True, blank=True)
    critical_max = models.FloatField(_("critical above"), null=True, blank=True)
    hysteresis = models.FloatField(_("hysteresis"), default=0, help_text=_("Deadband a value must clear to leave a level."))
    hold_seconds = models.PositiveIntegerField(
        _("hold (seconds)"), default=0, help_text=_("How long a value must stay beyond a band before an alert opens.")
    )
    rate_max = models.FloatField(
        _("warning rate (per minute)"),
        null=True,
        blank=True,
        validators=[MinValueValidator(0)],
        help_text=_("Warning when the value rises or falls faster than this, in units per minute over the rate window."),
    )
    rate_critical_max = models.FloatField(
        _("critical rate (per minute)"),
        null=True,
        blank=True,
        validators=[MinValueValidator(0)],
        help_text=_("Critical when the value rises or falls faster than this, in units per minute."),
    )
    rate_window = models.PositiveIntegerField(
        _("rate window (seconds)"),
        default=300,
        validators=[MinValueValidator(10)],
        help_text=_("Seconds over which the rate of change is measured (from the oldest reading in it to the newest)."),
    )
    predict_minutes = models.PositiveIntegerField(
        _("prediction (minutes ahead)"),
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text=_("Warn when the trend predicts a critical limit within this many minutes."),
    )
    predict_window = models.PositiveIntegerField(
        _("trend window (minutes)"),
        default=15,
        validators=[MinValueValidator(2), MaxValueValidator(240)],
        help_text=_("Minutes of readings the trend is fitted to (least squares)."),
    )
    enabled = models.BooleanField(_("enabled"), default=True)
    updated_at = models.DateTimeField(_("updated"), auto_now=True)

    class Meta:
        verbose_name = _("threshold")
        verbose_name_plural = _("thresholds")
        constraints = [
            models.CheckConstraint(
                condition=Q(device__isnull=True) | (Q(location__isnull=True) & Q(device_type__isnull=True)),
                name="threshold_one_scope_device",
            ),
            models.CheckConstraint(
                condition=Q(location__isnull=True) | Q(device_type__isnull=True),
                name="threshold_one_scope_location",
            ),
            models.CheckConstraint(condition=Q(hysteresis__gte=0), name="threshold_hysteresis_not_negative"),
        ]

    def __str__(self):
        return f"{self.metric} @ {self.scope_label}"

    @property
    def scope_label(self):
        if self.device_id:
            return f"device {self.device}"
        if self.location_id:
            return f"location {self.location}"
        if self.device_type_id:
            return f"type {self.device_type}"
        return "global"

    def clean(self):
        scopes = [f for f in ("device", "location", "device_type") if getattr(self, f"{f}_id")]
        if len(scopes) > 1:
            raise ValidationError(_("Choose at most one scope: device, location or device type."))
        bands = [self.warning_min, self.warning_max, self.critical_min, self.critical_max, self.rate_max, self.rate_critical_max]
        if all(b is None for b in bands):
            raise ValidationError(_("Set at least one band limit."))
        errors = {}
        if self.predict_minutes is not None and self.critical_min is None and self.critical_max is None:
            errors["predict_minutes"] = _("A prediction needs a critical limit to predict.")
        if self.rate_max is not None and self.rate_critical_max is not None and self.rate_critical_max < self.rate_max:
            errors["rate_critical_max"] = _("Must not be below the warning rate.")
        if self.warning_min is not None and self.warning_max is not None and self.warning_min >= self.warning_max:
            errors["warning_max"] = _("Must be above warning min.")
        if self.critical_min is not None and self.critical_max is not None and self.critical_min >= self.critical_max:
            errors["critical_max"] = _("Must be above critical min.")
        # The critical band lies outside the warning band.
        if self.critical_max is not None and self.warning_max is not None and self.critical_max < self.warning_max:
            errors["critical_max"] = _("Must not be below warning max.")
        if self.critical_min is not None and self.warning_min is not None and self.critical_min > self.warning_min:
            errors["critical_min"] = _("Must not be above warning min.")
        if errors:
            raise ValidationError(errors)


class Alert(models.Model):
    """A period during which a device's metric was beyond a band, a device was silent, or (a
    system alert, without a device) the pipeline itself was unhealthy."""

    class State(models.TextChoices):
        OPEN = "open", _("open")
        ACKNOWLEDGED = "acknowledged", _("acknowledged")
        # Put aside by an operator for a bounded time (ISA-18.2): evaluated, recorded, not announced.
        SHELVED = "shelved", _("shelved")
        RESOLVED = "resolved", _("resolved")
        # A crossing during a maintenance window: recorded, never announced, never active.
        SUPPRESSED = "suppressed", _("suppressed")

    class Source(models.TextChoices):
        DEVICE = "device", _("device")
        SYSTEM = "system", _("system")

    source = models.CharField(_("source"), max_length=8, choices=Source.choices, default=Source.DEVICE)
    subject = models.CharField(
        _("subject"),
        max_length=80,
        blank=True,
        help_text=_(
            "What a system alert is about, e.g. kafka_lag, dead_letter_rate or storm:<loc_id> (an alert storm at a location)."
        ),
    )
    device = models.ForeignKey(
        "devices.Device", verbose_name=_("device"), null=True, blank=True, on_delete=models.CASCADE, related_name="alerts"
    )
    metric = models.ForeignKey(
        "devices.Metric", verbose_name=_("metric"), null=True, blank=True, on_delete=models.CASCADE, related_name="alerts"
    )
    level = models.CharField(_("level"), max_length=16, choices=Level.choices)
    state = models.CharField(_("state"), max_length=16, choices=State.choices, default=State.OPEN)
    opened_at = models.DateTimeField(_("opened"))
    first_value = models.FloatField(_("first value"), null=True, blank=True)
    peak_value = models.FloatField(_("peak value"), null=True, blank=True)
    last_value = models.FloatField(_("last value"), null=True, blank=True)
    # Workers evaluate consecutive batches side by side: a reading older than this one, evaluated
    # after it, must not move the alert (apps.alerts.evaluation.PairState.apply).
    last_reading_at = models.DateTimeField(_("last reading at"), null=True, blank=True)
    acknowledged_at = models.DateTimeField(_("acknowledged at"), null=True, blank=True)
    acknowledged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("acknowledged by"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    resolved_at = models.DateTimeField(_("resolved at"), null=True, blank=True)
    note = models.TextField(_("note"), blank=True)
    predicted_critical_at = models.DateTimeField(
        _("predicted critical at"),
        null=True,
        blank=True,
        help_text=_("While a predictive warning: when the trend reaches the critical limit."),
    )
    shelved_until = models.DateTimeField(
        _("shelved until"),
        null=True,
        blank=True,
        help_text=_("While shelved: when the shelving ends. Kept if the alert resolved while shelved."),
    )
    unshelved_state = models.CharField(
        _("state after shelving"),
        max_length=16,
        blank=True,
        choices=[(State.OPEN, _("open")), (State.ACKNOWLEDGED, _("acknowledged"))],
        help_text=_("While shelved: the state the alert returns to when its shelving ends."),
    )

    class Meta:
        verbose_name = _("alert")
        verbose_name_plural = _("alerts")
        ordering = ["-opened_at"]
        constraints = [
            # One alert per (device, metric) that is not resolved: concurrent workers cannot open two.
            models.UniqueConstraint(
                fields=["device", "metric"],
                condition=Q(state__in=["open", "acknowledged", "shelved"]) & Q(source="device"),
                name="alert_one_active_per_device_metric",
                nulls_distinct=False,
            ),
            models.UniqueConstraint(
                fields=["subject"],
                condition=Q(state__in=["open", "acknowledged", "shelved"]) & Q(source="system"),
                name="alert_one_active_per_system_subject",
            ),
            models.CheckConstraint(
                condition=(Q(source="device") & Q(device__isnull=False)) | (Q(source="system") & Q(device__isnull=True)),
                name="alert_device_iff_device_source",
            ),
        ]
        indexes = [
            models.Index(fields=["state", "level"]),
            models.Index(fields=["shelved_until"], condition=Q(state="shelved"), name="alert_shelved_until"),
        ]

    def __str__(self):
        return f"{self.level} {self.what} ({self.state})"

    @property
    def what(self):
        """A short name of what the alert is about: "dev-1 temperature", "dev-1 data", "system kafka_lag"."""
        if self.source == self.Source.SYSTEM:
            return f"system {self.subject}"
        return f"{self.device.device_id} {self.metric.key if self.metric_id else 'data'}"

    @property
    def is_active(self):
        return self.state in ACTIVE_STATES

    @property
    def is_silenced(self):
        """Shelved (or resolved while shelved): its changes are recorded but not notified."""
        return self.shelved_until is not None

    def take_out_of_service(self):
        """A maintenance window began while it was active (ISA-18.2 out of service): it becomes the
        window's suppressed record, no longer announced, reminded or shelved."""
        self.state, self.shelved_until, self.unshelved_state = self.State.SUPPRESSED, None, ""

    def reopen(self):
        """It got worse: it needs eyes again, now or, if shelved, when its shelving ends."""
        if self.state == self.State.SHELVED:
            self.unshelved_state = self.State.OPEN
        else:
            self.state = self.State.OPEN


# At most one alert per (device, metric) or system subject is in one of these; evaluation follows it.
ACTIVE_STATES = [Alert.State.OPEN, Alert.State.ACKNOWLEDGED, Alert.State.SHELVED]
# What operators are shown as needing attention (a shelved alert is shown apart).
ANNUNCIATED_STATES = [Alert.State.OPEN, Alert.State.ACKNOWLEDGED]


class AlertEvent(models.Model):
    """One change of an alert: opened, escalated, acknowledged, resolved — the alert's history."""

    class Kind(models.TextChoices):
        OPENED = "opened", _("opened")
        ESCALATED = "escalated", _("escalated")
        DEESCALATED = "deescalated", _("de-escalated")
        ACKNOWLEDGED = "acknowledged", _("acknowledged")
        RESOLVED = "resolved", _("resolved")
        SHELVED = "shelved", _("shelved")
        UNSHELVED = "unshelved", _("unshelved")
        SUPPRESSED = "suppressed", _("suppressed by maintenance")

    alert = models.ForeignKey(Alert, verbose_name=_("alert"), on_delete=models.CASCADE, related_name="events")
    kind = models.CharField(_("kind"), max_length=16, choices=Kind.choices)
    at = models.DateTimeField(_("at"))
    level = models.CharField(_("level"), max_length=16, choices=Level.choices)
    value = models.FloatField(_("value"), null=True, blank=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, verbose_name=_("user"), null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    note = models.TextField(_("note"), blank=True)
    # The alert's device and metric, copied so that alarm KPIs read one table (apps.alerts.kpis).
    device = models.ForeignKey(
        "devices.Device",
        verbose_name=_("device"),
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="+",
        db_index=False,
    )
    metric = models.ForeignKey(
        "devices.Metric",
        verbose_name=_("metric"),
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="+",
        db_index=False,
    )
    chattering = models.BooleanField(
        _("chattering"),
        default=False,
        help_text=_("An opening that is the third or later of the same alarm within a minute (EEMUA 191)."),
    )

    class Meta:
        verbose_name = _("alert event")
        verbose_name_plural = _("alert events")
        ordering = ["at", "id"]
        indexes = [
            models.Index(fields=["kind", "at", "device"], include=["metric", "chattering"], name="alertevent_kpis"),
        ]

    def __str__(self):
        return f"{self.kind} {self.alert_id} at {self.at:%Y-%m-%d %H:%M:%S}"

    def save(self, *args, **kwargs):
        if self._state.adding and self.alert_id is not None:
            self.device_id, self.metric_id = self.alert.device_id, self.alert.metric_id
            if self.kind == self.Kind.OPENED and self.device_id is not None:
                earlier = AlertEvent.objects.filter(
                    kind=self.Kind.OPENED,
                    device_id=self.device_id,
                    metric_id=self.metric_id,
                    at__gt=self.at - CHATTER_SPAN,
                    at__lte=self.at,
                )
                self.chattering = earlier.count() >= CHATTER_ACTIVATIONS - 1
        super().save(*args, **kwargs)
        if self.device_id is not None:  # its day's KPI rollups are recomputed by beat
            AlarmDirtyDay.objects.bulk_create([AlarmDirtyDay(day=plant_date(self.at))], ignore_conflicts=True)


def plant_date(at):
    return at.astimezone(ZoneInfo(settings.TIME_ZONE)).date()


CHATTER_SPAN = timedelta(minutes=1)
CHATTER_ACTIVATIONS = 3


class MaintenanceWindow(models.Model):
    """A device, or every device of a location, out of service from `start` to `end`: its threshold
    crossings open no alert and send nothing; each is recorded as a suppressed alert instead."""

    device = models.ForeignKey(
        "devices.Device",
        verbose_name=_("device"),
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="maintenance_windows",
    )
    location = models.ForeignKey(
        "devices.Location",
        verbose_name=_("location"),
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="maintenance_windows",
    )
    start = models.DateTimeField(_("start"))
    end = models.DateTimeField(_("end"))
    reason = models.CharField(_("reason"), max_length=500)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, verbose_name=_("created by"), null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(_("created"), auto_now_add=True)

    class Meta:
        verbose_name = _("maintenance window")
        verbose_name_plural = _("maintenance windows")
        ordering = ["-start", "pk"]
        constraints = [
            models.CheckConstraint(
                condition=(Q(device__isnull=False) & Q(location__isnull=True))
                | (Q(device__isnull=True) & Q(location__isnull=False)),
                name="maintenance_one_target",
            ),
            models.CheckConstraint(condition=Q(end__gt=models.F("start")), name="maintenance_ends_after_start"),
        ]
        indexes = [models.Index(fields=["end", "start"])]

    def __str__(self):
        return f"{self.device or self.location}: {self.start:%Y-%m-%d %H:%M} – {self.end:%Y-%m-%d %H:%M}"

    def clean(self):
        if (self.device_id is None) == (self.location_id is None):
            raise ValidationError(_("Choose a device or a location."))
        if self.start is None or self.end is None:
            return  # the fields' own errors say so
        if self.end <= self.start:
            raise ValidationError({"end": _("Must be after the start.")})
        if self.end <= timezone.now():
            raise ValidationError({"end": _("The window is over: it must end in the future.")})
        target = {"device_id": self.device_id} if self.device_id else {"location_id": self.location_id}
        overlapping = (
            MaintenanceWindow.objects.filter(start__lt=self.end, end__gt=self.start, **target).exclude(pk=self.pk).first()
        )
        if overlapping:
            raise ValidationError({"start": _("Overlaps the window %(window)s of the same target.") % {"window": overlapping}})


class AlarmDirtyDay(models.Model):
    """A plant-local day with alert events since its alarm rollups were last computed; written in the
    same transaction as the event, so no event is ever left out of the KPIs."""

    day = models.DateField(_("day"), primary_key=True)

    class Meta:
        verbose_name = _("alarm day to recompute")
        verbose_name_plural = _("alarm days to recompute")

    def __str__(self):
        return f"{self.day:%Y-%m-%d}"


class AlarmBucket(models.Model):
    """Alarms opened in a 10-minute period at one location, or in the whole plant (location empty)."""

    start = models.DateTimeField(_("start"))
    location = models.ForeignKey(
        "devices.Location", verbose_name=_("location"), null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    opened = models.PositiveIntegerField(_("alarms opened"))

    class Meta:
        verbose_name = _("alarms of 10 minutes")
        verbose_name_plural = _("alarms of 10 minutes")
        constraints = [models.UniqueConstraint(fields=["start", "location"], name="alarmbucket_unique", nulls_distinct=False)]
        indexes = [models.Index(fields=["location", "start"], include=["opened"], name="alarmbucket_location")]

    def __str__(self):
        return f"{self.start:%Y-%m-%d %H:%M} {self.location or 'plant'}: {self.opened}"


class AlarmDay(models.Model):
    """One alarm's (device, metric) events of a plant-local day: openings, chattering ones, shelvings, suppressions."""

    day = models.DateField(_("day"))
    device = models.ForeignKey("devices.Device", verbose_name=_("device"), on_delete=models.CASCADE, related_name="+")
    metric = models.ForeignKey(
        "devices.Metric", verbose_name=_("metric"), null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    location = models.ForeignKey(
        "devices.Location",
        verbose_name=_("location"),
        on_delete=models.CASCADE,
        related_name="+",
        help_text=_("The device's location that day."),
    )
    opened = models.PositiveIntegerField(_("alarms opened"), default=0)
    chattering = models.PositiveIntegerField(_("chattering"), default=0)
    shelved = models.PositiveIntegerField(_("shelved"), default=0)
    suppressed = models.PositiveIntegerField(_("suppressed"), default=0)

    class Meta:
        verbose_name = _("alarm day")
        verbose_name_plural = _("alarm days")
        constraints = [models.UniqueConstraint(fields=["day", "device", "metric"], name="alarmday_unique", nulls_distinct=False)]
        indexes = [models.Index(fields=["location", "day"], name="alarmday_location")]

    def __str__(self):
        return f"{self.day:%Y-%m-%d} {self.device_id}/{self.metric_id}: {self.opened}"


class NotificationRoute(models.Model):
    """Where alert changes are sent: e-mail, a generic JSON webhook or a Slack-compatible webhook.

    A route matches alerts at or above its level, optionally only in one factory or location.
    """

    class Transport(models.TextChoices):
        EMAIL = "email", _("e-mail")
        WEBHOOK = "webhook", _("JSON webhook")
        SLACK = "slack", _("Slack-compatible webhook")

    name = models.CharField(_("name"), max_length=100)
    transport = models.CharField(_("transport"), max_length=16, choices=Transport.choices)
    target = models.CharField(_("target"), max_length=500, help_text=_("E-mail addresses (comma-separated) or the webhook URL."))
    min_level = models.CharField(
        _("lowest level"),
        max_length=16,
        choices=[(Level.WARNING, Level.WARNING.label), (Level.CRITICAL, Level.CRITICAL.label)],
        default=Level.WARNING,
    )
    factory = models.CharField(_("factory"), max_length=100, blank=True, help_text=_("Only alerts of this factory (blank: all)."))
    location = models.ForeignKey(
        "devices.Location", verbose_name=_("location"), null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    max_per_window = models.PositiveIntegerField(
        _("messages per window"),
        default=10,
        help_text=_("Messages per window; past that, alerts are folded into one summary at the window's end."),
    )
    window_seconds = models.PositiveIntegerField(_("window (seconds)"), default=300)
    renotify_after = models.PositiveIntegerField(
        _("remind after (seconds)"),
        default=900,
        help_text=_("Seconds after which an unacknowledged critical alert is sent again (0: never)."),
    )
    enabled = models.BooleanField(_("enabled"), default=True)

    class Meta:
        verbose_name = _("notification route")
        verbose_name_plural = _("notification routes")

    def __str__(self):
        return f"{self.name} ({self.get_transport_display()})"


class Notification(models.Model):
    """One message to one route: about an alert change, a reminder, or a storm summary."""

    class Kind(models.TextChoices):
        CHANGE = "change", _("alert change")
        REMINDER = "reminder", _("reminder")
        SUMMARY = "summary", _("summary")

    class Status(models.TextChoices):
        PENDING = "pending", _("pending")
        SENT = "sent", _("sent")
        FOLDED = "folded", _("folded into a summary")
        FAILED = "failed", _("failed")

    route = models.ForeignKey(NotificationRoute, verbose_name=_("route"), on_delete=models.CASCADE, related_name="notifications")
    alert = models.ForeignKey(
        Alert, verbose_name=_("alert"), null=True, blank=True, on_delete=models.CASCADE, related_name="notifications"
    )
    kind = models.CharField(_("kind"), max_length=16, choices=Kind.choices)
    event = models.CharField(_("event"), max_length=16, blank=True, help_text=_("The alert event that caused it."))
    status = models.CharField(_("status"), max_length=16, choices=Status.choices, default=Status.PENDING)
    summary_of = models.ForeignKey(
        "self", verbose_name=_("summary"), null=True, blank=True, on_delete=models.SET_NULL, related_name="folded"
    )
    created_at = models.DateTimeField(_("created"), auto_now_add=True, db_index=True)
    sent_at = models.DateTimeField(_("sent"), null=True, blank=True)
    attempts = models.PositiveIntegerField(_("attempts"), default=0)
    last_error = models.TextField(_("last error"), blank=True)

    class Meta:
        verbose_name = _("notification")
        verbose_name_plural = _("notifications")
        ordering = ["-created_at"]

    def __str__(self):
        return f"{self.kind} to {self.route} ({self.status})"
