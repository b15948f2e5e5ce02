"""Every change of alert state goes through here: evaluation of stored batches (the state machine of
apps.alerts.evaluation, its results written here), offline detection, system alerts, and the human
side of the lifecycle (acknowledge, resolve). Each change is an AlertEvent row, announced on commit."""

import logging
from contextlib import nullcontext
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from django.conf import settings
from django.core.cache import cache
from django.db import IntegrityError, connection, transaction
from django.db.models import Case, Count, DateTimeField, Exists, OuterRef, Q, Value, When
from django.db.models.functions import Coalesce, Greatest
from django.utils import timezone

from apps.devices.models import Device, DeviceType
from apps.live.broadcast import push_alert
from apps.telemetry.selectors import readings_inside
from iothub.celery import enqueue

from . import system
from .evaluation import PairState, as_datetime, history_key, hold_key
from .metrics import ALERT_CHANGES
from .models import ACTIVE_STATES, AlarmBucket, AlarmDay, AlarmDirtyDay, Alert, AlertEvent, Level, Threshold
from .selectors import in_maintenance, maintenance_by_device
from .serializers import alert_json
from .thresholds import LEVEL_RANK, Bands

log = logging.getLogger(__name__)

SAVE_ATTEMPTS = 3  # of a pair whose alert other workers keep opening and resolving meanwhile
NOTIFIED_EVENTS = {AlertEvent.Kind.OPENED, AlertEvent.Kind.ESCALATED, AlertEvent.Kind.RESOLVED, AlertEvent.Kind.UNSHELVED}


class AlertNotActive(Exception):
    """Acknowledging, resolving, shelving or unshelving an alert that is no longer active (resolved,
    or the record of a suppressed crossing): nothing changed."""

    def __init__(self, alert):
        super().__init__(f"Alert {alert.pk} is already {alert.state}.")
        self.alert = alert


def announce_on_commit(changes):
    """changes: [(alert, event kind)]. Once stored: push each alert to dashboards, notify routes."""
    if not changes:
        return
    for alert, kind in changes:
        ALERT_CHANGES.labels(kind, alert.level).inc()
    ids = list(dict.fromkeys(alert.pk for alert, _ in changes))
    # A shelved alert's changes are recorded and shown, not sent (ISA-18.2 shelving).
    to_notify = [(alert.pk, kind) for alert, kind in changes if kind in NOTIFIED_EVENTS and not alert.is_silenced]

    def announce():
        for alert in Alert.objects.filter(pk__in=ids).select_related("device__location", "metric", "acknowledged_by"):
            push_alert(alert_json(alert))
        for alert_id, kind in to_notify:
            enqueue("apps.alerts.tasks.notify_alert_change", {"alert_id": alert_id, "event": kind})

    transaction.on_commit(announce)


def save_pair(pair):
    """Write a pair's alert changes; returns [(alert, event kind)] in order. Raises IntegrityError
    where another worker opened the pair's alert since it was read (call it in a savepoint)."""
    changed = []
    for alert, event in pair.events:
        alert.save()
        event.alert = alert
        event.save()
        changed.append((alert, event.kind))
    if pair.alert is not None and pair.alert.pk is not None and not changed:
        pair.alert.save(update_fields=["last_value", "last_reading_at", "peak_value", "predicted_critical_at"])
    for record in {id(r): r for r in pair.touched}.values():
        record.save(update_fields=["level", "last_value", "peak_value", "resolved_at"])
    return changed


