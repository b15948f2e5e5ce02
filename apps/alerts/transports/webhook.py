"""Generic JSON webhook: POST the message (with the alert JSON) to the route's URL."""

import urllib.error
import urllib.request

import orjson

from . import PermanentError, TemporaryError

TIMEOUT = 10


def post_json(url, body):
    request = urllib.request.Request(
        url, data=orjson.dumps(body), headers={"Content-Type": "application/json", "User-Agent": "iothub"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            response.read()
    except urllib.error.HTTPError as e:
        if e.code == 429 or e.code >= 500:
            raise TemporaryError(f"HTTP {e.code}") from e
        raise PermanentError(f"HTTP {e.code}") from e
    except (urllib.error.URLError, TimeoutError, OSError) as e:
        raise TemporaryError(str(e)) from e
    except ValueError as e:  # not a usable URL
        raise PermanentError(str(e)) from e


def send(route, message):
    post_json(route.target, message)
