"""Reads of the dashboard: the plant tree with latest values and alert counts, device history,
pipeline health and recent dead letters.

The plant tree is built for 10,000 devices and more: a fixed number of queries (rows as tuples,
not model instances) and one cache round trip for all latest values.
"""

import time
from dataclasses import dataclass, field

from django.conf import settings
from django.db.models import Exists, OuterRef, Q, Subquery
from django.utils.translation import gettext_lazy as _

from apps.alerts.models import ANNUNCIATED_STATES, Alert, AlertEvent, Level
from apps.alerts.selectors import location_storms
from apps.devices.models import Device, DeviceType, Location
from apps.devices.selectors import is_offline
from apps.telemetry.latest import get_latest
from apps.telemetry.metrics import pipeline_summaries
from apps.telemetry.models import DailyRollup, DeadLetter, HourlyRollup
from apps.telemetry.rollups import hour_offset, hour_start, local_day_bounds, plant_tz
from apps.telemetry.selectors import readings_between

from .history import Resolution

STATUSES = {"normal", "warning", "critical"}

# The alert console's filter choices: (value, label).
ALERT_STATES = [("active", _("active")), *Alert.State.choices, ("all", _("all"))]
ALERT_LEVELS = [(level.value, level.label) for level in (Level.WARNING, Level.CRITICAL, Level.OFFLINE)]


def value_text(value):
    """A live value's text, in a page's cells and in the readings pushed to it alike."""
    return f"{value:.1f}"


def cell_status(status):
    """The status class of a live cell: normal, warning, critical, or none (no threshold)."""
    return status if status in STATUSES else "none"


# How long the console offers to shelve an alert for: (minutes, label).
SHELVE_CHOICES = [(15, _("15 min")), (60, _("1 hour")), (240, _("4 hours")), (480, _("8 hours")), (1440, _("24 hours"))]


def alert_rows():
    """Alerts with everything their rows show, in one query; `reached_critical` tells an alert that
    was critical at some point (its level now may be lower) from one that never was, and
    `shelving_note` is the reason given when it was last shelved."""
    critical_event = AlertEvent.objects.filter(alert=OuterRef("pk"), level=Level.CRITICAL)
    last_shelving = AlertEvent.objects.filter(alert=OuterRef("pk"), kind=AlertEvent.Kind.SHELVED).order_by("-at", "-pk")
    return Alert.objects.select_related("device__location", "metric", "acknowledged_by").annotate(
        reached_critical=Exists(critical_event), shelving_note=Subquery(last_shelving.values("note")[:1])
    )


def console_alerts(*, state="active", level="", loc_id=""):
    """The alert console's rows for its filters. State "active" is what needs attention (open and
    acknowledged; shelved alerts are listed apart), with the alerts of a location in an alert storm
    folded into its storm alert unless that location is asked for."""
    alerts = alert_rows()
    if state == "active":
        alerts = alerts.filter(state__in=ANNUNCIATED_STATES)
        if not loc_id:
            alerts = alerts.exclude(device__location__loc_id__in=[storm.loc_id for storm in location_storms()])
    elif state in Alert.State.values:
        alerts = alerts.filter(state=state)
    if level:
        alerts = alerts.filter(level=level)
    if loc_id:
        alerts = alerts.filter(device__location__loc_id=loc_id)
    return alerts


def alert_kind(level):
    """The counter an alert level adds to: warnings, or criticals (critical and offline)."""
    return "warning" if level == "warning" else "critical"


@dataclass
class AlertCounts:
    """Open (not resolved) alerts of one part of the plant."""

    warning: int = 0
    critical: int = 0

    def add(self, other):
        self.warning += other.warning
        self.critical += other.critical


@dataclass
class ActiveAlert:
    id: int
    kind: str  # "warning" or "critical"
    loc_id: str | None  # None: a system alert, about no place in the plant


@dataclass
class DeviceRow:
    device_id: str
    offline: bool
    silent_after: int  # seconds of silence after which it counts as offline
    cells: list  # (Metric, status class, value text, ts ms or None)


