"""Latest value of every (device, metric): Redis through Django's cache (local memory in the demo)."""

from django.core.cache import cache


def latest_key(device_id, metric_key):
    return f"latest:{device_id}:{metric_key}"


def store_latest(items):
    """items: dicts {device, metric, value, ts, status}, newest last; one round trip per batch."""
    cache.set_many({latest_key(i["device"], i["metric"]): i for i in items}, timeout=None)


def get_latest(pairs):
    """pairs: (device_id, metric_key) → {(device_id, metric_key): item} for the pairs that have a value."""
    found = cache.get_many([latest_key(d, m) for d, m in pairs])
    return {(item["device"], item["metric"]): item for item in found.values()}
