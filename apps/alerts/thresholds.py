"""Threshold resolution (most specific wins) and band classification.

Used on the ingest hot path (status of every live value) and by alert evaluation, so the
index is a plain dict built once per device-master snapshot.
"""

from dataclasses import dataclass

from .models import Level, Threshold

LEVEL_RANK = {Level.NORMAL: 0, Level.WARNING: 1, Level.CRITICAL: 2}
MIN_R2 = 0.6  # share of the variance a trend must explain before it predicts anything
RANK_LEVEL = {rank: level for level, rank in LEVEL_RANK.items()}


@dataclass(frozen=True, slots=True)
class Bands:
    pk: int
    warning_min: float | None
    warning_max: float | None
    critical_min: float | None
    critical_max: float | None
    hysteresis: float
    hold_seconds: int
    rate_max: float | None = None
    rate_critical_max: float | None = None
    rate_window: int = 300
    predict_minutes: int | None = None
    predict_window: int = 15

    @classmethod
    def of(cls, t):
        return cls(
            t.pk,
            t.warning_min,
            t.warning_max,
            t.critical_min,
            t.critical_max,
            t.hysteresis,
            t.hold_seconds,
            t.rate_max,
            t.rate_critical_max,
            t.rate_window,
            t.predict_minutes,
            t.predict_window,
        )

    @property
    def watches_rate(self):
        return self.rate_max is not None or self.rate_critical_max is not None

    @property
    def history_seconds(self):
        """How far back evaluation needs a pair's readings: its rate window and its trend window."""
        return max(self.rate_window if self.watches_rate else 0, self.predict_window * 60 if self.predict_minutes else 0)

    def rank(self, value, margin=0.0):
        """0 normal, 1 warning, 2 critical; `margin` pulls every limit inward (for hysteresis)."""
        if (self.critical_max is not None and value > self.critical_max - margin) or (
            self.critical_min is not None and value < self.critical_min + margin
        ):
            return 2
        if (self.warning_max is not None and value > self.warning_max - margin) or (
            self.warning_min is not None and value < self.warning_min + margin
        ):
            return 1
        return 0

    def rate_rank(self, rate, margin=0.0):
        """0, 1 or 2 for a rate of change (units per minute, either direction); None: not measured yet."""
        if rate is None:
            return 0
        speed = abs(rate)
        if self.rate_critical_max is not None and speed > self.rate_critical_max - margin:
            return 2
        if self.rate_max is not None and speed > self.rate_max - margin:
            return 1
        return 0

    def trend_rank(self, minutes_to_critical, held=False):
        """1 (warning) when the trend reaches a critical limit within predict_minutes; a predictive
        warning is held while the trend still reaches it within twice that (it resolves when the
        trend turns or slows down)."""
        if minutes_to_critical is None or not self.predict_minutes:
            return 0
        return 1 if minutes_to_critical <= self.predict_minutes * (2 if held else 1) else 0

    def rank_from(self, value, current_rank, rate=None, minutes_to_critical=None):
        """The level of `value` (with its rate of change and its trend) for a pair now at
        `current_rank`: leaving a level takes clearing the deadband (the hysteresis, in units per
        minute for the rate; for a prediction, the trend turning)."""
        rank = max(self.rank(value), self.rate_rank(rate), self.trend_rank(minutes_to_critical))
        if rank >= current_rank:
            return rank
        held = max(
            self.rank(value, self.hysteresis),
            self.rate_rank(rate, self.hysteresis),
            self.trend_rank(minutes_to_critical, held=True),
        )
        return max(rank, min(current_rank, held))

    def minutes_to_critical(self, history):
        """From [(ts, value)], oldest first: minutes until the least-squares line through them
        reaches the critical limit it heads for; None without a clear trend towards one.

        Least squares over a fixed window rather than Holt smoothing: it needs nothing but the
        window's readings (no smoothing state to carry between batches and workers), has no
        constants to tune per metric, and its R² tells a trend from noise, so noise around a flat
        line never predicts anything. A trend needs readings over half the window and R² ≥ MIN_R2.
        """
        if len(history) < 5 or history[-1][0] - history[0][0] < self.predict_window * 30:
            return None
        last_ts = history[-1][0]
        xs = [(ts - last_ts) / 60 for ts, _ in history]
        ys = [value for _, value in history]
        mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
        sxx = sum((x - mean_x) ** 2 for x in xs)
        syy = sum((y - mean_y) ** 2 for y in ys)
        sxy = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys))
        if not sxx or not syy or sxy * sxy < MIN_R2 * sxx * syy:
            return None
        slope = sxy / sxx
        now = mean_y - slope * mean_x  # the line at the newest reading
        limit = self.critical_max if slope > 0 else self.critical_min
        if limit is None:
            return None
        return max((limit - now) / slope, 0.0)

    def status(self, value):
        return RANK_LEVEL[self.rank(value)]

    def excess(self, value):
        """How far `value` lies beyond the normal band (0 inside it), to find an alert's peak."""
        upper = self.warning_max if self.warning_max is not None else self.critical_max
        lower = self.warning_min if self.warning_min is not None else self.critical_min
        if upper is not None and value > upper:
            return value - upper
        if lower is not None and value < lower:
            return lower - value
        return 0.0


def significant_readings(bands, rows):
    """Of one pair's rows (…, ts, value), oldest first, those that can change its alert.

    Consecutive readings with the same (level, level inside the deadband) leave the state machine
    where the first of them put it; of such a run only the first (when a breach starts), the most
    extreme (the peak) and the last (the current value) matter.
    """
    if bands.history_seconds:
        return rows  # a rate or a trend needs the readings in between
    values = [row[-1] for row in rows]
    low, high = min(values), max(values)
    if not any((bands.rank(low), bands.rank(high), bands.rank(low, bands.hysteresis), bands.rank(high, bands.hysteresis))):
        # The normal band is an interval: all of them are normal and clear of the deadband, one run.
        return [rows[0]] if len(rows) == 1 else [rows[0], rows[-1]]
    kept = []
    run = []
    signature = None
    for row in rows:
        value = row[-1]
        current = (bands.rank(value), bands.rank(value, bands.hysteresis))
        if current != signature and run:
            kept += run_representatives(bands, run)
            run = []
        signature = current
        run.append(row)
    if run:
        kept += run_representatives(bands, run)
    return kept


def run_representatives(bands, run):
    peak = max(run, key=lambda row: bands.excess(row[-1]))
    return sorted({id(r): r for r in (run[0], peak, run[-1])}.values(), key=lambda row: row[-2])


class ThresholdIndex:
    """Enabled thresholds keyed by scope, resolved device > location > device type > global."""

    def __init__(self, thresholds):
        self._by_scope = {}
        for t in thresholds:
            if t.device_id:
                scope = ("d", t.device_id)
            elif t.location_id:
                scope = ("l", t.location_id)
            elif t.device_type_id:
                scope = ("t", t.device_type_id)
            else:
                scope = ("g", None)
            self._by_scope[(scope, t.metric_id)] = Bands.of(t)
        self.metric_pks = frozenset(metric_pk for _, metric_pk in self._by_scope)

    def resolve(self, *, device_pk, location_pk, type_pk, metric_pk):
        get = self._by_scope.get
        return (
            get((("d", device_pk), metric_pk))
            or get((("l", location_pk), metric_pk))
            or get((("t", type_pk), metric_pk))
            or get((("g", None), metric_pk))
        )


def load_threshold_index():
    return ThresholdIndex(Threshold.objects.filter(enabled=True))
