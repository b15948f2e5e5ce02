"""Settings of the test suite (pytest.ini): the production settings with the explicit values that
tests need. The hub processes that tests start inherit them through the environment
(DJANGO_SETTINGS_MODULE and SECRET_KEY), so a session signed here is valid in their daphne."""

import os
import secrets

os.environ.setdefault("SECRET_KEY", secrets.token_urlsafe(50))

from iothub.settings import *  # noqa: E402, F403

# Logins in tests need no key stretching: a fast hasher keeps them from dominating the run.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
