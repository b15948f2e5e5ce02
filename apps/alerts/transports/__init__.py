"""Notification transports, one module each, with a `send(route, message)` function.

A transport raises TemporaryError when trying again later may work (timeouts, 5xx, 429,
refused connections) and PermanentError when it cannot (bad address, 4xx).
"""

import importlib


class TransportError(Exception):
    pass


class TemporaryError(TransportError):
    pass


class PermanentError(TransportError):
    pass


def transport_for(route):
    return importlib.import_module(f"{__name__}.{route.transport}")