def evaluate_readings(rows, *, returning=frozenset()):
    """rows: (device_pk, metric_pk, ts, value, threshold_pk) → [(alert, event kind)] of the changes.

    `returning`: devices whose data just came back after they were offline. Nothing was known of
    them while they were silent, so their evaluation starts afresh: no hold timer or rate and
    trend window reaches across the silence (suppression by cause, docs/architecture.md §5).

    Call inside a transaction.
    """
    by_pair = {}
    for device_pk, metric_pk, ts, value, threshold_pk in sorted(rows, key=lambda r: r[2]):
        by_pair.setdefault((device_pk, metric_pk, threshold_pk), []).append((ts, value))
    bands_of = {pk: Bands.of(t) for pk, t in Threshold.objects.in_bulk({key[2] for key in by_pair}).items() if t.enabled}
    device_pks = {key[0] for key in by_pair}
    active, suppressed = locked_alerts(device_id__in=device_pks)
    missed = missed_readings(active, by_pair)
    times = [ts for readings in (*by_pair.values(), *missed.values()) for ts, _ in readings]
    maintenance = maintenance_by_device(device_pks=device_pks, start=min(times, default=0), end=max(times, default=0))
    history_pairs = {(d, m) for d, m, t in by_pair if t in bands_of and bands_of[t].history_seconds}
    holds = cache.get_many([hold_key(d, m) for d, m, _ in by_pair] + [history_key(d, m) for d, m in history_pairs])
    new_holds = {}
    ended_holds = []
    changed = []
    for (device_pk, metric_pk, threshold_pk), readings in by_pair.items():
        bands = bands_of.get(threshold_pk)
        if bands is None:
            continue
        fresh = device_pk in returning
        pair_key = (device_pk, metric_pk)
        for attempt in range(SAVE_ATTEMPTS):
            pair = PairState(
                device_pk=device_pk,
                metric_pk=metric_pk,
                bands=bands,
                alert=active.get(pair_key),
                breach_since=None if fresh else holds.get(hold_key(device_pk, metric_pk)),
                maintenance=maintenance.get(device_pk, []),
                suppressed=suppressed.get(pair_key),
                recent=[] if fresh else holds.get(history_key(device_pk, metric_pk), []),
            )
            for ts, value in missed.get(pair_key, []) + readings:
                pair.apply(ts, value)
            opens = any(alert.pk is None for alert, _ in pair.events)  # only an insert can meet another worker's alert
            try:
                with transaction.atomic() if opens else nullcontext():
                    changed.extend(save_pair(pair))
                break
            except IntegrityError:
                if attempt == SAVE_ATTEMPTS - 1:
                    raise
                # Another worker opened this pair's alert since it was read: evaluate the pair again from that one.
                pair_active, pair_suppressed = locked_alerts(device_id=device_pk, metric_id=metric_pk)
                active[pair_key], suppressed[pair_key] = pair_active.get(pair_key), pair_suppressed.get(pair_key)
                missed[pair_key] = missed_readings(active, {(device_pk, metric_pk, threshold_pk): readings}).get(pair_key, [])
        # Only hold timers that changed go back to the cache (most pairs have none).
        key = hold_key(device_pk, metric_pk)
        if pair.breach_since is None and key in holds:
            ended_holds.append(key)
        elif pair.breach_since is not None and holds.get(key) != pair.breach_since:
            new_holds[key] = pair.breach_since
        if pair.bands.history_seconds:
            new_holds[history_key(device_pk, metric_pk)] = pair.recent
    if new_holds:
        cache.set_many(new_holds, timeout=86400)
    if ended_holds:
        cache.delete_many(ended_holds)
    return changed


def locked_alerts(**filters):
    """(active, suppressed), {(device_pk, metric_pk): Alert} of the threshold alerts that `filters`
    select: the active ones and the suppressed records not ended. Locked in primary-key order, so
    workers evaluating overlapping batches never deadlock."""
    active, suppressed = {}, {}
    for alert in (
        Alert.objects.select_for_update()
        .filter(Q(state__in=ACTIVE_STATES) | Q(state=Alert.State.SUPPRESSED, resolved_at=None), **filters)
        .exclude(metric=None)
        .order_by("pk")
    ):
        (suppressed if alert.state == Alert.State.SUPPRESSED else active)[(alert.device_id, alert.metric_id)] = alert
    return active, suppressed


