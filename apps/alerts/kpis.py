"""Alarm KPIs of EEMUA 191 / ISA-18.2 over a period, for the plant or the devices of some locations.

An alarm is the opening of a device alert (an AlertEvent "opened"; escalations of an open alert
are not new alarms). The KPIs are read from two rollups that beat keeps within a minute of the
events (apps.alerts.services.refresh_alarm_rollups): AlarmBucket, alarms per 10 minutes per
location and for the plant, and AlarmDay, each alarm's openings, chattering openings, shelvings and
suppressions per plant-local day. 90 days of a plant are then some 13,000 buckets and a row per
alarm and day, however many events there were. Whether an opening chatters is decided once, when
it is written (AlertEvent.save).
"""

from datetime import UTC, timedelta

from django.db.models import Sum

from apps.devices.models import Device, Metric

from .models import ACTIVE_STATES, AlarmBucket, AlarmDay, Alert

FLOOD_ALARMS = 10  # more than this in 10 minutes is a flood (EEMUA 191)
MANAGEABLE_PER_HOUR = 6  # EEMUA 191: at most 6 alarms per hour is manageable
STALE_AFTER = timedelta(hours=24)
LONGEST_KPI_PERIOD = timedelta(days=366)  # a year of days, leap or not: what the page and the API accept
TOP = 10
TEN_MINUTES = 600


def alarms_per_10min(*, start, end, locations=None):
    """Alarms opened in each 10-minute period of [start, end), in order, at `locations` (a
    queryset; None: the whole plant), from the rollups."""
    buckets = AlarmBucket.objects.filter(start__gte=start, start__lt=end)
    if locations is None:
        rows = buckets.filter(location=None).values_list("start", "opened")
    else:
        rows = buckets.filter(location__in=locations).values_list("start").annotate(n=Sum("opened")).order_by()
    start = start.astimezone(UTC)
    seconds = int((end.astimezone(UTC) - start).total_seconds())
    counts = [0] * max(1, -(-seconds // TEN_MINUTES))
    for at, opened in rows:
        counts[int((at - start).total_seconds()) // TEN_MINUTES] += opened
    return counts


def per_hour(counts):
    """Counts of 10-minute periods → counts of hours (six periods each)."""
    return [sum(counts[i : i + 6]) for i in range(0, len(counts), 6)]


def alarm_kpis(*, start, end, locations=None, now, counts=None):
    """The KPIs of [start, end) (plant-local midnights) for the alarms at `locations` (a queryset;
    None: the whole plant); `counts`: alarms_per_10min of the same, where the caller has them."""
    if counts is None:
        counts = alarms_per_10min(start=start, end=end, locations=locations)
    days = AlarmDay.objects.filter(day__gte=start.date(), day__lt=end.date())
    stale = Alert.objects.filter(source=Alert.Source.DEVICE, state__in=ACTIVE_STATES, opened_at__lt=min(end, now) - STALE_AFTER)
    if locations is not None:
        days = days.filter(location__in=locations)
        stale = stale.filter(device__location__in=locations)
    per_alarm = list(
        days.values_list("device", "metric")
        .annotate(alarms=Sum("opened"), chatters=Sum("chattering"))
        .order_by()
        .filter(alarms__gt=0)
    )
    totals = days.aggregate(shelved=Sum("shelved"), suppressed=Sum("suppressed"))
    total, periods, peak = sum(counts), len(counts), max(counts)
    names = alarm_names({(d, m) for d, m, *_ in per_alarm})
    top = sorted(per_alarm, key=lambda row: (-row[2], row[0], row[1] or 0))[:TOP]
    chattering = sorted((row for row in per_alarm if row[3]), key=lambda row: (-row[3], row[0], row[1] or 0))
    return {
        "start": start,
        "end": end,
        "alarms": total,
        "alarms_per_hour": {
            "average": round(total / (periods / 6), 3),
            "peak": max(per_hour(counts)),
            "target": MANAGEABLE_PER_HOUR,
        },
        "alarms_per_10min": {"average": round(total / periods, 3), "peak": peak},
        "peak_alarms_per_10min": peak,
        "flood_percent": round(100 * sum(count > FLOOD_ALARMS for count in counts) / periods, 3),
        "chattering": [{**names[(d, m)], "alarms": count, "chattering": chatters} for d, m, count, chatters in chattering],
        "stale": stale.count(),
        "top": [{**names[(d, m)], "alarms": count, "share_percent": round(100 * count / total, 2)} for d, m, count, _ in top],
        "shelved": totals["shelved"] or 0,
        "suppressed": totals["suppressed"] or 0,
    }


def alarm_names(pairs):
    """(device pk, metric pk) → {"device": device_id, "metric": key or None (offline)}."""
    devices = dict(Device.objects.filter(pk__in={d for d, _ in pairs}).values_list("pk", "device_id"))
    metrics = dict(Metric.objects.filter(pk__in={m for _, m in pairs if m}).values_list("pk", "key"))
    return {(d, m): {"device": devices[d], "metric": metrics.get(m)} for d, m in pairs}
