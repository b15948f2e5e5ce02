"""The alert state machine of one (device, metric): readings in, alert changes out (no I/O;
apps.alerts.services loads the state, runs it and writes what changed).

Per (device, metric) with a threshold: a value beyond a band must stay there for the
threshold's hold time before an alert opens; leaving a level takes clearing the hysteresis
deadband, so a value wobbling around a limit opens one alert, not many.

During a maintenance window of the device the machine stands still: a crossing opens a
suppressed record instead (one per crossing, ended when the value returns to normal or the window
ends), and a hold starts afresh after the window. An alert still active when a window begins goes
out of service: it becomes the window's suppressed record, and after the window the pair is
evaluated afresh (a value still beyond its band opens a new alert after its hold).

Workers evaluate consecutive batches side by side, so a device's batch can be evaluated after the
next one: a reading not newer than the newest one an active alert has taken leaves it as it is
(apps.alerts.services.missed_readings has applied it already, from the stored readings).
"""

from dataclasses import dataclass, field
from datetime import UTC, datetime

from .models import Alert, AlertEvent
from .thresholds import LEVEL_RANK, RANK_LEVEL, Bands


def hold_key(device_pk, metric_pk):
    return f"hold:{device_pk}:{metric_pk}"


def history_key(device_pk, metric_pk):
    return f"history:{device_pk}:{metric_pk}"


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
    maintenance: list = field(default_factory=list)  # (start ts, end ts) of the device's windows
    suppressed: Alert | None = None  # the crossing being recorded during maintenance
    touched: list = field(default_factory=list)  # suppressed records changed without an event
    recent: list = field(default_factory=list)  # [(ts, value)] of the rate and trend windows

    @property
    def rank(self):
        return LEVEL_RANK[self.alert.level] if self.alert else 0

    def apply(self, ts, value):
        if self.alert is not None and self.alert.last_reading_at is not None and as_datetime(ts) <= self.alert.last_reading_at:
            return  # taken already (missed_readings), or older than one taken: that one stands
        rate, minutes_to_critical = self.remember(ts, value)
        if any(start <= ts < end for start, end in self.maintenance):
            if self.alert is not None:
                self.take_out_of_service(ts)
            self.suppress(ts, value, rate)
            return
        if self.suppressed is not None:  # the first reading after the window ends its crossing
            self.end_suppressed(ts)
        rank = self.bands.rank_from(value, self.rank, rate, minutes_to_critical)
        predicted = None if minutes_to_critical is None or rank != 1 else as_datetime(ts + 60 * minutes_to_critical)
        if self.alert is None:
            if rank == 0:
                self.breach_since = None
                return
            if self.breach_since is None:
                self.breach_since = ts
            if ts - self.breach_since >= self.bands.hold_seconds:
                self.open(ts, value, rank, predicted)
            return
        alert = self.alert
        alert.last_value = value
        alert.last_reading_at = as_datetime(ts)
        alert.predicted_critical_at = predicted
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
                alert.reopen()  # an acknowledged warning that turns critical needs eyes again
            alert.level = RANK_LEVEL[rank]
            self.event(kind, ts, value)

    def remember(self, ts, value):
        """Keep the reading in the pair's recent history; returns (rate, minutes to critical): None, None
        for a threshold that watches neither."""
        bands = self.bands
        if not bands.history_seconds:
            return None, None
        horizon = ts - bands.history_seconds
        self.recent = [(t, v) for t, v in self.recent if horizon <= t < ts]
        self.recent.append((ts, value))
        rate = self.rate(ts, value) if bands.watches_rate else None
        trend_start = ts - 60 * bands.predict_window
        minutes = bands.minutes_to_critical([r for r in self.recent if r[0] >= trend_start]) if bands.predict_minutes else None
        return rate, minutes

    def rate(self, ts, value):
        """Units per minute from the oldest reading of the rate window to this one; None until
        readings span half the window (two close readings would make any noise a steep rate)."""
        horizon = ts - self.bands.rate_window
        first_ts, first_value = next((t, v) for t, v in self.recent if t >= horizon)
        if ts - first_ts < self.bands.rate_window / 2:
            return None
        return (value - first_value) * 60 / (ts - first_ts)

    def take_out_of_service(self, ts):
        self.alert.take_out_of_service()
        self.event(AlertEvent.Kind.SUPPRESSED, ts, self.alert.last_value)
        self.suppressed, self.alert = self.alert, None

    def suppress(self, ts, value, rate):
        self.breach_since = None
        record = self.suppressed
        if record is None:
            rank = self.bands.rank_from(value, 0, rate)
            if rank:
                self.suppressed = Alert(
                    device_id=self.device_pk,
                    metric_id=self.metric_pk,
                    level=RANK_LEVEL[rank],
                    state=Alert.State.SUPPRESSED,
                    opened_at=as_datetime(ts),
                    first_value=value,
                    peak_value=value,
                    last_value=value,
                )
                self.events.append(
                    (
                        self.suppressed,
                        AlertEvent(kind=AlertEvent.Kind.SUPPRESSED, at=as_datetime(ts), level=RANK_LEVEL[rank], value=value),
                    )
                )
            return
        rank = self.bands.rank_from(value, LEVEL_RANK[record.level], rate)
        record.last_value = value
        if self.bands.excess(value) > self.bands.excess(record.peak_value):
            record.peak_value = value
        if rank > LEVEL_RANK[record.level]:
            record.level = RANK_LEVEL[rank]
        self.touched.append(record)
        if rank == 0:
            self.end_suppressed(ts)

    def end_suppressed(self, ts):
        self.suppressed.resolved_at = as_datetime(ts)
        self.touched.append(self.suppressed)
        self.suppressed = None

    def open(self, ts, value, rank, predicted):
        self.alert = Alert(
            predicted_critical_at=predicted,
            device_id=self.device_pk,
            metric_id=self.metric_pk,
            level=RANK_LEVEL[rank],
            opened_at=as_datetime(self.breach_since),
            first_value=value,
            peak_value=value,
            last_value=value,
            last_reading_at=as_datetime(ts),
        )
        self.breach_since = None
        self.event(AlertEvent.Kind.OPENED, ts, value)

    def event(self, kind, ts, value):
        self.events.append((self.alert, AlertEvent(kind=kind, at=as_datetime(ts), level=self.alert.level, value=value)))
