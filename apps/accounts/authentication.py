"""`Authorization: Token <key>` with a personal API token (apps.accounts.models.APIToken)."""

import hmac

from rest_framework import exceptions
from rest_framework.authentication import TokenAuthentication

from .models import KEY_PREFIX_LENGTH, APIToken
from .services import key_digest


class APITokenAuthentication(TokenAuthentication):
    """DRF's token scheme over hashed, named, revocable tokens; request.auth is the APIToken."""

    def authenticate_credentials(self, key):
        token = None
        if "\x00" not in key:  # PostgreSQL text cannot hold NUL: such a key names nothing
            token = (
                APIToken.objects.select_related("user").filter(prefix=key[:KEY_PREFIX_LENGTH], revoked_at=None).order_by().first()
            )
        if token is None or not hmac.compare_digest(token.digest, key_digest(key)) or not token.user.is_active:
            raise exceptions.AuthenticationFailed("Invalid token.")
        return token.user, token
