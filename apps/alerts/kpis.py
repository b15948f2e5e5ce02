"""Alarm KPIs of EEMUA 191 / ISA-18.2 over a period, for the plant or the devices of a location.

An alarm is the opening of a device alert (an AlertEvent "opened"; escalations of an open alert
are not new alarms). Every figure is an aggregate over AlertEvent rows, answered from the index
alertevent_kpis (kind, at, device) that carries metric and chattering, so the table itself is not
read: counts per 10 minutes, counts per alarm (device, metric), counts of shelvings and
suppressions. Whether an opening chatters is decided once, when it is written.
"""

from datetime import timedelta

from django.db import connection
from django.db.models import Count, Q

from apps.devices.models import Device, Metric

from .models import ACTIVE_STATES, Alert, AlertEvent

FLOOD_ALARMS = 10  # more than this in 10 minutes is a flood (EEMUA 191)
MANAGEABLE_PER_HOUR = 6  # EEMUA 191: at most 6 alarms per hour is manageable
STALE_AFTER = timedelta(hours=24)
TOP = 10
TEN_MINUTES = 600

PER_BUCKET = """
SELECT floor(extract(epoch FROM at - %s) / 600)::int AS bucket, count(*)
FROM ({events}) AS events GROUP BY bucket
"""


def openings_per_bucket(openings, start):
    """10-minute period since `start` → openings in it; summed in PostgreSQL, in Python elsewhere (the demo)."""
    if connection.vendor != "postgresql":
        counts = {}
        for at in openings.values_list("at", flat=True):
            bucket = int((at - start).total_seconds() // TEN_MINUTES)
            counts[bucket] = counts.get(bucket, 0) + 1
        return counts
    sql, params = openings.values("at").query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute(PER_BUCKET.format(events=sql), [start, *params])
        return dict(cursor.fetchall())


def alarm_kpis(*, start, end, devices=None, now):
    """The KPIs of [start, end) for the alarms of `devices` (a queryset; None: the whole plant)."""
    events = AlertEvent.objects.filter(at__gte=start, at__lt=end, device__isnull=False).order_by()
    if devices is not None:
        events = events.filter(device__in=list(devices.values_list("pk", flat=True)))
    openings = events.filter(kind=AlertEvent.Kind.OPENED)
    per_bucket = openings_per_bucket(openings, start)
    per_alarm = list(
        openings.values_list("device", "metric").annotate(alarms=Count("pk"), chatters=Count("pk", filter=Q(chattering=True)))
    )
    per_kind = dict(
        events.filter(kind__in=[AlertEvent.Kind.SHELVED, AlertEvent.Kind.SUPPRESSED]).values_list("kind").annotate(n=Count("pk"))
    )
    total = sum(per_bucket.values())
    buckets = max(1, -(-int((end - start).total_seconds()) // TEN_MINUTES))
    per_hour = {}
    for bucket, count in per_bucket.items():
        per_hour[bucket // 6] = per_hour.get(bucket // 6, 0) + count
    hours = buckets / 6
    names = alarm_names({(d, m) for d, m, *_ in per_alarm})
    top = sorted(per_alarm, key=lambda row: (-row[2], row[0], row[1] or 0))[:TOP]
    chattering = sorted((row for row in per_alarm if row[3]), key=lambda row: -row[3])
    stale = Alert.objects.filter(
        source=Alert.Source.DEVICE, state__in=ACTIVE_STATES, opened_at__lt=min(end, now) - STALE_AFTER
    )
    if devices is not None:
        stale = stale.filter(device__in=devices)
    return {
        "start": start,
        "end": end,
        "alarms": total,
        "alarms_per_hour": {"average": round(total / hours, 3), "peak": max(per_hour.values(), default=0),
                            "target": MANAGEABLE_PER_HOUR},
        "alarms_per_10min": {"average": round(total / buckets, 3), "peak": max(per_bucket.values(), default=0)},
        "peak_alarms_per_10min": max(per_bucket.values(), default=0),
        "flood_percent": round(100 * sum(count > FLOOD_ALARMS for count in per_bucket.values()) / buckets, 3),
        "chattering": [{**names[(d, m)], "alarms": count, "chattering": chatters} for d, m, count, chatters in chattering],
        "stale": stale.count(),
        "top": [
            {**names[(d, m)], "alarms": count, "share_percent": round(100 * count / total, 2)} for d, m, count, _ in top
        ],
        "shelved": per_kind.get(AlertEvent.Kind.SHELVED, 0),
        "suppressed": per_kind.get(AlertEvent.Kind.SUPPRESSED, 0),
    }


def alarm_names(pairs):
    """(device pk, metric pk) → {"device": device_id, "metric": key or None (offline)}."""
    devices = dict(Device.objects.filter(pk__in={d for d, _ in pairs}).values_list("pk", "device_id"))
    metrics = dict(Metric.objects.filter(pk__in={m for _, m in pairs if m}).values_list("pk", "key"))
    return {(d, m): {"device": devices[d], "metric": metrics.get(m)} for d, m in pairs}
