"""Pushes to browser dashboards through the channel layer (design §7).

Group names live here. Readings are coalesced: the ingest loop hands every stored batch to a
LivePublisher, which sends the newest value of each (device, metric) at most every
IOTHUB_LIVE_PUSH_INTERVAL seconds, so a dashboard never gets per-reading churn.
"""

import time

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.core.cache import cache

LIVE_GROUP = "live"


def device_group(device_id):
    return f"device.{device_id}"


def watched_key(device_id):
    return f"watched:{device_id}"


def watch_device(device_id):
    """A device page opened: its device group is worth sending to (counted, as pages come and go)."""
    cache.add(watched_key(device_id), 0, timeout=None)
    cache.incr(watched_key(device_id))


def unwatch_device(device_id):
    try:
        if cache.decr(watched_key(device_id)) <= 0:
            cache.delete(watched_key(device_id))
    except ValueError:
        pass


def group_send_all(sends):
    """sends: [(group, message)], in one trip into the channel layer's event loop."""
    async_to_sync(_group_send_all)(get_channel_layer(), sends)


async def _group_send_all(layer, sends):
    for group, message in sends:
        await layer.group_send(group, message)


def push_alert(alert_json):
    """Called on commit of an alert change; system alerts have no device group."""
    message = {"type": "live.alert", "alert": alert_json}
    groups = [LIVE_GROUP] + ([device_group(alert_json["device"])] if alert_json["device"] else [])
    group_send_all([(group, message) for group in groups])


class LivePublisher:
    """Coalesces live reading items and sends them at most every `interval` seconds."""

    def __init__(self, *, interval):
        self.interval = interval
        self.pending = {}
        self.sent_at = 0.0

    def add(self, items):
        for item in items:
            self.pending[(item["device"], item["metric"])] = item

    def flush_due(self):
        """Send what is pending if the interval has passed; call after each batch and when idle."""
        if not self.pending or time.monotonic() - self.sent_at < self.interval:
            return
        items = list(self.pending.values())
        self.pending = {}
        self.sent_at = time.monotonic()
        # Per-device groups only for devices someone is watching: one cache round trip, not one send per device.
        watched = cache.get_many([watched_key(i["device"]) for i in items])
        by_device = {}
        for item in items:
            if watched.get(watched_key(item["device"])):
                by_device.setdefault(item["device"], []).append(item)
        sends = [(LIVE_GROUP, {"type": "live.readings", "items": items})]
        sends += [(device_group(d), {"type": "live.readings", "items": d_items}) for d, d_items in by_device.items()]
        group_send_all(sends)
