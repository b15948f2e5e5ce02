"""Unsafe production settings refuse to start (iothub/settings.py), with a message naming the
variable; the demo and offline commands start on their defaults. Each case is a real process."""

import os
import secrets
import subprocess
import sys

import pytest

from .support import ROOT

GOOD_KEY = secrets.token_urlsafe(50)


def run(*command, **env):
    base = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "REDIS_URL", "CELERY_BROKER_URL", "DEBUG")}
    done = subprocess.run(
        [sys.executable, *command],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**base, "DJANGO_SETTINGS_MODULE": "iothub.settings", **env},
    )
    return done.returncode, done.stdout + done.stderr


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({}, "SECRET_KEY is not set"),
        ({"SECRET_KEY": "change-me"}, "SECRET_KEY is a published placeholder"),
        ({"SECRET_KEY": "iothub-demo-only-not-secret"}, "SECRET_KEY is a published placeholder"),
        ({"SECRET_KEY": "a" * 60}, "SECRET_KEY is too weak"),
        ({"SECRET_KEY": "short-but-varied-1234"}, "SECRET_KEY is too weak"),
    ],
    ids=["unset", "env-example-placeholder", "demo-key", "five-different-characters-needed", "too-short"],
)
def test_a_process_refuses_to_start_with_a_known_or_weak_secret(env, named):
    code, output = run("manage.py", "check", **env)
    assert code != 0
    assert f"ImproperlyConfigured: {named}" in output


def test_a_process_that_needs_redis_refuses_to_start_without_it():
    code, output = run("manage.py", "ingest", "--help", SECRET_KEY=GOOD_KEY, DEBUG="0")
    assert code != 0 and "ImproperlyConfigured: REDIS_URL is not set: the ingest process needs Redis" in output
    code, output = run("-m", "celery", "-A", "iothub", "report", SECRET_KEY=GOOD_KEY, DEBUG="0")
    assert code != 0 and "REDIS_URL is not set: the celery process" in output


def test_safe_settings_and_the_demo_start():
    assert run("manage.py", "check", SECRET_KEY=GOOD_KEY)[0] == 0
    assert run("manage.py", "ingest", "--help", SECRET_KEY=GOOD_KEY, REDIS_URL="redis://127.0.0.1:1/0")[0] == 0
    assert run("manage.py", "runhub", "--help")[0] == 0  # the demo's own key, in-memory layers
    assert run("manage.py", "collectstatic", "--help")[0] == 0  # image build time: no secret needed
