"""Prometheus counters of the worker: alert changes and notifications."""

from prometheus_client import Counter

ALERT_CHANGES = Counter("iothub_alert_changes_total", "Alert state changes", ["event", "level"])
NOTIFICATIONS = Counter("iothub_notifications_total", "Notification delivery outcomes", ["transport", "status"])
