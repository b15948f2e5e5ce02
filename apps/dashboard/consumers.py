"""WebSocket consumers: join a group, forward its messages (architecture §7). Logged-in users only.

What a page shows of an alert or of the device master is rendered here, per page and user, by the
same templates as the page itself (apps.dashboard.fragments); readings go out as they come, with
the text and status class of their cells from the same functions as the page's cells."""

import orjson
from asgiref.sync import sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.utils import translation

from apps.live.broadcast import LIVE_GROUP, device_group, unwatch_device, watch_device

from .fragments import alert_fragments, factory_fragments, page_name, page_request
from .selectors import cell_status, value_text

UNAUTHORIZED = 4401


def rendered(function):
    """`function(request, …)` in a worker thread, in the language of the page's user."""

    def in_language(request, *args):
        with translation.override(translation.get_language_from_request(request)):
            return function(request, *args)

    return sync_to_async(in_language)


render_alert = rendered(alert_fragments)
render_factories = rendered(factory_fragments)


class LiveConsumer(AsyncJsonWebsocketConsumer):
    """Every reading batch (coalesced), every alert change and device-master change."""

    def group_names(self):
        return [LIVE_GROUP]

    async def connect(self):
        if not self.scope["user"].is_authenticated:
            await self.close(code=UNAUTHORIZED)
            return
        self.page = page_request(self.scope)
        self.joined = self.group_names()
        for group in self.joined:
            await self.channel_layer.group_add(group, self.channel_name)
        await self.accept()

    async def disconnect(self, code):
        for group in getattr(self, "joined", []):
            await self.channel_layer.group_discard(group, self.channel_name)

    async def live_readings(self, event):
        items = [
            {**item, "text": value_text(item["value"]), "status_class": cell_status(item["status"])} for item in event["items"]
        ]
        await self.send_json({"type": "readings", "items": items})

    async def live_alert(self, event):
        alert = event["alert"]
        fragments = await render_alert(self.page, alert["id"]) if page_name(self.page) else {}
        await self.send_json({"type": "alert", "alert": alert, **fragments})

    async def live_devices(self, event):
        if page_name(self.page) == "overview":
            await self.send_json({"type": "devices", **await render_factories(self.page, event["factories"])})

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