@dataclass
class LocationTile:
    location: Location
    devices: list = field(default_factory=list)
    counts: AlertCounts = field(default_factory=AlertCounts)


@dataclass
class PlantNode:
    """A factory, building or floor: its children (nodes, or tiles for a floor) and their alert counts."""

    name: str
    children: list = field(default_factory=list)
    counts: AlertCounts = field(default_factory=AlertCounts)


def active_alerts():
    """Every alert that needs attention (not resolved, shelved or suppressed), as (id, warning|critical, loc_id):
    one query, a few bytes each."""
    rows = Alert.objects.filter(state__in=ANNUNCIATED_STATES).values_list("pk", "level", "device__location__loc_id")
    return [ActiveAlert(pk, alert_kind(level), loc_id) for pk, level, loc_id in rows]


def alert_counts_by_location(alerts):
    counts = {}
    for alert in alerts:
        entry = counts.setdefault(alert.loc_id, AlertCounts())
        setattr(entry, alert.kind, getattr(entry, alert.kind) + 1)
    return counts


def latest_value_rows(devices, device_types):
    """(device_id, device_type_id) in display order → DeviceRow with the latest value of each metric."""
    type_metrics = {pk: list(t.metrics.all()) for pk, t in device_types.items()}
    latest = get_latest(device_id for device_id, _ in devices)
    now_ms = time.time() * 1000
    rows = []
    for device_id, type_pk in devices:
        cells, newest = [], 0
        stored = latest.get(device_id, {})
        for metric in type_metrics[type_pk]:
            item = stored.get(metric.key)
            if item:
                cells.append((metric, cell_status(item["status"]), value_text(item["value"]), item["ts"]))
                newest = max(newest, item["ts"])
            else:
                cells.append((metric, "none", "–", None))
        silent_after = device_types[type_pk].offline_after
        offline = is_offline(newest_ms=newest, now_ms=now_ms, offline_after_ms=silent_after * 1000)
        rows.append(DeviceRow(device_id, offline=offline, silent_after=silent_after, cells=cells))
    return rows


def plant_devices(*, factory=None, query=""):
    """The active devices the overview shows for its filters."""
    devices = Device.objects.filter(is_active=True)
    if factory:
        devices = devices.filter(location__factory=factory)
    if query:
        devices = devices.filter(
            Q(device_id__icontains=query)
            | Q(name__icontains=query)
            | Q(location__loc_id__icontains=query)
            | Q(location__name__icontains=query)
        )
    return devices


def plant_tree(*, factory=None, query="", alerts=()):
    """Active devices with their latest values as factory → building → floor → location tiles,
    with the open alert counts of every level; → (tree, device count)."""
    rows = list(
        plant_devices(factory=factory, query=query)
        .order_by("location_id", "device_id")
        .values_list("device_id", "device_type_id", "location_id")
    )
    device_types = DeviceType.objects.prefetch_related("metrics").in_bulk({type_pk for _, type_pk, _ in rows})
    tiles = {
        location.pk: LocationTile(location)
        for location in Location.objects.filter(pk__in={location_pk for _, _, location_pk in rows})
    }
    device_rows = latest_value_rows([(device_id, type_pk) for device_id, type_pk, _ in rows], device_types)
    for (*_ids, location_pk), row in zip(rows, device_rows, strict=True):
        tiles[location_pk].devices.append(row)

    counts = alert_counts_by_location(alerts)
    factories = {}
    for tile in tiles.values():  # in Location's order: factory, building, floor, loc_id
        loc = tile.location
        tile.counts = counts.get(loc.loc_id, AlertCounts())
        factory_node = factories.setdefault(loc.factory, PlantNode(loc.factory))
        building = child(factory_node, loc.building)
        floor = child(building, loc.floor)
        floor.children.append(tile)
        for node in (factory_node, building, floor):
            node.counts.add(tile.counts)
    return list(factories.values()), len(rows)


