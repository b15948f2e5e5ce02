"""Writes of the alerts app: evaluation of stored batches and the human side of the lifecycle."""

from datetime import UTC, datetime

from django.db import transaction
from django.db.models import Case, DateTimeField, Value, When
from django.db.models.functions import Coalesce, Greatest
from django.utils import timezone

from apps.devices.models import Device
from apps.live.broadcast import push_alert

from .evaluation import evaluate_readings
from .models import Alert, AlertEvent
from .serializers import alert_json


def push_on_commit(alerts):
    """Dashboards hear of an alert change only once it is stored."""
    if not alerts:
        return
    ids = [a.pk for a in alerts]

    def push():
        for alert in Alert.objects.filter(pk__in=ids).select_related("device__location", "metric", "acknowledged_by"):
            push_alert(alert_json(alert))

    transaction.on_commit(push)


def process_stored_batch(*, rows, last_seen):
    """rows: (device_pk, metric_pk, ts, value, threshold_pk); last_seen: (device_pk, ts)."""
    with transaction.atomic():
        changed = evaluate_readings(rows)
        push_on_commit(changed)
    record_last_seen(last_seen)
    return changed


def record_last_seen(last_seen, chunk=500):
    """One UPDATE per chunk of devices; a late batch never moves last_seen_at backwards."""
    for start in range(0, len(last_seen), chunk):
        part = last_seen[start : start + chunk]
        newest = Case(
            *[When(pk=pk, then=Value(datetime.fromtimestamp(ts, tz=UTC))) for pk, ts in part],
            output_field=DateTimeField(),
        )
        Device.objects.filter(pk__in=[pk for pk, _ in part]).update(
            last_seen_at=Greatest(Coalesce("last_seen_at", newest), newest)
        )


def change_alert_state(*, alert_id, user, note, state, kind, stamp_field):
    with transaction.atomic():
        alert = Alert.objects.select_for_update().get(pk=alert_id)
        if alert.state == Alert.State.RESOLVED or alert.state == state:
            return alert
        now = timezone.now()
        alert.state = state
        setattr(alert, stamp_field, now)
        if state == Alert.State.ACKNOWLEDGED:
            alert.acknowledged_by = user
        if note:
            alert.note = note
        alert.save()
        AlertEvent.objects.create(alert=alert, kind=kind, at=now, level=alert.level, value=alert.last_value, user=user, note=note)
        push_on_commit([alert])
    return alert


def acknowledge_alert(*, alert_id, user, note=""):
    return change_alert_state(
        alert_id=alert_id, user=user, note=note, state=Alert.State.ACKNOWLEDGED,
        kind=AlertEvent.Kind.ACKNOWLEDGED, stamp_field="acknowledged_at",
    )


def resolve_alert(*, alert_id, user, note=""):
    return change_alert_state(
        alert_id=alert_id, user=user, note=note, state=Alert.State.RESOLVED,
        kind=AlertEvent.Kind.RESOLVED, stamp_field="resolved_at",
    )
