"""The live push (apps.live.broadcast.LivePublisher) through the real channel layer on Redis."""

import asyncio
import time

from channels.layers import get_channel_layer

from apps.live.broadcast import LIVE_GROUP, LivePublisher


def item(device, metric, value):
    return {"device": device, "metric": metric, "value": value, "ts": int(time.time() * 1000), "status": "normal"}


def test_it_sends_at_once_then_the_newest_of_each_pair_once_an_interval(unique):
    publisher = LivePublisher(interval=0.5)
    devices = {f"{unique}-a", f"{unique}-b"}

    async def scenario():
        layer = get_channel_layer()
        channel = await layer.new_channel()
        await layer.group_add(LIVE_GROUP, channel)
        received = []  # (seconds since the first add, [(device, metric, value)])
        try:
            started = time.monotonic()
            publisher.add([item(f"{unique}-a", "temperature", 1.0)])
            while len(received) < 2:
                message = await asyncio.wait_for(layer.receive(channel), 5)
                mine = [(i["device"], i["metric"], i["value"]) for i in message["items"] if i["device"] in devices]
                if mine:
                    received.append((time.monotonic() - started, sorted(mine)))
                if len(received) == 1 and len(mine) == 1:  # while the publisher waits out its interval
                    publisher.add([item(f"{unique}-a", "temperature", 2.0), item(f"{unique}-b", "humidity", 40.0)])
                    publisher.add([item(f"{unique}-a", "temperature", 3.0)])
            return received
        finally:
            await layer.group_discard(LIVE_GROUP, channel)

    (first_at, first), (second_at, second) = asyncio.run(scenario())
    assert first == [(f"{unique}-a", "temperature", 1.0)]
    assert first_at < 0.4  # not held back for an interval when nothing was sent before
    assert second == [(f"{unique}-a", "temperature", 3.0), (f"{unique}-b", "humidity", 40.0)]
    assert second_at - first_at >= 0.45