def child(node, name):
    """The child node of `node` called `name`, added at the end if missing (children arrive in order)."""
    if not node.children or node.children[-1].name != name:
        node.children.append(PlantNode(name))
    return node.children[-1]


def first_bucket(resolution, start):
    """Start of the rollup bucket that contains `start`."""
    tz = plant_tz()
    if resolution == Resolution.HOUR:
        return hour_start(start, hour_offset(tz))
    return local_day_bounds(start.astimezone(tz).date(), tz)[0]


ROLLUPS = {Resolution.HOUR: HourlyRollup, Resolution.DAY: DailyRollup}


def device_history(*, device, metrics, start, end, resolution):
    """metric pk → points of [start, end), oldest first: (time, value) for raw readings,
    (bucket start, avg, min, max) for hourly or daily rollups."""
    if resolution == Resolution.RAW:
        return {m.pk: readings_between(device=device, metric=m, start=start, end=end) for m in metrics}
    rows = (
        ROLLUPS[resolution]
        .objects.filter(device=device, metric__in=metrics, bucket__gte=first_bucket(resolution, start), bucket__lt=end)
        .order_by("metric_id", "bucket")
        .values_list("metric_id", "bucket", "sum", "count", "min", "max")
    )
    history = {m.pk: [] for m in metrics}
    for metric_pk, bucket, total, count, low, high in rows:
        history[metric_pk].append((bucket, total / count, low, high))
    return history


def pipeline_health(*, now=None):
    """The ingest processes' latest summaries, and their sum: rates add up, lag adds up over the
    processes' partitions, latency is the worst process's."""
    now = now or time.time()
    summaries = pipeline_summaries()
    reasons = dict(DeadLetter.Reason.choices)
    by_reason = {}
    for summary in summaries:
        for reason, count in summary["dead_letters_by_reason"].items():
            by_reason[reason] = by_reason.get(reason, 0) + count
    lags = [s["kafka_lag"] for s in summaries if s["kafka_lag"] is not None]
    p99s = [s["latency_p99"] for s in summaries if s["latency_p99"] is not None]
    messages_per_s = sum(s["messages_per_s"] for s in summaries)
    dead_letters_per_s = sum(s["dead_letters_per_s"] for s in summaries)
    return {
        "at": now,
        "messages_per_s": messages_per_s,
        "readings_per_s": sum(s["readings_per_s"] for s in summaries),
        "dead_letters_per_s": dead_letters_per_s,
        "dead_letter_ratio": dead_letters_per_s / messages_per_s if messages_per_s else 0.0,
        "capacity": capacity(messages_per_s=messages_per_s, processes=len(summaries)),
        "kafka_lag": sum(lags) if lags else None,
        "latency_p99": max(p99s, default=None),
        "dead_letters_by_reason": [
            {"reason": reason, "label": reasons.get(reason, reason), "count": count}
            for reason, count in sorted(by_reason.items(), key=lambda item: -item[1])
        ],
        "processes": [
            {
                "name": s["name"],
                "source": s["source"],
                "report_age_s": max(0.0, now - s["at"]),
                "messages_per_s": s["messages_per_s"],
                "dead_letters": s["dead_letters"],
                "latency_p99": s["latency_p99"],
                "kafka_lag": s["kafka_lag"],
            }
            for s in summaries
        ],
    }


SENSOR_INTERVALS = (1, 10, 60, 300)  # seconds between two readings of a sensor


def capacity(*, messages_per_s, processes):
    """Current load against the measured capacity (IOTHUB_INGEST_CAPACITY msg/s per ingest process,
    from `manage.py bench_ingest`), and how many sensors the deployment takes at each interval."""
    per_process = settings.IOTHUB["INGEST_CAPACITY"]
    total = per_process * max(processes, 1)
    return {
        "per_process": per_process,
        "total": total,
        "load_percent": 100 * messages_per_s / total,
        "sensors": [{"interval_s": i, "sensors": int(total * i)} for i in SENSOR_INTERVALS],
    }


def recent_dead_letters(limit=20):
    return list(DeadLetter.objects.order_by("-received_at", "-pk")[:limit])
