"""The time window of a device's history chart, from the page's query string, and the data that
draws it: raw readings up to a day, hourly rollups up to ~35 days, daily rollups beyond, so any
range is a bounded number of points."""

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from django.utils import timezone
from django.utils.translation import gettext, pgettext_lazy


class Resolution(StrEnum):
    RAW = "raw"
    HOUR = "hour"
    DAY = "day"

    @property
    def description(self):
        return {
            "raw": gettext("raw readings"),
            "hour": gettext("hourly average, min–max band"),
            "day": gettext("daily average, min–max band"),
        }[self]


RAW_UP_TO = timedelta(hours=24)
HOURLY_UP_TO = timedelta(days=35)

# Preset ranges (query ?range=), ending now; their order is the order of the page's buttons.
RANGES = {
    "1h": (pgettext_lazy("history range", "hour"), timedelta(hours=1)),
    "6h": (pgettext_lazy("history range", "6 hours"), timedelta(hours=6)),
    "24h": (pgettext_lazy("history range", "day"), timedelta(hours=24)),
    "7d": (pgettext_lazy("history range", "week"), timedelta(days=7)),
    "30d": (pgettext_lazy("history range", "30 days"), timedelta(days=30)),
    "1y": (pgettext_lazy("history range", "year"), timedelta(days=365)),
}
DEFAULT_RANGE = "1h"
CUSTOM = "custom"
INPUT_FORMAT = "%Y-%m-%dT%H:%M"  # <input type="datetime-local">, in the plant's time zone


def resolution_for(span):
    if span <= RAW_UP_TO:
        return Resolution.RAW
    return Resolution.HOUR if span <= HOURLY_UP_TO else Resolution.DAY


@dataclass
class HistoryWindow:
    """[start, end) of a history chart; `live` when new readings extend it (raw presets ending now)."""

    key: str
    start: datetime
    end: datetime
    error: str = ""

    @property
    def resolution(self):
        return resolution_for(self.end - self.start)

    @property
    def live(self):
        return self.key != CUSTOM and self.resolution == Resolution.RAW

    @property
    def start_input(self):
        return format_local(self.start)

    @property
    def end_input(self):
        return format_local(self.end)


def format_local(at):
    """An aware datetime → datetime-local value in the plant's time zone."""
    return timezone.localtime(at).strftime(INPUT_FORMAT)


def parse_local(text):
    """A datetime-local value in the plant's time zone → aware datetime, or None."""
    try:
        return timezone.make_aware(datetime.strptime(text, INPUT_FORMAT))
    except ValueError:
        return None


def history_window(params, *, now):
    """?range=<preset> or ?range=custom&start=&end= → HistoryWindow; a bad custom range falls back to the default preset."""
    key = params.get("range", DEFAULT_RANGE)
    if key == CUSTOM:
        start, end = parse_local(params.get("start", "")), parse_local(params.get("end", "")) or now
        if start and start < end:
            return HistoryWindow(CUSTOM, start, end)
        error = gettext("Choose a start before the end.") if start else gettext("Choose a start date and time.")
        return HistoryWindow(DEFAULT_RANGE, now - RANGES[DEFAULT_RANGE][1], now, error=error)
    if key not in RANGES:
        key = DEFAULT_RANGE
    return HistoryWindow(key, now - RANGES[key][1], now)


def chart_time(at):
    """Chart x value: wall time in the plant's time zone (Plotly has no time zones)."""
    return timezone.localtime(at).strftime("%Y-%m-%d %H:%M:%S")


def chart_series(*, metrics, history, thresholds, resolution):
    """One chart per metric: x, y (the value, or the bucket average) and for rollups the min–max band."""
    series = []
    for metric in metrics:
        points = history[metric.pk]
        bands = thresholds.get(metric.pk)
        entry = {
            "key": metric.key,
            "label": metric.label or metric.key,
            "unit": metric.unit,
            "formula": gettext("calculated: {formula}").format(formula=metric.expression) if metric.is_calculated else "",
            "x": [chart_time(p[0]) for p in points],
            "y": [p[1] for p in points],
            "bands": None
            if bands is None
            else {
                "warning_min": bands.warning_min,
                "warning_max": bands.warning_max,
                "critical_min": bands.critical_min,
                "critical_max": bands.critical_max,
            },
        }
        if resolution != Resolution.RAW:
            entry["min"] = [p[2] for p in points]
            entry["max"] = [p[3] for p in points]
        series.append(entry)
    return series
