"""HTTP ingest (architecture §6): `POST /api/v1/ingest/` for devices that cannot speak MQTT.

The device authenticates with its own token (`Authorization: Device <token>`, issued in the
admin, see docs/security.md); the token decides the device, so the body is handled exactly like
an MQTT message on `sensors/<device_id>`: the same three payload forms, the same validation and
the same dead letters, through the same `ingest_batch`. A body naming another device ("id") is
therefore a wrong-shape dead letter: a device can only send its own readings.

Answers: 202 {"stored", "readings", "rejected": []} once the readings are committed; 400 with the
rejection reason when the body was dead-lettered; 413 when it is larger than the payload limit
(dead-lettered as too_large); 401 for a missing, malformed, unknown or revoked token; 403 for an
inactive device; 429 past the per-token rate (IOTHUB_INGEST_RATE).
"""

import time

from django.conf import settings
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.permissions import BasePermission
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import APIView

from apps.devices import credentials
from apps.devices.models import Device
from apps.live.broadcast import LivePublisher
from iothub.api import FixedWindowRateThrottle

from .device_cache import DeviceMasterCache
from .models import DeadLetter
from .payloads import Message, Rejection
from .pipeline import ingest_batch
from .store import DEAD_LETTER_PAYLOAD_LIMIT, store_dead_letters

SOURCE = "http"
# Bodies up to this size go through the pipeline (which dead-letters anything over
# IOTHUB_MAX_PAYLOAD_BYTES as too_large, like MQTT). Larger ones are not even read in full:
# dead-lettered here with their first bytes. Same bound as the broker's max_packet_size.
HARD_BODY_LIMIT = 1024 * 1024

# One device master snapshot per web process, like an ingest process's.
MASTER_CACHE = DeviceMasterCache(refresh_seconds=settings.IOTHUB["DEVICE_CACHE_REFRESH"])


def ingest_rate():
    """Requests per device token, read per request so settings changes apply."""
    return api_settings.DEFAULT_THROTTLE_RATES["ingest"]


# -- authentication, permission, throttling ---------------------------------------------------------


class DevicePrincipal:
    """request.user of an HTTP ingest request: the device its token belongs to (not a Django user)."""

    is_authenticated = True
    is_anonymous = False
    is_staff = False
    is_superuser = False

    def __init__(self, device, token_prefix):
        self.device = device
        self.token_prefix = token_prefix
        self.pk = None  # never mistaken for a user by per-user machinery

    def __str__(self):
        return f"device {self.device.device_id}"


def device_for_token(token):
    """The Device a presented token belongs to, or None (malformed, unknown or revoked)."""
    prefix = credentials.token_prefix(token)
    if prefix is None:
        return None, None
    device = Device.objects.filter(ingest_token_prefix=prefix).first()
    if device is None or not credentials.secret_matches(token, device.ingest_token_hash):
        return None, None
    return device, prefix


class DeviceTokenAuthentication(BaseAuthentication):
    """`Authorization: Device <token>`; no session, no CSRF: devices are not browsers."""

    keyword = "Device"

    def authenticate(self, request):
        header = get_authorization_header(request).split()
        if not header or header[0].lower() != self.keyword.lower().encode():
            return None  # → 401 from the permission check, with WWW-Authenticate
        if len(header) != 2:
            raise AuthenticationFailed("Invalid Authorization header: expected 'Device <token>'.")
        try:
            token = header[1].decode("ascii")
        except UnicodeDecodeError:
            raise AuthenticationFailed("Invalid device token.") from None
        device, prefix = device_for_token(token)
        if device is None:
            raise AuthenticationFailed("Invalid or revoked device token.")
        return DevicePrincipal(device, prefix), device

    def authenticate_header(self, request):
        return f'{self.keyword} realm="api"'


class IsActiveDevice(BasePermission):
    """A device with a valid token; an inactive device is refused (403)."""

    message = "This device is inactive."

    def has_permission(self, request, view):
        principal = request.user
        return isinstance(principal, DevicePrincipal) and principal.device.is_active


class DeviceTokenRateThrottle(FixedWindowRateThrottle):
    """A request budget per device token (a new token starts a new budget)."""

    scope = "ingest"

    def get_rate(self):
        return ingest_rate()

    def get_cache_key(self, request, view):
        if not isinstance(request.user, DevicePrincipal):
            return None
        return self.cache_format % {"scope": self.scope, "ident": request.user.token_prefix}


class DeviceTokenScheme(OpenApiAuthenticationExtension):
    """The device token in the OpenAPI schema."""

    target_class = DeviceTokenAuthentication
    name = "deviceToken"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": "`Device <token>`: the device's HTTP ingest token, issued in the admin.",
        }


