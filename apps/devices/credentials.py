"""Device secrets: MQTT passwords and HTTP ingest tokens.

Both are random (secrets module) and shown to an admin exactly once; the database keeps only a
SHA-256 digest. A fast digest is the right tool here: the secrets carry 256 bits of entropy,
so unlike human passwords they cannot be guessed from a digest, and checking a token on every
HTTP request must be cheap. (Mosquitto keeps its own salted hash of the MQTT password.)

HTTP ingest tokens look like `<prefix>.<secret>`: the prefix is stored in clear (indexed) to
find the device in one query, the digest of the whole token is compared in constant time.
"""

import hashlib
import hmac
import secrets

TOKEN_PREFIX_BYTES = 6  # 12 hex characters: unique index, collisions retried
TOKEN_SECRET_BYTES = 32
PASSWORD_BYTES = 32
# What MQTT topics and the dynamic-security API can carry as a client name and topic level.
FORBIDDEN_IN_DEVICE_ID = frozenset("/+#\0")


def digest(secret):
    return hashlib.sha256(secret.encode()).hexdigest()


def secret_matches(secret, expected_digest):
    return bool(expected_digest) and hmac.compare_digest(digest(secret), expected_digest)


def new_mqtt_password():
    """43 URL-safe characters (256 bits): fits every device's config file and command line."""
    return secrets.token_urlsafe(PASSWORD_BYTES)


def new_ingest_token():
    """A fresh HTTP ingest token → (prefix, token)."""
    prefix = secrets.token_hex(TOKEN_PREFIX_BYTES)
    return prefix, f"{prefix}.{secrets.token_urlsafe(TOKEN_SECRET_BYTES)}"


def token_prefix(token):
    """The lookup prefix of a presented token, or None if it does not look like one of ours."""
    prefix, dot, rest = token.partition(".")
    if not dot or not rest or len(prefix) != 2 * TOKEN_PREFIX_BYTES:
        return None
    return prefix


def check_device_id_for_mqtt(device_id):
    """Device ids become MQTT usernames and topic levels: refuse those that would widen an ACL."""
    bad = FORBIDDEN_IN_DEVICE_ID.intersection(device_id)
    if bad or not device_id or device_id.startswith("$"):
        raise ValueError(
            f"device id {device_id!r} cannot get MQTT credentials: it must not be empty, start with $ "
            "or contain / + # (it is the device's topic level sensors/<device_id>)"
        )