def missed_readings(active, by_pair):
    """{(device_pk, metric_pk): [(ts, value)]}: of each pair of a batch (`by_pair`) with an active
    alert, the readings stored between the newest one the alert has taken and the batch's first.
    A worker's threads evaluate consecutive batches at the same time, and the batch of such a reading
    may come later. Applied before the batch's, the batch meets the alert as they left it (a crossing
    after a normal reading opens an alert of its own); their batch then leaves it as it is
    (apps.alerts.evaluation)."""
    spans = {}
    for (device_pk, metric_pk, _), readings in by_pair.items():
        alert = active.get((device_pk, metric_pk))
        if alert is not None and alert.last_reading_at is not None:
            spans[(device_pk, metric_pk)] = (alert.last_reading_at, as_datetime(readings[0][0]))
    return readings_inside(spans=spans)


def process_stored_batch(*, rows, last_seen):
    """rows: (device_pk, metric_pk, ts, value, threshold_pk); last_seen: (device_pk, ts)."""
    with transaction.atomic():
        back = resolve_offline(device_pks=[pk for pk, _ in last_seen])
        changes = back + evaluate_readings(rows, returning={alert.device_id for alert, _ in back})
        record_last_seen(last_seen)
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
    offline = (
        Alert.objects.select_for_update()
        .filter(device_id__in=device_pks, metric=None, state__in=ACTIVE_STATES)
        .order_by("pk")  # locked in primary-key order, before the alerts evaluation locks: no deadlocks
    )
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
            )
            .exclude(Exists(already_offline))
            .exclude(in_maintenance(now))  # out of service: silence is expected
        ]
        for device in silent:
            alert = Alert.objects.create(device=device, metric=None, level=Level.OFFLINE, opened_at=device.last_seen_at)
            AlertEvent.objects.create(alert=alert, kind=AlertEvent.Kind.OPENED, at=now, level=Level.OFFLINE)
            changes.append((alert, AlertEvent.Kind.OPENED))
        announce_on_commit(changes)
    return [alert for alert, _ in changes]


def take_out_of_service(*, now=None):
    """Beat: the active threshold alerts of devices a maintenance window covers go out of service
    (state suppressed, event `suppressed`; pushed to dashboards, sent to no route); returns them.
    Evaluation does the same at the first reading inside the window, whichever comes first."""
    now = now or timezone.now()
    with transaction.atomic():
        alerts = (
            Alert.objects.select_for_update()
            .filter(device__in=Device.objects.filter(in_maintenance(now)), state__in=ACTIVE_STATES)
            .exclude(metric=None)
            .order_by("pk")
        )
        changes = []
        for alert in alerts:
            alert.take_out_of_service()
            alert.save(update_fields=["state", "shelved_until", "unshelved_state"])
            AlertEvent.objects.create(
                alert=alert, kind=AlertEvent.Kind.SUPPRESSED, at=now, level=alert.level, value=alert.last_value
            )
            changes.append((alert, AlertEvent.Kind.SUPPRESSED))
        announce_on_commit(changes)
    return [alert for alert, _ in changes]


def change_alert_state(*, alert_id, user, note, state, kind, stamp_field):
    with transaction.atomic():
        alert = Alert.objects.select_for_update().get(pk=alert_id)
        if not alert.is_active:  # resolved stays resolved, suppressed stays a record
            raise AlertNotActive(alert)
        if alert.state == state:
            return alert
        now = timezone.now()
        if alert.state == Alert.State.SHELVED and state == Alert.State.ACKNOWLEDGED:
            alert.unshelved_state = state  # stays shelved; acknowledged once the shelving ends
        else:
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
        alert_id=alert_id,
        user=user,
        note=note,
        state=Alert.State.ACKNOWLEDGED,
        kind=AlertEvent.Kind.ACKNOWLEDGED,
        stamp_field="acknowledged_at",
    )


def resolve_alert(*, alert_id, user, note=""):
    return change_alert_state(
        alert_id=alert_id,
        user=user,
        note=note,
        state=Alert.State.RESOLVED,
        kind=AlertEvent.Kind.RESOLVED,
        stamp_field="resolved_at",
    )


