"""Writes of the alerts app: evaluation of stored batches, offline detection, the human side of the lifecycle."""

from datetime import UTC, datetime, timedelta

from django.db import connection, transaction
from django.db.models import Case, DateTimeField, Exists, OuterRef, Value, When
from django.db.models.functions import Coalesce, Greatest
from django.utils import timezone

from apps.devices.models import Device, DeviceType
from apps.live.broadcast import push_alert

from .evaluation import ACTIVE_STATES, evaluate_readings
from .metrics import ALERT_CHANGES
from .models import Alert, AlertEvent, Level
from .serializers import alert_json

NOTIFIED_EVENTS = {AlertEvent.Kind.OPENED, AlertEvent.Kind.ESCALATED, AlertEvent.Kind.RESOLVED}


def announce_on_commit(changes):
    """changes: [(alert, event kind)]. Once stored: push each alert to dashboards, notify routes."""
    if not changes:
        return
    from .tasks import notify_alert_change

    for alert, kind in changes:
        ALERT_CHANGES.labels(kind, alert.level).inc()
    ids = list(dict.fromkeys(alert.pk for alert, _ in changes))
    to_notify = [(alert.pk, kind) for alert, kind in changes if kind in NOTIFIED_EVENTS]

    def announce():
        for alert in Alert.objects.filter(pk__in=ids).select_related("device__location", "metric", "acknowledged_by"):
            push_alert(alert_json(alert))
        for alert_id, kind in to_notify:
            notify_alert_change.delay(alert_id=alert_id, event=kind)

    transaction.on_commit(announce)


def process_stored_batch(*, rows, last_seen):
    """rows: (device_pk, metric_pk, ts, value, threshold_pk); last_seen: (device_pk, ts)."""
    with transaction.atomic():
        changes = evaluate_readings(rows)
        record_last_seen(last_seen)
        changes += resolve_offline(device_pks=[pk for pk, _ in last_seen])
        announce_on_commit(changes)
    return changes


RECORD_LAST_SEEN = """
UPDATE devices_device AS d SET last_seen_at = to_timestamp(v.epoch)
FROM unnest(%s::bigint[], %s::double precision[]) AS v(pk, epoch)
WHERE d.id = v.pk AND (d.last_seen_at IS NULL OR d.last_seen_at < to_timestamp(v.epoch))
"""


def record_last_seen(last_seen, chunk=500):
    """Newest reading time per device; a late batch never moves last_seen_at backwards.

    PostgreSQL: one UPDATE from two arrays, in primary-key order (no deadlocks between workers).
    Elsewhere (the SQLite demo): one UPDATE with a CASE per chunk of devices."""
    last_seen = sorted(last_seen)
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(RECORD_LAST_SEEN, [[pk for pk, _ in last_seen], [ts for _, ts in last_seen]])
        return
    for start in range(0, len(last_seen), chunk):
        part = last_seen[start : start + chunk]
        newest = Case(
            *[When(pk=pk, then=Value(datetime.fromtimestamp(ts, tz=UTC))) for pk, ts in part],
            output_field=DateTimeField(),
        )
        Device.objects.filter(pk__in=[pk for pk, _ in part]).update(
            last_seen_at=Greatest(Coalesce("last_seen_at", newest), newest)
        )


def resolve_offline(*, device_pks):
    """Data came back: resolve the offline alerts of these devices."""
    now = timezone.now()
    changes = []
    offline = Alert.objects.select_for_update().filter(device_id__in=device_pks, metric=None, state__in=ACTIVE_STATES)
    for alert in offline:
        alert.state, alert.resolved_at = Alert.State.RESOLVED, now
        alert.save(update_fields=["state", "resolved_at"])
        AlertEvent.objects.create(alert=alert, kind=AlertEvent.Kind.RESOLVED, at=now, level=alert.level)
        changes.append((alert, AlertEvent.Kind.RESOLVED))
    return changes


def detect_offline(*, now=None):
    """Open an offline alert for every active device silent for longer than its type's offline_after."""
    now = now or timezone.now()
    already_offline = Alert.objects.filter(device=OuterRef("pk"), metric=None, state__in=ACTIVE_STATES)
    changes = []
    with transaction.atomic():
        # One query per device type (a handful), each with its own silence limit.
        silent = [
            device
            for device_type in DeviceType.objects.all()
            for device in Device.objects.filter(
                device_type=device_type,
                is_active=True,
                last_seen_at__lt=now - timedelta(seconds=device_type.offline_after),
            ).exclude(Exists(already_offline))
        ]
        for device in silent:
            alert = Alert.objects.create(device=device, metric=None, level=Level.OFFLINE, opened_at=device.last_seen_at)
            AlertEvent.objects.create(alert=alert, kind=AlertEvent.Kind.OPENED, at=now, level=Level.OFFLINE)
            changes.append((alert, AlertEvent.Kind.OPENED))
        announce_on_commit(changes)
    return [alert for alert, _ in changes]


class AlertAlreadyResolved(Exception):
    """Acknowledging or resolving an alert that is resolved already: nothing changed."""

    def __init__(self, alert):
        super().__init__(f"Alert {alert.pk} is already resolved.")
        self.alert = alert


def change_alert_state(*, alert_id, user, note, state, kind, stamp_field):
    with transaction.atomic():
        alert = Alert.objects.select_for_update().get(pk=alert_id)
        if alert.state == Alert.State.RESOLVED:
            raise AlertAlreadyResolved(alert)
        if alert.state == state:
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
        announce_on_commit([(alert, kind)])
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
