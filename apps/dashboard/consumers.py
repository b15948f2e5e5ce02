"""WebSocket consumers: join a group, forward its messages (design §7). Logged-in users only."""

import orjson
from asgiref.sync import sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from apps.live.broadcast import LIVE_GROUP, device_group, unwatch_device, watch_device

UNAUTHORIZED = 4401


class LiveConsumer(AsyncJsonWebsocketConsumer):
    """Every reading batch (coalesced) and every alert change."""

    def group_names(self):
        return [LIVE_GROUP]

    async def connect(self):
        if not self.scope["user"].is_authenticated:
            await self.close(code=UNAUTHORIZED)
            return
        self.joined = self.group_names()
        for group in self.joined:
            await self.channel_layer.group_add(group, self.channel_name)
        await self.accept()

    async def disconnect(self, code):
        for group in getattr(self, "joined", []):
            await self.channel_layer.group_discard(group, self.channel_name)

    async def live_readings(self, event):
        await self.send_json({"type": "readings", "items": event["items"]})

    async def live_alert(self, event):
        await self.send_json({"type": "alert", "alert": event["alert"]})

    @classmethod
    async def encode_json(cls, content):
        return orjson.dumps(content).decode()


class DeviceConsumer(LiveConsumer):
    """One device's readings and alerts."""

    def group_names(self):
        return [device_group(self.scope["url_route"]["kwargs"]["device_id"])]

    async def connect(self):
        await super().connect()
        if getattr(self, "joined", None):
            await sync_to_async(watch_device)(self.scope["url_route"]["kwargs"]["device_id"])

    async def disconnect(self, code):
        if getattr(self, "joined", None):
            await sync_to_async(unwatch_device)(self.scope["url_route"]["kwargs"]["device_id"])
        await super().disconnect(code)
