"""Pipeline metrics of an ingest process: Prometheus counters and a summary in the cache (Redis)
that the dashboard's pipeline-health view reads."""

import time
from collections import deque

from django.core.cache import cache
from prometheus_client import Counter, Gauge, Histogram

MESSAGES = Counter("iothub_ingest_messages_total", "Messages received by ingest")
READINGS = Counter("iothub_ingest_readings_total", "Valid readings stored (including redeliveries)")
DEAD_LETTERS = Counter("iothub_ingest_dead_letters_total", "Rejected messages", ["reason"])
BATCH_SIZE = Histogram(
    "iothub_ingest_batch_messages", "Messages per stored batch", buckets=(1, 10, 100, 500, 1000, 2500, 5000, 10000)
)
LATENCY = Histogram(
    "iothub_ingest_latency_seconds",
    "Reading timestamp → stored (commit)",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
KAFKA_LAG = Gauge("iothub_ingest_kafka_lag", "Kafka consumer lag of this process (messages)")
HANDOFFS_HELD = Gauge("iothub_ingest_alert_handoffs_held", "Stored batches held for alert evaluation while the broker is away")
HANDOFFS_DROPPED = Counter(
    "iothub_ingest_alert_handoffs_dropped_total",
    "Held batches dropped beyond the limit: never evaluated for alerts",
)

SUMMARY_EVERY = 5.0
SUMMARY_TTL = 30
INDEX_KEY = "pipeline:index"


def summary_key(name):
    return f"pipeline:{name}"


class PipelineStats:
    """Counts what one ingest process does and publishes a summary every few seconds."""

    def __init__(self, *, name, source, window_seconds=300):
        self.name = name
        self.source = source
        self.window_seconds = window_seconds
        self.window = deque()  # (monotonic time, messages, dead letters) per batch, for rates over the window
        self.latencies = deque(maxlen=20_000)  # publish→stored of recent messages, for p50/p99
        self.messages = self.readings = self.stored = self.rejected = 0
        self.rejected_by_reason = {}
        self.kafka_lag = None
        self.published_at = time.monotonic() - SUMMARY_EVERY  # report at once: "connected" from the start
        self.window_start = (time.monotonic(), 0, 0, 0)

    def record(self, result, *, committed_at):
        MESSAGES.inc(result.messages)
        READINGS.inc(result.readings)
        BATCH_SIZE.observe(result.messages)
        for latency in result.latencies(committed_at):
            LATENCY.observe(latency)
            self.latencies.append(latency)
        for rejection in result.rejections:
            DEAD_LETTERS.labels(rejection.reason).inc()
            self.rejected_by_reason[rejection.reason] = self.rejected_by_reason.get(rejection.reason, 0) + 1
        now = time.monotonic()
        self.window.append((now, result.messages, len(result.rejections)))
        while self.window and self.window[0][0] < now - self.window_seconds:
            self.window.popleft()
        self.messages += result.messages
        self.readings += result.readings
        self.stored += result.stored
        self.rejected += len(result.rejections)

    def set_kafka_lag(self, lag):
        """lag: None while Kafka does not answer."""
        self.kafka_lag = lag
        if lag is not None:
            KAFKA_LAG.set(lag)

    def summary_due(self):
        return time.monotonic() - self.published_at >= SUMMARY_EVERY

    def publish(self):
        """Write this process's summary to the cache, where the dashboard finds it."""
        now = time.monotonic()
        started, messages, readings, rejected = self.window_start
        elapsed = max(now - started, 1e-9)
        ordered = sorted(self.latencies)
        summary = {
            "name": self.name,
            "source": self.source,
            "at": time.time(),
            "messages_per_s": (self.messages - messages) / elapsed,
            "readings_per_s": (self.readings - readings) / elapsed,
            "dead_letters_per_s": (self.rejected - rejected) / elapsed,
            "messages": self.messages,
            "readings": self.readings,
            "dead_letters": self.rejected,
            "dead_letters_by_reason": dict(self.rejected_by_reason),
            "latency_p50": ordered[len(ordered) // 2] if ordered else None,
            "latency_p99": ordered[int(len(ordered) * 0.99)] if ordered else None,
            "kafka_lag": self.kafka_lag,
            "window_seconds": self.window_seconds,
            "window_messages": sum(m for _, m, _ in self.window),
            "window_dead_letters": sum(d for _, _, d in self.window),
        }
        self.latencies.clear()
        self.window_start = (now, self.messages, self.readings, self.rejected)
        self.published_at = now
        cache.set(summary_key(self.name), summary, timeout=SUMMARY_TTL)
        index = cache.get(INDEX_KEY) or {}
        index[self.name] = summary["at"]
        cache.set(INDEX_KEY, {k: v for k, v in index.items() if v > time.time() - SUMMARY_TTL}, timeout=None)
        return summary


def pipeline_summaries():
    """Summaries of the ingest processes that reported in the last SUMMARY_TTL seconds."""
    names = list((cache.get(INDEX_KEY) or {}).keys())
    found = cache.get_many([summary_key(n) for n in names])
    return sorted(found.values(), key=lambda s: s["name"])
