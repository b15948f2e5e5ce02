"""System alerts: the hub watching its own pipeline, through the same lifecycle and notifications
as device alerts (source "system", no device). This module measures the pipeline; beat calls
apps.alerts.services.watch_pipeline every 15 s, which turns the measurements into alert changes."""

import logging
import time

from django.conf import settings

from apps.telemetry.kafka_topics import consumer_group_lag
from apps.telemetry.metrics import pipeline_summaries

from .models import Level

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
        lag = consumer_group_lag(
            servers=settings.KAFKA_BOOTSTRAP_SERVERS, group=config["KAFKA_GROUP"], topic=config["KAFKA_TOPIC"]
        )
        level = (
            Level.CRITICAL
            if lag > config["KAFKA_LAG_CRITICAL"]
            else Level.WARNING
            if lag > config["KAFKA_LAG_WARNING"]
            else Level.NORMAL
        )
        measurements["kafka_lag"] = (lag, level)
    return measurements
