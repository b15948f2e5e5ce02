from django.urls import path

from .consumers import DeviceConsumer, LiveConsumer

websocket_urlpatterns = [
    path("ws/live/", LiveConsumer.as_asgi()),
    path("ws/devices/<str:device_id>/", DeviceConsumer.as_asgi()),
]
