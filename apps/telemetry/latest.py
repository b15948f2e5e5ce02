"""Latest value of every (device, metric): {"value", "status", "ts"}.

With Redis, one hash holds them all: a field per device, its value the device's metrics as JSON
({metric: {value, status, ts}}). A whole factory is then one HMGET and one small JSON document
per device. A batch is merged in by one Lua script call that keeps, per metric, the newer of the
stored and the incoming value: a late or redelivered reading never hides a newer one, and several
ingest processes can write the same device (Redis' cjson keeps 14 significant digits of a value,
more than a sensor gives). Without REDIS_URL (the one-process demo) a dict takes
the hash's place, merged the same way.
"""

from functools import cache

import orjson
import redis
from django.conf import settings

MERGE_SCRIPT = """
for i = 1, #ARGV, 2 do
    local incoming = cjson.decode(ARGV[i + 1])
    local stored = redis.call('HGET', KEYS[1], ARGV[i])
    if stored then
        local merged = cjson.decode(stored)
        for metric, item in pairs(incoming) do
            local old = merged[metric]
            if old == nil or old.ts <= item.ts then merged[metric] = item end
        end
        incoming = merged
    end
    redis.call('HSET', KEYS[1], ARGV[i], cjson.encode(incoming))
end
"""


class RedisLatest:
    """The latest values as one Redis hash."""

    def __init__(self, url, key):
        self.client = redis.Redis.from_url(url)
        self.merge_script = self.client.register_script(MERGE_SCRIPT)
        self.key = key

    def merge(self, docs):
        self.merge_script(keys=[self.key], args=[part for device, doc in docs.items() for part in (device, orjson.dumps(doc))])

    def read(self, device_ids):
        return self.client.hmget(self.key, device_ids)


class MemoryLatest:
    """The latest values in this process (the demo runs ingest and web in one process)."""

    def __init__(self):
        self.docs = {}

    def merge(self, docs):
        for device, incoming in docs.items():
            merged = orjson.loads(self.docs.get(device, b"{}"))
            for metric, item in incoming.items():
                if metric not in merged or merged[metric]["ts"] <= item["ts"]:
                    merged[metric] = item
            self.docs[device] = orjson.dumps(merged)

    def read(self, device_ids):
        return [self.docs.get(device) for device in device_ids]


IN_MEMORY = MemoryLatest()


@cache
def redis_latest(url, key):
    return RedisLatest(url, key)


def latest_store():
    # Looked up on every call: benchmarks switch the namespace with override_settings.
    if settings.REDIS_URL:
        return redis_latest(settings.REDIS_URL, f"{settings.NAMESPACE}:latest")
    return IN_MEMORY


def store_latest(items):
    """items: dicts {device, metric, value, ts, status}; one round trip per batch."""
    docs = {}
    for i in items:
        docs.setdefault(i["device"], {})[i["metric"]] = {"value": i["value"], "status": i["status"], "ts": i["ts"]}
    if docs:
        latest_store().merge(docs)


def get_latest_documents(device_ids):
    """The stored JSON document ({metric_key: {value, status, ts}}) of each of `device_ids`, or None."""
    return latest_store().read(device_ids) if device_ids else []


def get_latest(device_ids):
    """device_ids → {device_id: {metric_key: {value, status, ts}}} for the devices that have values."""
    device_ids = list(device_ids)
    return {device: orjson.loads(doc) for device, doc in zip(device_ids, get_latest_documents(device_ids)) if doc}
