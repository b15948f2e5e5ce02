"""A pure-Python MQTT broker (amqtt) for the zero-infrastructure demo only: MQTT 3.1.1, a few k msg/s.

Production and the test suite use Mosquitto (scripts/services.sh)."""

import asyncio
import socket
import threading

from amqtt.broker import Broker


def port_answers(host, port, timeout=0.5):
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def start_embedded_broker(host, port):
    """Run an amqtt broker on host:port in a daemon thread; returns once it accepts connections."""
    started = threading.Event()
    failure = []

    def serve():
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        broker = Broker(
            {
                "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}"}},
                "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
            },
            loop=loop,
        )
        try:
            loop.run_until_complete(broker.start())
        except Exception as e:  # reported to the caller below
            failure.append(e)
            started.set()
            return
        started.set()
        loop.run_forever()

    threading.Thread(target=serve, name="embedded-mqtt", daemon=True).start()
    started.wait(15)
    if failure:
        raise failure[0]
