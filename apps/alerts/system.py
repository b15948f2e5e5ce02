"""System alerts: the hub watching its own pipeline, through the same lifecycle and notifications
as device alerts (source "system", no device). Beat calls `watch_pipeline` every 15 s."""

import logging
import time

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from apps.telemetry.kafka_topics import consumer_group_lag
from apps.telemetry.metrics import pipeline_summaries

from .models import Alert, AlertEvent, Level
from .services import announce_on_commit
from .thresholds import LEVEL_RANK

log = logging.getLogger(__name__)


def pipeline_measurements(*, now=None):
    """subject → (value, level) from the ingest processes' summaries and, with Kafka, the group's lag."""
    config = settings.IOTHUB
    now = now or time.time()
    fresh = [s for s in pipeline_summaries() if now - s["at"] <= config["INGEST_SILENT_CRITICAL"]]
    measurements = {"ingest_processes": (len(fresh), Level.NORMAL if fresh else Level.CRITICAL)}
    messages = sum(s["window_messages"] for s in fresh)
    dead = sum(s["window_dead_letters"] for s in fresh)
    rate = dead / messages if messages else 0.0
    measurements["dead_letter_rate"] = (rate, Level.WARNING if rate > config["DEAD_LETTER_RATE_WARNING"] else Level.NORMAL)
    p99s = [s["latency_p99"] for s in fresh if s["latency_p99"] is not None]
    p99 = max(p99s, default=0.0)
    measurements["latency_p99"] = (p99, Level.WARNING if p99 > config["LATENCY_P99_WARNING"] else Level.NORMAL)
    if settings.KAFKA_BOOTSTRAP_SERVERS:
        lag = consumer_group_lag(servers=settings.KAFKA_BOOTSTRAP_SERVERS, group=config["KAFKA_GROUP"], topic=config["KAFKA_TOPIC"])
        level = Level.CRITICAL if lag > config["KAFKA_LAG_CRITICAL"] else Level.WARNING if lag > config["KAFKA_LAG_WARNING"] else Level.NORMAL
        measurements["kafka_lag"] = (lag, level)
    return measurements


def apply_system_level(*, subject, value, level, now):
    """Open, escalate, de-escalate or resolve the system alert of `subject`; returns [(alert, event kind)]."""
    alert = Alert.objects.select_for_update().filter(source=Alert.Source.SYSTEM, subject=subject).exclude(state=Alert.State.RESOLVED).first()
    if alert is None:
        if level == Level.NORMAL:
            return []
        alert = Alert.objects.create(
            source=Alert.Source.SYSTEM, subject=subject, level=level, opened_at=now,
            first_value=value, peak_value=value, last_value=value,
        )
        kind = AlertEvent.Kind.OPENED
    else:
        alert.last_value = value
        if abs(value) > abs(alert.peak_value or 0):
            alert.peak_value = value
        if level == Level.NORMAL:
            alert.state, alert.resolved_at, kind = Alert.State.RESOLVED, now, AlertEvent.Kind.RESOLVED
        elif level != alert.level:
            rising = LEVEL_RANK[level] > LEVEL_RANK[alert.level]
            kind = AlertEvent.Kind.ESCALATED if rising else AlertEvent.Kind.DEESCALATED
            alert.level = level
            if rising:
                alert.state = Alert.State.OPEN
        else:
            alert.save(update_fields=["last_value", "peak_value"])
            return []
        alert.save()
    AlertEvent.objects.create(alert=alert, kind=kind, at=now, level=alert.level, value=value)
    return [(alert, kind)]


def watch_pipeline(*, now=None):
    """Evaluate every pipeline measurement into system alerts; returns the changes."""
    measurements = pipeline_measurements(now=now)
    stamp = timezone.now()
    with transaction.atomic():
        changes = []
        for subject, (value, level) in measurements.items():
            changes += apply_system_level(subject=subject, value=float(value), level=level, now=stamp)
        announce_on_commit(changes)
    for alert, kind in changes:
        log.warning("system alert %s: %s %s = %s", kind, alert.level, alert.subject, alert.last_value)
    return changes
