"""Simulated sensors publishing realistic readings over MQTT (QoS 1) at a fixed total rate."""

import math
import random
import threading
import time

import orjson

from apps.devices.services import demo_device_id

from .sources.mqtt import mqtt_client

# name → (devices, messages/s) of the seed report's scenarios; --devices/--rate override them.
SCENARIOS = {
    "factory": (1000, 1000),
    "city": (10000, 2000),
    "farm": (5000, 100),
}


class SensorModel:
    """A device's slowly drifting values; every 20th device has periodic hot spells that raise alerts."""

    def __init__(self, n, seed):
        rng = random.Random(seed * 7919 + n)
        self.base_temperature = 20.0 + rng.uniform(-2, 4)
        self.base_humidity = 45.0 + rng.uniform(-8, 8)
        self.base_pcv = 60.0 + rng.uniform(-5, 5)
        self.phase = rng.uniform(0, 2 * math.pi)
        self.hot = n % 20 == 3
        self.rng = rng

    def values(self, now):
        wave = math.sin(now / 600 + self.phase)
        temperature = self.base_temperature + 1.5 * wave + self.rng.gauss(0, 0.2)
        if self.hot:
            # 60 s of heat every 4 minutes: warning, then critical, then back to normal.
            cycle = (now + self.phase * 40) % 240
            if cycle < 60:
                temperature += 14 * math.sin(math.pi * cycle / 60)
        return {
            "temperature": round(temperature, 2),
            "humidity": round(self.base_humidity + 4 * wave + self.rng.gauss(0, 0.5), 1),
            "pcv_temperature": round(self.base_pcv + 2 * wave + self.rng.gauss(0, 0.3), 2),
        }


def simulate(*, url, devices, rate, duration, seed=1, stop=None, write=print, protocol=5):
    """Publish `rate` messages/s in total, round-robin over sim devices, for `duration` s (0 = until stopped)."""
    stop = stop or threading.Event()
    client, connect_kwargs = mqtt_client(url, client_id=f"iothub-sim-{seed}-{time.time_ns()}", protocol=protocol)
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    acked = 0

    def on_publish(client, userdata, mid, reason_code, properties):
        nonlocal acked
        acked += 1

    client.on_publish = on_publish
    client.connect(**connect_kwargs)
    client.loop_start()
    models = [SensorModel(n, seed) for n in range(1, devices + 1)]
    started = shown = time.monotonic()
    published = 0
    try:
        while not stop.is_set():
            now = time.monotonic()
            elapsed = now - started
            if duration and elapsed >= duration:
                break
            due = int(elapsed * rate) + 1 - published
            wall = time.time()
            for _ in range(max(due, 0)):
                n = published % devices
                payload = {"ts": int(wall * 1000), **models[n].values(wall)}
                client.publish(f"sensors/{demo_device_id(n + 1)}", orjson.dumps(payload), qos=1)
                published += 1
            if now - shown >= 5:
                write(f"simulate: {published:,} published ({published / elapsed:,.0f}/s), {acked:,} acknowledged by the broker")
                shown = now
            stop.wait(0.01)
        deadline = time.monotonic() + 30
        while acked < published and time.monotonic() < deadline:
            time.sleep(0.05)
        write(f"simulate: done, {published:,} published, {acked:,} acknowledged")
    finally:
        client.disconnect()
        client.loop_stop()
    return published
