from django.db import models
from django.utils.translation import gettext_lazy as _


class Reading(models.Model):
    """One value of one metric of one device at one time.

    Its key is (device, metric, time), which makes storing a redelivered reading a no-op. On
    PostgreSQL the table is range-partitioned by time (a hypertable where TimescaleDB is installed).
    No surrogate id: its sequence and index cost the ingest a third of its COPY rate.
    """

    pk = models.CompositePrimaryKey("device", "metric", "time")
    time = models.DateTimeField()
    device = models.ForeignKey("devices.Device", on_delete=models.DO_NOTHING, db_constraint=False, db_index=False)
    metric = models.ForeignKey("devices.Metric", on_delete=models.DO_NOTHING, db_constraint=False, db_index=False)
    value = models.FloatField()

    class Meta:
        db_table = "telemetry_reading"
        verbose_name = _("reading")
        verbose_name_plural = _("readings")

    def __str__(self):
        return f"{self.device_id}/{self.metric_id}@{self.time:%Y-%m-%d %H:%M:%S}={self.value}"


class DeadLetter(models.Model):
    """Input the pipeline rejected, kept with the reason so nothing is silently lost."""

    class Reason(models.TextChoices):
        MALFORMED_JSON = "malformed_json", _("malformed JSON")
        WRONG_SHAPE = "wrong_shape", _("wrong shape")
        UNKNOWN_DEVICE = "unknown_device", _("unknown device")
        INACTIVE_DEVICE = "inactive_device", _("inactive device")
        UNKNOWN_METRIC = "unknown_metric", _("unknown metric")
        BAD_VALUE = "bad_value", _("non-finite or non-numeric value")
        TS_FUTURE = "ts_future", _("timestamp too far in the future")
        TS_PAST = "ts_past", _("timestamp too far in the past")
        TOO_LARGE = "too_large", _("payload too large")
        CALCULATION_FAILED = "calculation_failed", _("calculation failed")

    source = models.CharField(_("source"), max_length=16)
    topic = models.CharField(_("topic"), max_length=255, blank=True)
    received_at = models.DateTimeField(_("received"), db_index=True)
    payload = models.TextField(_("payload"), help_text=_("The payload as received, truncated to 4 KiB."))
    reason = models.CharField(_("reason"), max_length=32, choices=Reason.choices, db_index=True)
    detail = models.CharField(_("detail"), max_length=255, blank=True)

    class Meta:
        ordering = ["-received_at"]
        verbose_name = _("dead letter")
        verbose_name_plural = _("dead letters")

    def __str__(self):
        return f"{self.get_reason_display()} on {self.topic}"


class Stats(models.Model):
    """min / max / sum / count over one bucket; avg is sum / count."""

    bucket = models.DateTimeField(help_text="Start of the bucket (a local hour or a local day of the plant).")
    min = models.FloatField()
    max = models.FloatField()
    sum = models.FloatField()
    count = models.PositiveIntegerField()

    class Meta:
        abstract = True

    @property
    def avg(self):
        return self.sum / self.count if self.count else None


class Rollup(Stats):
    """The stats of one device's metric over one bucket."""

    # Kept, like the readings they sum up, when a device goes: the location rollups include them too.
    device = models.ForeignKey("devices.Device", on_delete=models.DO_NOTHING, db_constraint=False, db_index=False)
    metric = models.ForeignKey("devices.Metric", on_delete=models.DO_NOTHING, db_constraint=False, db_index=False)

    class Meta:
        abstract = True

    def __str__(self):
        return f"device {self.device_id} metric {self.metric_id} at {self.bucket:%Y-%m-%d %H:%M}"


class HourlyRollup(Rollup):
    """One local hour of one device's metric."""

    class Meta:
        verbose_name = _("hourly rollup")
        verbose_name_plural = _("hourly rollups")
        constraints = [models.UniqueConstraint(fields=["device", "metric", "bucket"], name="hourly_rollup_key")]
        indexes = [models.Index(fields=["metric", "bucket"])]


class DailyRollup(Rollup):
    """One local day (plant time zone, 23–25 hours across DST) of one device's metric."""

    class Meta:
        verbose_name = _("daily rollup")
        verbose_name_plural = _("daily rollups")
        constraints = [models.UniqueConstraint(fields=["device", "metric", "bucket"], name="daily_rollup_key")]
        indexes = [models.Index(fields=["metric", "bucket"])]


class LocationRollup(Stats):
    """The stats of one metric over all devices of one location in one bucket, summed up from the
    devices' rollups, so that the aggregation API reads one row per bucket and location."""

    location = models.ForeignKey("devices.Location", on_delete=models.DO_NOTHING, db_constraint=False, db_index=False)
    metric = models.ForeignKey("devices.Metric", on_delete=models.DO_NOTHING, db_constraint=False, db_index=False)

    class Meta:
        abstract = True

    def __str__(self):
        return f"location {self.location_id} metric {self.metric_id} at {self.bucket:%Y-%m-%d %H:%M}"


class LocationHourlyRollup(LocationRollup):
    """One local hour of one metric at one location."""

    class Meta:
        verbose_name = _("location hourly rollup")
        verbose_name_plural = _("location hourly rollups")
        constraints = [models.UniqueConstraint(fields=["location", "metric", "bucket"], name="location_hourly_rollup_key")]


class LocationDailyRollup(LocationRollup):
    """One local day of one metric at one location."""

    class Meta:
        verbose_name = _("location daily rollup")
        verbose_name_plural = _("location daily rollups")
        constraints = [models.UniqueConstraint(fields=["location", "metric", "bucket"], name="location_daily_rollup_key")]


class DirtyHour(models.Model):
    """An hour (UTC) that received readings since its rollups were last computed.

    Written in the same transaction as the readings, so a late or redelivered reading always
    gets its buckets recomputed."""

    hour = models.DateTimeField(_("hour"), primary_key=True)

    class Meta:
        verbose_name = _("hour to roll up")
        verbose_name_plural = _("hours to roll up")

    def __str__(self):
        return f"{self.hour:%Y-%m-%d %H:00}"
