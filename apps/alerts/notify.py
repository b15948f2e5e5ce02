"""Notifications of alert changes: routing, per-route storm folding, delivery, reminders.

Every message is a Notification row first (the history), then delivered by a Celery task that
retries temporary failures with backoff. Past `max_per_window` messages in a route's window,
further changes are folded, and beat sends one summary of them once the window has passed.
"""

from datetime import datetime, time, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, Max, Min, OuterRef, Q
from django.utils import timezone, translation
from django.utils.translation import gettext

from apps.telemetry.rollups import plant_tz
from iothub.celery import enqueue

from .kpis import FLOOD_ALARMS, MANAGEABLE_PER_HOUR, alarm_kpis
from .metrics import NOTIFICATIONS
from .models import ACTIVE_STATES, Alert, AlertEvent, Level, Notification, NotificationRoute
from .selectors import report_recipients
from .serializers import alert_json
from .transports import PermanentError, email, transport_for

REMINDER = "still unacknowledged"  # the event of a reminder, in its webhook JSON too
LEVEL_ORDER = {Level.WARNING: 1, Level.CRITICAL: 2, Level.OFFLINE: 2}


def routes_for(alert):
    """Enabled routes that want this alert: level at or above theirs, and their factory/location
    (system alerts go to the routes without a factory or location filter)."""
    routes = NotificationRoute.objects.filter(enabled=True)
    if alert.device_id:
        location = alert.device.location
        routes = routes.filter(Q(factory="") | Q(factory=location.factory), Q(location=None) | Q(location=location))
    else:
        routes = routes.filter(factory="", location=None)
    return [r for r in routes if LEVEL_ORDER[alert.level] >= LEVEL_ORDER[r.min_level]]


def describe(alert, event):
    """(subject, text) of one alert change, in the active language."""
    value = "" if alert.last_value is None else f" = {alert.last_value:g}"
    if alert.device_id:
        location = alert.device.location
        where = f"{location.factory} / {location.building} / {location.name or location.loc_id}"
    else:
        where = gettext("the hub's pipeline")
    what_happened = gettext("still unacknowledged") if event == REMINDER else AlertEvent.Kind(event).label
    if alert.predicted_critical_at and alert.is_active:
        minutes = max(round((alert.predicted_critical_at - timezone.now()).total_seconds() / 60), 1)
        what_happened += " " + gettext("predicted to reach critical in ~%(minutes)d minutes") % {"minutes": minutes}
    return (
        f"[{alert.level.upper()}] {alert.what}{value} {what_happened}",
        gettext("%(what)s at %(where)s: %(level)s alert %(event)s (first %(first)s, peak %(peak)s, now %(now)s).")
        % {
            "what": alert.what,
            "where": where,
            "level": Level(alert.level).label,
            "event": what_happened,
            "first": alert.first_value,
            "peak": alert.peak_value,
            "now": alert.last_value,
        },
    )


def message_for(notification):
    """The message of a notification, in the plant's language (settings.LANGUAGE_CODE) whoever's
    request or task caused it."""
    with translation.override(settings.LANGUAGE_CODE):
        if notification.kind == Notification.Kind.SUMMARY:
            folded = list(notification.folded.select_related("alert__device__location", "alert__metric"))
            lines = [describe(n.alert, n.event)[0] for n in folded]
            return {
                "subject": gettext("%(count)d more alert changes on %(route)s")
                % {"count": len(folded), "route": notification.route.name},
                "text": "\n".join(lines),
                "alerts": [alert_json(n.alert) for n in folded],
            }
        alert = notification.alert
        event = REMINDER if notification.kind == Notification.Kind.REMINDER else notification.event
        subject, text = describe(alert, event)
        return {"subject": subject, "text": text, "event": event, "alert": alert_json(alert)}


def notify_alert_change(*, alert_id, event):
    """Create the notifications of one alert change; returns the ids to deliver now."""
    alert = Alert.objects.select_related("device__location", "metric").get(pk=alert_id)
    for route in routes_for(alert):
        with transaction.atomic():
            route = NotificationRoute.objects.select_for_update().get(pk=route.pk)  # serialises the window count
            since = timezone.now() - timedelta(seconds=route.window_seconds)
            recent = route.notifications.filter(created_at__gte=since).exclude(status=Notification.Status.FOLDED).count()
            folded = recent >= route.max_per_window
            notification = Notification.objects.create(
                route=route,
                alert=alert,
                kind=Notification.Kind.CHANGE,
                event=event,
                status=Notification.Status.FOLDED if folded else Notification.Status.PENDING,
            )
        if not folded:
            enqueue("apps.alerts.tasks.deliver_notification", {"notification_id": notification.pk})


def send_due_summaries(*, now=None):
    """Beat: for every route whose oldest folded change is a window old, one summary of all its folded changes."""
    now = now or timezone.now()
    summaries = []
    for route in NotificationRoute.objects.filter(
        notifications__status=Notification.Status.FOLDED, notifications__summary_of=None
    ).distinct():
        with transaction.atomic():
            route = NotificationRoute.objects.select_for_update().get(pk=route.pk)
            folded = route.notifications.filter(status=Notification.Status.FOLDED, summary_of=None)
            oldest = folded.aggregate(oldest=Min("created_at"))["oldest"]
            if oldest is None or now - oldest < timedelta(seconds=route.window_seconds):
                continue
            summary = Notification.objects.create(route=route, kind=Notification.Kind.SUMMARY)
            folded.update(summary_of=summary)
        enqueue("apps.alerts.tasks.deliver_notification", {"notification_id": summary.pk})
        summaries.append(summary)
    return summaries


