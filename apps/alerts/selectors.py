"""Reads of the alerts app."""

from .models import Threshold
from .thresholds import ThresholdIndex


def effective_thresholds(*, device, metrics):
    """metric pk → the Bands that apply to `device` (most specific threshold wins)."""
    index = ThresholdIndex(Threshold.objects.filter(enabled=True, metric__in=metrics))
    return {
        m.pk: index.resolve(device_pk=device.pk, location_pk=device.location_id, type_pk=device.device_type_id, metric_pk=m.pk)
        for m in metrics
    }
