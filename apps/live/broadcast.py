"""Pushes to browser dashboards through the channel layer (architecture §7).

Group names live here. Readings are coalesced: the ingest loop (and a web process's HTTP ingest)
hands every stored batch to a LivePublisher, which sends the newest value of each (device, metric)
at most every IOTHUB_LIVE_PUSH_INTERVAL seconds, so a dashboard never gets per-reading churn.
"""

import threading
import time

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.core.cache import cache

from iothub.best_effort import BestEffort

LIVE_GROUP = "live"
# Pushes are best effort, like every live view: one that fails is dropped, and the dashboards get
# the newest values with the next (an alert's page shows it on its next load).
ALERT_PUSH = BestEffort("alert_push")
# The push thread must outlive whatever fails a push (the channel layer's Redis away, mostly).
LIVE_PUSH = BestEffort("live_push", errors=Exception)


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
    ALERT_PUSH(group_send_all, [(group, message) for group in groups])


class LivePublisher:
    """Coalesces live reading items and sends them from a thread of its own, at most every
    `interval` seconds: a push of a few hundred items takes the channel layer 10–20 ms, which the
    batch that stored them (and the next batch) does not wait for. A push that fails is dropped
    (LIVE_PUSH)."""

    def __init__(self, *, interval):
        self.interval = interval
        self.pending = {}
        self.lock = threading.Lock()
        self.has_pending = threading.Event()
        self.thread = None

    def add(self, items):
        """Called on commit of the batch that stored these items."""
        with self.lock:
            for item in items:
                self.pending[(item["device"], item["metric"])] = item
            if self.thread is None:
                self.thread = threading.Thread(target=self.send_forever, name="live-push", daemon=True)
                self.thread.start()
        self.has_pending.set()

    def send_forever(self):
        while True:
            self.has_pending.wait()
            self.has_pending.clear()
            started = time.monotonic()
            with self.lock:
                items, self.pending = list(self.pending.values()), {}
            LIVE_PUSH(send_readings, items)
            time.sleep(max(0.0, started + self.interval - time.monotonic()))


def send_readings(items):
    """Items to the group `live`, and to the groups of devices someone is watching (one cache
    round trip for that, not one send per device)."""
    keys = {watched_key(item["device"]): item["device"] for item in items}  # one key a device, not one an item
    watched = {keys[key] for key, pages in cache.get_many(keys).items() if pages}
    by_device = {}
    if watched:
        for item in items:
            if item["device"] in watched:
                by_device.setdefault(item["device"], []).append(item)
    sends = [(LIVE_GROUP, {"type": "live.readings", "items": items})]
    sends += [(device_group(d), {"type": "live.readings", "items": d_items}) for d, d_items in by_device.items()]
    group_send_all(sends)