def deliver(*, notification_id):
    """Send one notification; TemporaryError propagates so the task retries it."""
    notification = Notification.objects.select_related("route", "alert__device__location", "alert__metric").get(
        pk=notification_id
    )
    if notification.status == Notification.Status.SENT:
        return
    notification.attempts += 1
    try:
        transport_for(notification.route).send(notification.route, message_for(notification))
    except PermanentError as e:
        notification.status, notification.last_error = Notification.Status.FAILED, str(e)
    except Exception as e:
        notification.last_error = str(e)
        notification.save(update_fields=["attempts", "last_error"])
        NOTIFICATIONS.labels(notification.route.transport, "retry").inc()
        raise
    else:
        notification.status, notification.sent_at = Notification.Status.SENT, timezone.now()
    notification.save(update_fields=["attempts", "last_error", "status", "sent_at"])
    NOTIFICATIONS.labels(notification.route.transport, notification.status).inc()


REPORT_DAYS = 7


def send_kpi_report(*, now=None):
    """Beat, weekly: the alarm KPIs of the plant's last seven whole days, by e-mail (the e-mail
    transport of the notifications) to every active staff member and superuser with an address;
    returns the message and its recipients."""
    now = now or timezone.now()
    tz = plant_tz()
    last_day = now.astimezone(tz).date() - timedelta(days=1)
    first_day = last_day - timedelta(days=REPORT_DAYS - 1)
    start = datetime.combine(first_day, time.min, tzinfo=tz)
    end = datetime.combine(last_day + timedelta(days=1), time.min, tzinfo=tz)
    with translation.override(settings.LANGUAGE_CODE):
        message = kpi_report(alarm_kpis(start=start, end=end, now=now), first_day=first_day, last_day=last_day)
    recipients = report_recipients()
    if recipients:
        email.send_to(recipients, message)
    return message, recipients


def kpi_report(kpis, *, first_day, last_day):
    """The weekly report's {"subject", "text"}: each KPI with its EEMUA 191 target and status in words."""

    def status(value, limit):
        return gettext("within target") if value <= limit else gettext("OVER TARGET")

    per_hour, peak_hour, peak_10min = (
        kpis["alarms_per_hour"]["average"],
        kpis["alarms_per_hour"]["peak"],
        kpis["peak_alarms_per_10min"],
    )
    period = f"{first_day:%Y-%m-%d} – {last_day:%Y-%m-%d}"
    lines = [
        gettext("Alarm KPIs of the plant, %(period)s (EEMUA 191 / ISA-18.2).") % {"period": period},
        "",
        gettext("Alarms: %(n)d") % {"n": kpis["alarms"]},
        gettext("Alarms per hour, average: %(value).2f (target ≤ %(limit)d: %(status)s)")
        % {"value": per_hour, "limit": MANAGEABLE_PER_HOUR, "status": status(per_hour, MANAGEABLE_PER_HOUR)},
        gettext("Busiest hour: %(value)d alarms (target ≤ %(limit)d: %(status)s)")
        % {"value": peak_hour, "limit": MANAGEABLE_PER_HOUR, "status": status(peak_hour, MANAGEABLE_PER_HOUR)},
        gettext("Peak alarms per 10 minutes: %(value)d (target ≤ %(limit)d: %(status)s)")
        % {"value": peak_10min, "limit": FLOOD_ALARMS, "status": status(peak_10min, FLOOD_ALARMS)},
        gettext("Time in flood: %(value).1f %% of 10-minute periods") % {"value": kpis["flood_percent"]},
        gettext("Chattering alarms: %(n)d") % {"n": len(kpis["chattering"])},
        gettext("Stale alarms (active for more than 24 hours): %(n)d") % {"n": kpis["stale"]},
        gettext("Shelvings: %(shelved)d; suppressed in maintenance: %(suppressed)d") % kpis,
        "",
        gettext("Most frequent alarms:"),
        *(
            f"  {row['device']} {row['metric'] or gettext('offline')}: {row['alarms']} ({row['share_percent']:.1f} %)"
            for row in kpis["top"]
        ),
    ]
    if not kpis["top"]:
        lines.append("  " + gettext("none"))
    subject = gettext("Alarm KPIs %(period)s: %(value).2f alarms per hour, %(status)s") % {
        "period": period,
        "value": per_hour,
        "status": status(per_hour, MANAGEABLE_PER_HOUR),
    }
    return {"subject": subject, "text": "\n".join(lines)}


def remind_unacknowledged(*, now=None):
    """Re-notify (escalate) open critical alerts nobody acknowledged within a route's renotify_after."""
    now = now or timezone.now()
    # Suppression by cause: while a device is offline its offline alert is reminded, not its
    # threshold alerts, whose values stopped when it fell silent.
    device_offline = Alert.objects.filter(device=OuterRef("device"), metric=None, state__in=ACTIVE_STATES)
    open_critical = (
        Alert.objects.filter(state=Alert.State.OPEN, level__in=[Level.CRITICAL, Level.OFFLINE])
        .exclude(Q(metric__isnull=False) & Exists(device_offline))
        .select_related("device__location", "metric")
    )
    reminded = []
    for alert in open_critical:
        for route in routes_for(alert):
            if not route.renotify_after:
                continue
            last = route.notifications.filter(alert=alert).aggregate(last=Max("created_at"))["last"]
            if last is None or now - last < timedelta(seconds=route.renotify_after):
                continue
            notification = Notification.objects.create(
                route=route, alert=alert, kind=Notification.Kind.REMINDER, event="reminder"
            )
            enqueue("apps.alerts.tasks.deliver_notification", {"notification_id": notification.pk})
            reminded.append(notification)
    return reminded
