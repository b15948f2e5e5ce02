"""What every API view of the hub shares: permissions, per-token throttling, pagination, errors.

Plant staff read, only admins (superusers) write, unless a view says otherwise; other
logged-in users are refused (403), anonymous callers are asked to authenticate (401). A
read-only personal token reads only.

Every error under /api/ is JSON of one shape (DRF's): an object whose keys are the fields in
error, `non_field_errors` for a body as a whole, or `detail` for the request as a whole (401,
403, 404, 405, 409, 429, 500), and whose values are lists of messages. Errors about an item of
a list or a nested object are keyed by their path, e.g. `metrics.1`.
"""

import threading
from concurrent.futures import Future

from django.db import connection
from django.http import HttpResponse, JsonResponse
from django.utils.translation import gettext, gettext_lazy
from django.views.defaults import page_not_found, server_error
from drf_orjson_renderer.renderers import ORJSONRenderer
from rest_framework import exceptions, serializers
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.throttling import SimpleRateThrottle, UserRateThrottle
from rest_framework.views import exception_handler


def is_admin(user):
    return bool(user and user.is_superuser)


def is_plant_staff(user):
    return bool(user and (user.is_staff or user.is_superuser))


class StaffReadAdminWrite(BasePermission):
    """Plant staff read; only admins write."""

    def has_permission(self, request, view):
        if request.method in SAFE_METHODS:
            return is_plant_staff(request.user)
        return is_admin(request.user)


class IsPlantStaff(BasePermission):
    """Plant staff, any method: their own actions, such as acknowledging an alert."""

    def has_permission(self, request, view):
        return is_plant_staff(request.user)


class IsAdmin(BasePermission):
    """Admins only, even for reading."""

    def has_permission(self, request, view):
        return is_admin(request.user)


