"""Notifications of alert changes: routing, per-route storm folding, delivery, reminders.

Every message is a Notification row first (the history), then delivered by a Celery task that
retries temporary failures with backoff. Past `max_per_window` messages in a route's window,
further changes are folded, and beat sends one summary of them once the window has passed.
"""

from datetime import timedelta

from django.db import transaction
from django.db.models import Exists, Max, Min, OuterRef, Q
from django.utils import timezone
from django.utils.translation import gettext

from iothub.celery import enqueue

from .metrics import NOTIFICATIONS
from .models import ACTIVE_STATES, Alert, Level, Notification, NotificationRoute
from .serializers import alert_json
from .transports import PermanentError, transport_for

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
    value = "" if alert.last_value is None else f" = {alert.last_value:g}"
    if alert.device_id:
        location = alert.device.location
        where = f"{location.factory} / {location.building} / {location.name or location.loc_id}"
    else:
        where = "the hub's pipeline"
    prediction = ""
    if alert.predicted_critical_at and alert.is_active:
        minutes = max(round((alert.predicted_critical_at - timezone.now()).total_seconds() / 60), 1)
        prediction = " " + gettext("predicted to reach critical in ~%(minutes)d minutes") % {"minutes": minutes}
    return (
        f"[{alert.level.upper()}] {alert.what}{value} {event}{prediction}",
        f"{alert.what} at {where}: {alert.level} alert {event}{prediction} "
        f"(first {alert.first_value}, peak {alert.peak_value}, now {alert.last_value}).",
    )


def message_for(notification):
    if notification.kind == Notification.Kind.SUMMARY:
        folded = list(notification.folded.select_related("alert__device__location", "alert__metric"))
        lines = [describe(n.alert, n.event)[0] for n in folded]
        return {
            "subject": f"{len(folded)} more alert changes on {notification.route.name}",
            "text": "\n".join(lines),
            "alerts": [alert_json(n.alert) for n in folded],
        }
    alert = notification.alert
    event = "still unacknowledged" if notification.kind == Notification.Kind.REMINDER else notification.event
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
