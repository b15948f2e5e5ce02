from django.db import models


class Location(models.Model):
    """A place in the plant where sensors hang: factory → building → floor → area."""

    loc_id = models.CharField("location id", max_length=64, unique=True)
    factory = models.CharField(max_length=100, db_index=True)
    building = models.CharField(max_length=100, blank=True)
    floor = models.CharField(max_length=50, blank=True)
    area = models.CharField(max_length=100, blank=True)
    name = models.CharField(max_length=200, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["factory", "building", "floor", "loc_id"]
        indexes = [models.Index(fields=["factory", "building", "floor"])]

    def __str__(self):
        return self.name or self.loc_id


class Metric(models.Model):
    """A measured quantity, e.g. temperature in °C."""

    key = models.SlugField(max_length=64, unique=True)
    unit = models.CharField(max_length=20, blank=True)
    label = models.CharField(max_length=100, blank=True)

    class Meta:
        ordering = ["key"]

    def __str__(self):
        return self.key


class DeviceType(models.Model):
    """A sensor model: which metrics it reports and how often."""

    name = models.CharField(max_length=100, unique=True)
    metrics = models.ManyToManyField(Metric, related_name="device_types")
    primary_metric = models.ForeignKey(
        Metric,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="The metric of compact payloads {id, ts, v}.",
    )
    expected_interval = models.PositiveIntegerField(
        default=60, help_text="Seconds between two readings of a healthy device."
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name


class Device(models.Model):
    """One sensor; its device_id is its identity on MQTT (topic sensors/<device_id>)."""

    device_id = models.CharField(max_length=64, unique=True)
    name = models.CharField(max_length=200, blank=True)
    device_type = models.ForeignKey(DeviceType, on_delete=models.PROTECT, related_name="devices")
    location = models.ForeignKey(Location, on_delete=models.PROTECT, related_name="devices")
    is_active = models.BooleanField(default=True)
    last_seen_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True, db_index=True)

    class Meta:
        ordering = ["device_id"]

    def __str__(self):
        return self.device_id