class FixedWindowRateThrottle(SimpleRateThrottle):
    """SimpleRateThrottle's budget, counted by one cache counter per window of the rate's duration.

    SimpleRateThrottle keeps the time of every request of the last window as one cached list, read
    and written whole on each request: 6,000 floats for a busy token at 6000/min, the largest part
    of a small request's cost. A counter costs the same at any rate; a client may spend its budget
    at the end of one window and again at the start of the next.
    """

    def allow_request(self, request, view):
        if self.rate is None:
            return True
        self.key = self.get_cache_key(request, view)
        if self.key is None:
            return True
        self.now = self.timer()
        window = int(self.now // self.duration)
        self.window_ends = (window + 1) * self.duration
        counter = f"{self.key}:{window}"
        try:
            used = self.cache.incr(counter)
        except ValueError:  # the window's first request
            self.cache.add(counter, 0, self.duration)  # unless a concurrent first request just did
            used = self.cache.incr(counter)
        return used <= self.num_requests

    def wait(self):
        return self.window_ends - self.now


class PerTokenRateThrottle(FixedWindowRateThrottle, UserRateThrottle):
    """A request budget per user, so per token: REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]["api"]."""

    scope = "api"

    def get_rate(self):
        # DRF copies the rates at import; reading them per request lets settings changes apply.
        return api_settings.DEFAULT_THROTTLE_RATES[self.scope]


class HubAPIMixin:
    """What every API view shares: staff read, admins write, read-only tokens read, throttled per token."""

    permission_classes = [StaffReadAdminWrite]
    throttle_classes = [PerTokenRateThrottle]

    def check_permissions(self, request):
        super().check_permissions(request)
        if request.method not in SAFE_METHODS and not getattr(request.auth, "can_write", True):
            self.permission_denied(request, message="This API token is read-only.", code="read_only_token")

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        # PostgreSQL text cannot hold NUL: such a key names nothing (found by schemathesis).
        if any("\x00" in str(value) for value in kwargs.values()):
            raise exceptions.NotFound()


class SharedWork:
    """Concurrent calls for the same key share one run: the first caller computes, the ones that
    arrive meanwhile wait for its result (request coalescing), after handing their database
    connection back to the pool. Nothing is kept afterwards."""

    def __init__(self):
        self.lock = threading.Lock()
        self.running = {}

    def run(self, key, compute):
        with self.lock:
            future = self.running.get(key)
            leader = future is None
            if leader:
                future = self.running[key] = Future()
        if not leader:
            connection.close()  # a pooled connection goes back to the pool while this request waits
            return future.result()
        try:
            future.set_result(compute())
        except BaseException as error:
            future.set_exception(error)
        finally:
            with self.lock:
                del self.running[key]
        return future.result()


LARGE_ANSWERS = SharedWork()


def rendered_answer(request, compute):
    """A large answer (tens of thousands of dicts, from `compute()`) rendered to JSON bytes right away.

    DRF keeps the data of a Response until the response is gone, and under ASGI the response sits
    in reference cycles: the dicts then wait for the cyclic garbage collector, whose runs over
    them were measured as 300–600 ms pauses. Rendered here, they are freed as soon as this
    returns. Identical requests that arrive while one is being answered share its answer (it
    depends on the query only, not on who asks): four dashboards polling a factory cost one
    rendering, not four queued on the GIL. Other formats (the browsable API) take the ordinary way.
    """
    renderer = request.accepted_renderer
    if renderer.format != "json":
        return Response(compute())
    body = LARGE_ANSWERS.run(request.get_full_path(), lambda: renderer.render(compute(), request.accepted_media_type))
    return HttpResponse(body, content_type=renderer.media_type)


class Pagination(LimitOffsetPagination):
    """limit/offset pages, bounded so that no value can overflow the database's integers."""

    max_limit = 1000
    max_offset = 10**12

    def get_offset(self, request):
        return min(super().get_offset(request), self.max_offset)


class SlugRelatedField(serializers.SlugRelatedField):
    """A related object by its natural key; a key with NUL (which the database refuses) does not exist."""

    def to_internal_value(self, data):
        if "\x00" in str(data):
            self.fail("does_not_exist", slug_name=self.slug_field, value=data)
        return super().to_internal_value(data)


class Conflict(exceptions.APIException):
    """409: the object is still referred to, or an action does not fit its state.

    `fields` add messages under other keys than `detail`, e.g. {"state": ["resolved"]}."""

    status_code = 409
    default_detail = gettext_lazy("The object is still in use.")
    default_code = "conflict"

    def __init__(self, detail=None, code=None, **fields):
        super().__init__(detail, code)
        self.fields = fields


class ErrorSerializer(serializers.Serializer):
    """The one error shape (schema only): {"detail" | a field | "non_field_errors": [messages]}."""

    detail = serializers.ListField(child=serializers.CharField(), required=False)


def error_messages(detail, key=None):
    """DRF error details (a message, or lists and dicts of them, nested) → {key: [messages]}: the
    field's name, its path for nested ones ("metrics.1"), non_field_errors at the top."""
    if isinstance(detail, dict):
        parts = [(f"{key}.{name}" if key else str(name), value) for name, value in detail.items()]
    elif isinstance(detail, list):
        parts = [
            (f"{key}.{index}" if key and isinstance(value, (dict, list)) else key, value) for index, value in enumerate(detail)
        ]
    else:
        return {key or "non_field_errors": [str(detail)]}
    flat = {}
    for child, value in parts:
        for path, messages in error_messages(value, child).items():
            flat.setdefault(path, []).extend(messages)
    return flat


def api_exception_handler(exc, context):
    """DRF's handler, then the one error shape (module docstring), always rendered as JSON (a CSV
    or browsable-API request that fails gets JSON too)."""
    response = exception_handler(exc, context)
    if response is None:
        return None  # an unexpected error: api_server_error answers
    if isinstance(exc, exceptions.ValidationError):
        response.data = error_messages(response.data) or {"non_field_errors": [gettext("Invalid input.")]}
    else:
        detail = response.data.get("detail", response.data) if isinstance(response.data, dict) else response.data
        if isinstance(detail, dict):  # simplejwt's InvalidToken: {"detail", "code", "messages"}
            detail = detail.get("detail", gettext("Invalid token."))
        response.data = {"detail": [str(detail)], **error_messages(getattr(exc, "fields", {}))}
    request = context["request"]
    request.accepted_renderer, request.accepted_media_type = ORJSONRenderer(), ORJSONRenderer.media_type
    return response


def document_paths_once(endpoints, **kwargs):
    """drf-spectacular preprocessing hook: a path served with and without its trailing slash (the
    platform's paths) is documented once, without it."""
    paths = {path for path, *_ in endpoints}
    return [endpoint for endpoint in endpoints if not (endpoint[0].endswith("/") and endpoint[0][:-1] in paths)]


def answers_json(request):
    """Under /api/ every answer is JSON, errors outside DRF's views too (unknown path, server error)."""
    return request.path.startswith("/api/")


def api_not_found(request, exception):
    if answers_json(request):
        return JsonResponse({"detail": [gettext("Not found.")]}, status=404)
    return page_not_found(request, exception)


def api_server_error(request):
    if answers_json(request):
        return JsonResponse({"detail": [gettext("Server error.")]}, status=500)
    return server_error(request)