LIVE = LivePublisher(interval=settings.IOTHUB["LIVE_PUSH_INTERVAL"])  # shared by this web process's requests


# -- the view -------------------------------------------------------------------------------------


def read_body(request):
    """The raw body → (bytes, size): the whole body when it is at most HARD_BODY_LIMIT, else its
    first DEAD_LETTER_PAYLOAD_LIMIT bytes and its size (None when undeclared)."""
    django_request = request._request
    if hasattr(django_request, "_body"):  # something already read it
        body = django_request._body
        return (body, len(body)) if len(body) <= HARD_BODY_LIMIT else (body[:DEAD_LETTER_PAYLOAD_LIMIT], len(body))
    try:
        declared = int(django_request.META.get("CONTENT_LENGTH") or -1)
    except ValueError:
        declared = -1
    if declared > HARD_BODY_LIMIT:
        return django_request.read(DEAD_LETTER_PAYLOAD_LIMIT), declared
    body = django_request.read(HARD_BODY_LIMIT + 1)
    if len(body) > HARD_BODY_LIMIT:
        return body[:DEAD_LETTER_PAYLOAD_LIMIT], None
    return body, len(body)


def master_cache_for(device):
    """The process's master snapshot, reloaded first if it does not know this device as the
    database does (created or toggled within the last refresh interval)."""
    known = MASTER_CACHE.get().devices.get(device.device_id)
    if known is None or known.pk != device.pk or known.is_active != device.is_active:
        MASTER_CACHE.invalidate()
    return MASTER_CACHE


IngestResultSerializer = inline_serializer(
    "IngestResult",
    {
        "stored": serializers.IntegerField(help_text="New readings stored (a resent reading is stored once)."),
        "readings": serializers.IntegerField(help_text="Valid readings in the body."),
        "rejected": inline_serializer(
            "IngestRejection",
            {"reason": serializers.ChoiceField(DeadLetter.Reason.choices), "detail": serializers.CharField()},
            many=True,
        ),
    },
)


class IngestView(APIView):
    """Readings of one device over HTTP, authenticated by the device's token."""

    authentication_classes = [DeviceTokenAuthentication]
    permission_classes = [IsActiveDevice]
    throttle_classes = [DeviceTokenRateThrottle]
    parser_classes = []  # the body is handed to the pipeline as it came

    @extend_schema(
        operation_id="ingest_readings",
        summary="Send readings of the token's device",
        description=(
            "The body is one of the MQTT payload forms (architecture §4): an object with named metrics, a "
            "compact {id, ts, v}, or an array of either; at most IOTHUB_MAX_PAYLOAD_BYTES (64 KiB). "
            "It is validated and stored exactly like an MQTT message on sensors/<device_id>; "
            "rejected bodies are dead-lettered with the reason."
        ),
        request={"application/json": OpenApiTypes.OBJECT},
        responses={
            202: IngestResultSerializer,
            400: OpenApiResponse(IngestResultSerializer, description="Rejected and dead-lettered."),
            401: OpenApiResponse(description="Missing, unknown or revoked device token."),
            403: OpenApiResponse(description="The device is inactive."),
            413: OpenApiResponse(IngestResultSerializer, description="Larger than the payload limit (dead-lettered)."),
            429: OpenApiResponse(description="Too many requests with this token."),
        },
        examples=[
            OpenApiExample("named metrics", value={"ts": 1755398445123, "temperature": 23.5, "humidity": 41.0}, request_only=True)
        ],
        tags=["ingest"],
    )
    def post(self, request):
        device = request.auth
        received_at = time.time()
        topic = f"sensors/{device.device_id}"
        body, size = read_body(request)
        if len(body) != size:  # over the hard limit: dead-lettered here, not read in full
            detail = f"{size} bytes > {settings.IOTHUB['MAX_PAYLOAD_BYTES']}" if size else f"more than {HARD_BODY_LIMIT} bytes"
            rejection = Rejection(Message(SOURCE, topic, body, received_at), DeadLetter.Reason.TOO_LARGE, detail)
            store_dead_letters([rejection])
            return self.answer(stored=0, readings=0, rejections=[rejection])
        result = ingest_batch([Message(SOURCE, topic, body, received_at)], master_cache=master_cache_for(device), publisher=LIVE)
        return self.answer(stored=result.stored, readings=result.readings, rejections=result.rejections)

    @staticmethod
    def answer(*, stored, readings, rejections):
        rejected = [{"reason": r.reason, "detail": r.detail} for r in rejections]
        if not rejected:
            code = status.HTTP_202_ACCEPTED
        elif any(r.reason == DeadLetter.Reason.TOO_LARGE for r in rejections):
            code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
        else:
            code = status.HTTP_400_BAD_REQUEST
        return Response({"stored": stored, "readings": readings, "rejected": rejected}, status=code)
