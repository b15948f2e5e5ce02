"""The API fuzzed through its own OpenAPI schema (schemathesis) against a running daphne, as staff and as admin."""

import subprocess
import sys

import pytest

from apps.accounts.services import issue_api_token

from .support import ROOT


@pytest.mark.parametrize("role", ["staff", "admin"])
def test_it_answers_every_generated_request_without_5xx_or_schema_breaks(plant, hub, django_user_model, role):
    user = django_user_model.objects.create_user(role, password="fuzz-pw-123", is_staff=True, is_superuser=role == "admin")
    token = issue_api_token(user=user, name="fuzz", can_write=True)[1]
    base = hub.web()
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "schemathesis.cli",
            "run",
            f"{base}/api/schema/",
            "--header",
            f"Authorization: Token {token}",
            "--checks",
            "not_a_server_error,response_schema_conformance",
            "--phases",
            "examples,coverage,fuzzing",
            "--max-examples",
            "6",
            "--seed",
            "1",
            "--request-timeout",
            "20",
            "--no-color",
        ],
        cwd=ROOT,
        env=hub.env,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
