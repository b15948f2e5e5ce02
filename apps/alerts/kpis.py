"""Alarm KPIs of EEMUA 191 / ISA-18.2 over a period, for the plant or the devices of some locations.

An alarm is the opening of a device alert (an AlertEvent "opened"; escalations of an open alert
are not new alarms). The KPIs are read from two rollups that beat keeps within a minute of the
events (apps.alerts.services.refresh_alarm_rollups): AlarmBucket, alarms per 10 minutes per
location and for the plant, and AlarmDay, each alarm's openings, chattering openings, shelvings and
suppressions per plant-local day. 90 days of a plant are then some 13,000 buckets and a row per
alarm and day, however many events there were. Whether an opening chatters is decided once, when
it is written (AlertEvent.save).
"""

from datetime import timedelta

from django.db.models import Sum

from apps.devices.models import Device, Metric

from .models import ACTIVE_STATES, AlarmBucket, AlarmDay, Alert

FLOOD_ALARMS = 10  # more than this in 10 minutes is a flood (EEMUA 191)
MANAGEABLE_PER_HOUR = 6  # EEMUA 191: at most 6 alarms per hour is manageable
STALE_AFTER = timedelta(hours=24)
TOP = 10
TEN_MINUTES = 600


def alarm_kpis(*, start, end, locations=None, now):
    """The KPIs of [start, end) (plant-local midnights) for the alarms at `locations` (a queryset;
    None: the whole plant)."""
    buckets = AlarmBucket.objects.filter(start__gte=start, start__lt=end)
    days = AlarmDay.objects.filter(day__gte=start.date(), day__lt=end.date())
    stale = Alert.objects.filter(source=Alert.Source.DEVICE, state__in=ACTIVE_STATES, opened_at__lt=min(end, now) - STALE_AFTER)
    if locations is None:
        per_bucket = dict(buckets.filter(location=None).values_list("start", "opened"))
    else:
        per_bucket = dict(buckets.filter(location__in=locations).values_list("start").annotate(n=Sum("opened")).order_by())
        days = days.filter(location__in=locations)
        stale = stale.filter(device__location__in=locations)
    per_bucket = {int((at - start).total_seconds() // TEN_MINUTES): count for at, count in per_bucket.items()}
    per_alarm = list(
        days.values_list("device", "metric")
        .annotate(alarms=Sum("opened"), chatters=Sum("chattering"))
        .order_by()
        .filter(alarms__gt=0)
    )
    totals = days.aggregate(shelved=Sum("shelved"), suppressed=Sum("suppressed"))
    total = sum(per_bucket.values())
    periods = max(1, -(-int((end - start).total_seconds()) // TEN_MINUTES))
    per_hour = {}
    for bucket, count in per_bucket.items():
        per_hour[bucket // 6] = per_hour.get(bucket // 6, 0) + count
    names = alarm_names({(d, m) for d, m, *_ in per_alarm})
    top = sorted(per_alarm, key=lambda row: (-row[2], row[0], row[1] or 0))[:TOP]
    chattering = sorted((row for row in per_alarm if row[3]), key=lambda row: (-row[3], row[0], row[1] or 0))
    peak = max(per_bucket.values(), default=0)
    return {
        "start": start,
        "end": end,
        "alarms": total,
        "alarms_per_hour": {
            "average": round(total / (periods / 6), 3),
            "peak": max(per_hour.values(), default=0),
            "target": MANAGEABLE_PER_HOUR,
        },
        "alarms_per_10min": {"average": round(total / periods, 3), "peak": peak},
        "peak_alarms_per_10min": peak,
        "flood_percent": round(100 * sum(count > FLOOD_ALARMS for count in per_bucket.values()) / periods, 3),
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