def shelve_alert(*, alert_id, user, minutes, note=""):
    """Put an active alert aside for `minutes`: still evaluated and recorded, not notified, no
    reminders, until the shelving ends (expire_shelving) or is ended early (unshelve_alert).
    Shelving a shelved alert sets a new end. Raises AlertNotActive for a resolved alert."""
    with transaction.atomic():
        alert = Alert.objects.select_for_update().get(pk=alert_id)
        if not alert.is_active:
            raise AlertNotActive(alert)
        now = timezone.now()
        if alert.state != Alert.State.SHELVED:
            alert.unshelved_state, alert.state = alert.state, Alert.State.SHELVED
        alert.shelved_until = now + timedelta(minutes=minutes)
        alert.save(update_fields=["state", "unshelved_state", "shelved_until"])
        AlertEvent.objects.create(
            alert=alert, kind=AlertEvent.Kind.SHELVED, at=now, level=alert.level, value=alert.last_value, user=user, note=note
        )
        announce_on_commit([(alert, AlertEvent.Kind.SHELVED)])
    return alert


def end_shelving(alert, *, at, user=None, note=""):
    """Back to the state it would be in without shelving; announced (so notified) as unshelved."""
    alert.state = alert.unshelved_state or Alert.State.OPEN
    alert.shelved_until, alert.unshelved_state = None, ""
    alert.save(update_fields=["state", "unshelved_state", "shelved_until"])
    AlertEvent.objects.create(
        alert=alert, kind=AlertEvent.Kind.UNSHELVED, at=at, level=alert.level, value=alert.last_value, user=user, note=note
    )
    return alert, AlertEvent.Kind.UNSHELVED


def unshelve_alert(*, alert_id, user, note=""):
    """End a shelving early; an active alert that is not shelved stays as it is. Raises
    AlertNotActive for a resolved alert."""
    with transaction.atomic():
        alert = Alert.objects.select_for_update().get(pk=alert_id)
        if not alert.is_active:
            raise AlertNotActive(alert)
        if alert.state == Alert.State.SHELVED:
            announce_on_commit([end_shelving(alert, at=timezone.now(), user=user, note=note)])
    return alert


def expire_shelving(*, now=None):
    """Beat: end every shelving whose time is up; returns the alerts unshelved."""
    now = now or timezone.now()
    with transaction.atomic():
        due = Alert.objects.select_for_update().filter(state=Alert.State.SHELVED, shelved_until__lte=now).order_by("pk")
        changes = [end_shelving(alert, at=now) for alert in due]
        announce_on_commit(changes)
    return [alert for alert, _ in changes]


# -- Alarm KPI rollups (apps.alerts.kpis reads them) ------------------------------------------------


def refresh_alarm_rollups():
    """Beat: recompute the AlarmBucket and AlarmDay rows of every day marked dirty by new alert
    events; returns the days. A day is unmarked before it is recomputed, so an event committed
    meanwhile marks it again for the next run."""
    with transaction.atomic():
        days = sorted(AlarmDirtyDay.objects.select_for_update(skip_locked=True).values_list("day", flat=True))
        AlarmDirtyDay.objects.filter(day__in=days).delete()
    for day in days:
        recompute_alarm_day(day)
    return days


