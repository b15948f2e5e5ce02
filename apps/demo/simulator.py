"""Simulated sensors publishing realistic readings over MQTT (QoS 1) at a fixed total rate."""

import heapq
import math
import random
import threading
import time
from dataclasses import dataclass

import orjson

from apps.demo.seed import demo_device_id
from iothub.mqtt import mqtt_client


@dataclass(frozen=True)
class Scenario:
    """A plant profile: how many sensors and which share reports at which interval (seconds)."""

    devices: int
    interval_mix: tuple  # ((interval seconds, share), ...)

    def natural_rate(self, devices):
        return sum(devices * share / interval for interval, share in self.interval_mix)

    def intervals(self, devices):
        """One reporting interval per device, in the scenario's proportions."""
        result = []
        for interval, share in self.interval_mix:
            result += [interval] * round(devices * share)
        return (result + [self.interval_mix[-1][0]] * devices)[:devices]


# The seed report's three scenarios; --devices and --rate scale them.
SCENARIOS = {
    "factory": Scenario(1000, ((1, 0.2), (10, 0.5), (60, 0.3))),
    "city": Scenario(10000, ((10, 0.3), (60, 0.5), (300, 0.2))),
    "farm": Scenario(5000, ((60, 0.4), (300, 0.4), (900, 0.2))),
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


def describe(scenario, devices, rate):
    mix = ", ".join(f"{share:.0%} every {interval} s" for interval, share in scenario.interval_mix)
    return f"{devices} sensors ({mix}), {scenario.natural_rate(devices):,.0f} msg/s natural, publishing {rate:,.0f} msg/s"


def simulate(*, url, devices, rate, duration, scenario="factory", seed=1, stop=None, write=print, protocol=5):
    """Publish for `duration` s (0 = until stopped): each sensor at its scenario interval, all
    intervals scaled so the total is `rate` messages/s."""
    stop = stop or threading.Event()
    profile = SCENARIOS[scenario]
    client, connect_kwargs = mqtt_client(url, client_id=f"iothub-sim-{seed}-{time.time_ns()}", protocol=protocol)
    # No paho in-flight limit: with one, paho rescans its whole queue on every PUBACK and stalls.
    client.max_inflight_messages_set(0)
    client.max_queued_messages_set(0)
    acked = 0

    def on_publish(client, userdata, mid, reason_code, properties):
        nonlocal acked
        acked += 1

    client.on_publish = on_publish
    client.connect(**connect_kwargs)
    client.loop_start()
    models = [SensorModel(n, seed) for n in range(1, devices + 1)]
    scale = profile.natural_rate(devices) / rate
    rng = random.Random(seed)
    # (next due, device index, interval): a heap, so each sensor reports on its own clock.
    due = [(rng.uniform(0, i * scale), n, i * scale) for n, i in enumerate(profile.intervals(devices))]
    heapq.heapify(due)
    write(f"simulate: {describe(profile, devices, rate)}")
    started = shown = time.monotonic()
    published = 0
    try:
        while not stop.is_set():
            elapsed = time.monotonic() - started
            if duration and elapsed >= duration:
                break
            wall = time.time()
            while due[0][0] <= elapsed:
                at, n, interval = heapq.heappop(due)
                payload = {"ts": int(wall * 1000), **models[n].values(wall)}
                client.publish(f"sensors/{demo_device_id(n + 1)}", orjson.dumps(payload), qos=1)
                published += 1
                heapq.heappush(due, (at + interval, n, interval))
            if elapsed - (shown - started) >= 5:
                write(f"simulate: {published:,} published ({published / elapsed:,.0f}/s), {acked:,} acknowledged by the broker")
                shown = time.monotonic()
            stop.wait(0.01)
        deadline = time.monotonic() + 10
        while acked < published and time.monotonic() < deadline:
            time.sleep(0.05)
        write(f"simulate: done, {published:,} published, {acked:,} acknowledged")
    finally:
        client.disconnect()
        client.loop_stop()
    return published
