"""Writes of API access: issuing and revoking personal API tokens."""

import hashlib
import secrets

from django.utils import timezone

from .models import KEY_PREFIX_LENGTH, APIToken


def key_digest(key):
    return hashlib.sha256(key.encode()).hexdigest()


def issue_api_token(*, user, name, can_write=False):
    """A new token of `user` → (APIToken, key); the key is not stored, show it now."""
    key = secrets.token_urlsafe(32)
    token = APIToken.objects.create(
        user=user, name=name, prefix=key[:KEY_PREFIX_LENGTH], digest=key_digest(key), can_write=can_write
    )
    return token, key


def revoke_api_token(*, user, token_id):
    """Revoke one of `user`'s own tokens; False when it has no such active token."""
    return bool(APIToken.objects.filter(pk=token_id, user=user, revoked_at=None).update(revoked_at=timezone.now()))