def recompute_alarm_day(day):
    tz = ZoneInfo(settings.TIME_ZONE)
    start = datetime.combine(day, time.min, tzinfo=tz)
    end = datetime.combine(day + timedelta(days=1), time.min, tzinfo=tz)
    kinds = [AlertEvent.Kind.OPENED, AlertEvent.Kind.SHELVED, AlertEvent.Kind.SUPPRESSED]
    events = AlertEvent.objects.filter(kind__in=kinds, at__gte=start, at__lt=end, device__isnull=False).order_by()
    buckets, alarms = {}, {}
    for kind, at, device_pk, metric_pk, chattering, location_pk in events.values_list(
        "kind", "at", "device", "metric", "chattering", "device__location"
    ):
        counts = alarms.setdefault(
            (device_pk, metric_pk), {"location_id": location_pk, "opened": 0, "chattering": 0, "shelved": 0, "suppressed": 0}
        )
        counts[kind] += 1
        if kind == AlertEvent.Kind.OPENED:
            counts["chattering"] += chattering
            bucket = datetime.fromtimestamp(at.timestamp() // 600 * 600, tz=UTC)
            for where in (None, location_pk):
                buckets[(bucket, where)] = buckets.get((bucket, where), 0) + 1
    with transaction.atomic():
        AlarmBucket.objects.filter(start__gte=start, start__lt=end).delete()
        AlarmDay.objects.filter(day=day).delete()
        AlarmBucket.objects.bulk_create(
            AlarmBucket(start=bucket, location_id=where, opened=count) for (bucket, where), count in buckets.items()
        )
        AlarmDay.objects.bulk_create(
            AlarmDay(day=day, device_id=device_pk, metric_id=metric_pk, **counts)
            for (device_pk, metric_pk), counts in alarms.items()
        )


# -- System alerts: the hub watching its own pipeline (apps.alerts.system measures it) ------------


def apply_system_level(*, subject, value, level, now):
    """Open, escalate, de-escalate or resolve the system alert of `subject`; returns [(alert, event kind)]."""
    alert = Alert.objects.select_for_update().filter(source=Alert.Source.SYSTEM, subject=subject, state__in=ACTIVE_STATES).first()
    if alert is None:
        if level == Level.NORMAL:
            return []
        alert = Alert.objects.create(
            source=Alert.Source.SYSTEM,
            subject=subject,
            level=level,
            opened_at=now,
            first_value=value,
            peak_value=value,
            last_value=value,
        )
        kind = AlertEvent.Kind.OPENED
    else:
        alert.last_value = value
        if abs(value) > abs(alert.peak_value or 0):
            alert.peak_value = value
        if level == Level.NORMAL:
            alert.state, alert.resolved_at, kind = Alert.State.RESOLVED, now, AlertEvent.Kind.RESOLVED
        elif level != alert.level:
            rising = LEVEL_RANK[level] > LEVEL_RANK[alert.level]
            kind = AlertEvent.Kind.ESCALATED if rising else AlertEvent.Kind.DEESCALATED
            alert.level = level
            if rising:
                alert.reopen()
        else:
            alert.save(update_fields=["last_value", "peak_value"])
            return []
        alert.save()
    AlertEvent.objects.create(alert=alert, kind=kind, at=now, level=alert.level, value=value)
    return [(alert, kind)]


STORM_PREFIX = "storm:"


def watch_storms(*, now=None):
    """Beat: a location where more than STORM_ALERTS alerts opened within STORM_WINDOW seconds gets
    one storm alert (a system alert "storm:<loc_id>", its value the count), resolved when the count
    falls back; the console folds the location's alerts into it. Returns the changes."""
    config = settings.IOTHUB
    now = now or timezone.now()
    counts = dict(
        AlertEvent.objects.filter(
            kind=AlertEvent.Kind.OPENED, at__gt=now - timedelta(seconds=config["STORM_WINDOW"]), device__isnull=False
        )
        .values_list("device__location__loc_id")
        .annotate(n=Count("pk"))
        .order_by()
    )
    storming = {f"{STORM_PREFIX}{loc_id}": count for loc_id, count in counts.items() if count > config["STORM_ALERTS"]}
    active = set(
        Alert.objects.filter(source=Alert.Source.SYSTEM, subject__startswith=STORM_PREFIX, state__in=ACTIVE_STATES).values_list(
            "subject", flat=True
        )
    )
    with transaction.atomic():
        changes = []
        for subject in sorted(active | set(storming)):
            count = storming.get(subject, counts.get(subject.removeprefix(STORM_PREFIX), 0))
            level = Level.WARNING if subject in storming else Level.NORMAL
            changes += apply_system_level(subject=subject, value=float(count), level=level, now=now)
        announce_on_commit(changes)
    return changes


def watch_pipeline(*, now=None):
    """Evaluate every pipeline measurement into system alerts; returns the changes."""
    measurements = system.pipeline_measurements(now=now)
    stamp = timezone.now()
    with transaction.atomic():
        changes = []
        for subject, (value, level) in measurements.items():
            changes += apply_system_level(subject=subject, value=float(value), level=level, now=stamp)
        announce_on_commit(changes)
    for alert, kind in changes:
        log.warning("system alert %s: %s %s = %s", kind, alert.level, alert.subject, alert.last_value)
    return changes
