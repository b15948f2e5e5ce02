"""Reads of the alerts app."""

from django.db.models import OuterRef, Subquery

from .models import Alert, AlertEvent, Threshold
from .thresholds import ThresholdIndex


def effective_thresholds(*, device, metrics):
    """metric pk → the Bands that apply to `device` (most specific threshold wins)."""
    index = ThresholdIndex(
        Threshold.objects.filter(enabled=True, metric__in=metrics)
    )
    return {
        m.pk: index.resolve(device_pk=device.pk, location_pk=device.location_id, type_pk=device.device_type_id, metric_pk=m.pk)
        for m in metrics
    }


def shelved_alerts():
    """Shelved alerts, soonest back first, each with the note of its latest shelving as `shelving_note`."""
    last_shelving = AlertEvent.objects.filter(alert=OuterRef("pk"), kind=AlertEvent.Kind.SHELVED).order_by("-at", "-pk")
    return (
        Alert.objects.filter(state=Alert.State.SHELVED)
        .select_related("device__location", "metric")
        .annotate(shelving_note=Subquery(last_shelving.values("note")[:1]))
        .order_by("shelved_until", "pk")
    )
