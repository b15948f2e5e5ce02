"""Reads of the alerts app."""

from datetime import UTC, datetime

from django.contrib.auth import get_user_model
from django.db.models import Exists, OuterRef, Q

from .models import ANNUNCIATED_STATES, Alert, MaintenanceWindow, Threshold
from .thresholds import ThresholdIndex


def effective_thresholds(*, device, metrics):
    """metric pk → the Bands that apply to `device` (most specific threshold wins)."""
    index = ThresholdIndex(Threshold.objects.filter(enabled=True, metric__in=metrics))
    return {
        m.pk: index.resolve(device_pk=device.pk, location_pk=device.location_id, type_pk=device.device_type_id, metric_pk=m.pk)
        for m in metrics
    }


def report_recipients():
    """The e-mail addresses of active plant staff and superusers, for the weekly KPI report."""
    users = get_user_model().objects.filter(Q(is_staff=True) | Q(is_superuser=True), is_active=True).exclude(email="")
    return sorted(set(users.values_list("email", flat=True)))


def location_storms():
    """Active storm alerts, each with the `loc_id` it is about (see services.watch_storms)."""
    storms = list(Alert.objects.filter(source=Alert.Source.SYSTEM, subject__startswith="storm:", state__in=ANNUNCIATED_STATES))
    for storm in storms:
        storm.loc_id = storm.subject.removeprefix("storm:")
    return storms


def in_maintenance(at):
    """A filter of devices that a maintenance window (their own or their location's) covers at `at`."""
    windows = MaintenanceWindow.objects.filter(start__lte=at, end__gt=at)
    return Exists(windows.filter(device=OuterRef("pk"))) | Exists(windows.filter(location=OuterRef("location")))


def maintenance_by_device(*, device_pks, start, end):
    """device pk → [(start, end)] as epoch seconds of the maintenance windows that cover the device
    (its own or its location's) somewhere between `start` and `end` (epoch seconds).

    On the evaluation hot path: one query on the index of `end`, which usually finds no window; a
    location's window comes back once per device of the location (a join, not a second query, and
    not the batch's devices as an IN list, which costs more to send and plan than the join)."""
    windows = (
        MaintenanceWindow.objects.filter(
            start__lte=datetime.fromtimestamp(end, tz=UTC), end__gt=datetime.fromtimestamp(start, tz=UTC)
        )
        .values_list("device", "location__devices", "start", "end")
        .order_by()
    )
    covered = {}
    for device_pk, located_pk, window_start, window_end in windows:
        pk = device_pk or located_pk
        if pk in device_pks:
            covered.setdefault(pk, []).append((window_start.timestamp(), window_end.timestamp()))
    return covered
