"""An MQTT client for the hub's processes (ingest, bridge, device credentials, simulator): one place
for how a broker URL becomes a connected paho client, shared by every app.

mqtt://host:1883 is plain TCP; mqtts://host:8883 is TLS, the server's certificate checked against
IOTHUB_MQTT_CA (or the system's CAs when unset), and with IOTHUB_MQTT_CERT / IOTHUB_MQTT_KEY a
client certificate too."""

from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from django.conf import settings
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties


def mqtt_client(url, *, client_id="", protocol=5, session_expiry=0, manual_ack=False, client_class=mqtt.Client):
    """A paho client for mqtt://[user:pass@]host:port, not yet connected; returns (client, connect kwargs).

    session_expiry > 0 asks for a persistent session: the broker keeps our QoS 1 backlog that long
    while we are down."""
    persistent = session_expiry > 0
    parts = urlsplit(url)
    version = mqtt.MQTTv5 if protocol == 5 else mqtt.MQTTv311
    kwargs = {} if protocol == 5 else {"clean_session": not persistent}
    client = client_class(
        mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=version, manual_ack=manual_ack, **kwargs
    )
    if parts.username:
        client.username_pw_set(parts.username, parts.password)
    tls = parts.scheme == "mqtts"
    if tls:
        client.tls_set(ca_certs=settings.MQTT_CA or None, certfile=settings.MQTT_CERT or None, keyfile=settings.MQTT_KEY or None)
    client.reconnect_delay_set(min_delay=1, max_delay=30)
    connect_kwargs = {"host": parts.hostname or "127.0.0.1", "port": parts.port or (8883 if tls else 1883), "keepalive": 30}
    if protocol == 5:
        properties = Properties(PacketTypes.CONNECT)
        if persistent:
            properties.SessionExpiryInterval = session_expiry
        connect_kwargs.update(clean_start=not persistent, properties=properties)
    return client, connect_kwargs
