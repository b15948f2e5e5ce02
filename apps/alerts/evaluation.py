"""The alert state machine: one batch of readings → opened, escalated, resolved alerts.

Per (device, metric) with a threshold: a value beyond a band must stay there for the
threshold's hold time before an alert opens; leaving a level takes clearing the hysteresis
deadband, so a value wobbling around a limit opens one alert, not many. One active alert per
pair is guaranteed by a partial unique index; rows are locked while a batch is evaluated.
"""

from dataclasses import dataclass, field
from datetime import UTC, datetime

from django.core.cache import cache
from django.db import IntegrityError, transaction

from .models import Alert, AlertEvent, Threshold
from .thresholds import LEVEL_RANK, RANK_LEVEL, Bands

ACTIVE_STATES = [Alert.State.OPEN, Alert.State.ACKNOWLEDGED]


def hold_key(device_pk, metric_pk):
    return f"hold:{device_pk}:{metric_pk}"


def as_datetime(ts):
    return datetime.fromtimestamp(ts, tz=UTC)


@dataclass
class PairState:
    """Where one (device, metric) stands while its readings of a batch are replayed."""

    device_pk: int
    metric_pk: int
    bands: Bands
    alert: Alert | None
    breach_since: float | None
    events: list = field(default_factory=list)

    @property
    def rank(self):
        return LEVEL_RANK[self.alert.level] if self.alert else 0

    def apply(self, ts, value):
        rank = self.bands.rank_from(value, self.rank)
        if self.alert is None:
            if rank == 0:
                self.breach_since = None
                return
            if self.breach_since is None:
                self.breach_since = ts
            if ts - self.breach_since >= self.bands.hold_seconds:
                self.open(ts, value, rank)
            return
        alert = self.alert
        alert.last_value = value
        if self.bands.excess(value) > self.bands.excess(alert.peak_value):
            alert.peak_value = value
        if rank == 0:
            alert.state = Alert.State.RESOLVED
            alert.resolved_at = as_datetime(ts)
            self.event(AlertEvent.Kind.RESOLVED, ts, value)
            self.alert = None
            self.breach_since = None
        elif rank != self.rank:
            kind = AlertEvent.Kind.ESCALATED if rank > self.rank else AlertEvent.Kind.DEESCALATED
            if kind == AlertEvent.Kind.ESCALATED:
                alert.state = Alert.State.OPEN  # an acknowledged warning that turns critical needs eyes again
            alert.level = RANK_LEVEL[rank]
            self.event(kind, ts, value)

    def open(self, ts, value, rank):
        self.alert = Alert(
            device_id=self.device_pk,
            metric_id=self.metric_pk,
            level=RANK_LEVEL[rank],
            opened_at=as_datetime(self.breach_since),
            first_value=value,
            peak_value=value,
            last_value=value,
        )
        self.breach_since = None
        self.event(AlertEvent.Kind.OPENED, ts, value)

    def event(self, kind, ts, value):
        self.events.append((self.alert, AlertEvent(kind=kind, at=as_datetime(ts), level=self.alert.level, value=value)))


def save_pair(pair):
    """Write a pair's alert changes; returns [(alert, event kind)] in order."""
    changed = []
    for alert, event in pair.events:
        if alert.pk is None:
            try:
                with transaction.atomic():
                    alert.save()
            except IntegrityError:
                # Another worker opened this pair's alert first: carry on with theirs, no second "opened".
                existing = Alert.objects.select_for_update().get(
                    device_id=alert.device_id, metric_id=alert.metric_id, state__in=ACTIVE_STATES
                )
                alert.pk = existing.pk
                alert.opened_at, alert.first_value, alert.state = existing.opened_at, existing.first_value, existing.state
                if pair.bands.excess(existing.peak_value) > pair.bands.excess(alert.peak_value):
                    alert.peak_value = existing.peak_value
                alert.save()
                continue
        else:
            alert.save()
        event.alert = alert
        event.save()
        changed.append((alert, event.kind))
    if pair.alert is not None and pair.alert.pk is not None and not changed:
        pair.alert.save(update_fields=["last_value", "peak_value"])
    return changed


def evaluate_readings(rows):
    """rows: (device_pk, metric_pk, ts, value, threshold_pk) → [(alert, event kind)] of the changes.

    Call inside a transaction.
    """
    by_pair = {}
    for device_pk, metric_pk, ts, value, threshold_pk in sorted(rows, key=lambda r: r[2]):
        by_pair.setdefault((device_pk, metric_pk, threshold_pk), []).append((ts, value))
    thresholds = Threshold.objects.in_bulk({key[2] for key in by_pair})
    device_pks = {key[0] for key in by_pair}
    # Locked in primary-key order, so workers evaluating overlapping batches never deadlock.
    active = {
        (a.device_id, a.metric_id): a
        for a in Alert.objects.select_for_update()
        .filter(device_id__in=device_pks, state__in=ACTIVE_STATES)
        .exclude(metric=None)
        .order_by("pk")
    }
    holds = cache.get_many([hold_key(d, m) for d, m, _ in by_pair])
    new_holds = {}
    ended_holds = []
    changed = []
    for (device_pk, metric_pk, threshold_pk), readings in by_pair.items():
        threshold = thresholds.get(threshold_pk)
        if threshold is None or not threshold.enabled:
            continue
        pair = PairState(
            device_pk=device_pk,
            metric_pk=metric_pk,
            bands=Bands.of(threshold),
            alert=active.get((device_pk, metric_pk)),
            breach_since=holds.get(hold_key(device_pk, metric_pk)),
        )
        for ts, value in readings:
            pair.apply(ts, value)
        changed.extend(save_pair(pair))
        # Only hold timers that changed go back to the cache (most pairs have none).
        key = hold_key(device_pk, metric_pk)
        if pair.breach_since is None and key in holds:
            ended_holds.append(key)
        elif pair.breach_since is not None and holds.get(key) != pair.breach_since:
            new_holds[key] = pair.breach_since
    if new_holds:
        cache.set_many(new_holds, timeout=86400)
    if ended_holds:
        cache.delete_many(ended_holds)
    return changed

