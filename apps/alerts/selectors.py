"""Reads of the alerts app."""

from datetime import UTC, datetime

from django.db.models import OuterRef, Subquery

from .models import ANNUNCIATED_STATES, Alert, AlertEvent, MaintenanceWindow, Threshold
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


def location_storms():
    """Active storm alerts, each with the `loc_id` it is about (see services.watch_storms)."""
    storms = list(Alert.objects.filter(source=Alert.Source.SYSTEM, subject__startswith="storm:", state__in=ANNUNCIATED_STATES))
    for storm in storms:
        storm.loc_id = storm.subject.removeprefix("storm:")
    return storms


def maintenance_by_device(*, device_pks, start, end):
    """device pk → [(start, end)] as epoch seconds of the maintenance windows that cover the device
    (its own or its location's) somewhere between `start` and `end` (epoch seconds): one query,
    usually answered from the index on `end` with no row."""
    if not device_pks:
        return {}
    windows = MaintenanceWindow.objects.filter(start__lte=datetime.fromtimestamp(end, tz=UTC), end__gt=datetime.fromtimestamp(start, tz=UTC))
    rows = (
        windows.filter(device__in=device_pks).values_list("device", "start", "end")
        .union(windows.filter(location__devices__in=device_pks).values_list("location__devices", "start", "end"), all=True)
    )
    covered = {}
    for device_pk, window_start, window_end in rows:
        if device_pk in device_pks:
            covered.setdefault(device_pk, []).append((window_start.timestamp(), window_end.timestamp()))
    return covered
