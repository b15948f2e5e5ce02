#!/usr/bin/env bash
# Installs and starts the real services (PostgreSQL, TimescaleDB, Redis, Mosquitto, Kafka, Chromium) and runs
# the whole test suite against them. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh requirements-dev.txt
scripts/services.sh up
scripts/compose.sh version   # builds the Compose CLI once per machine (kept in /var/cache/iothub) for tests/test_compose.py
eval "$(scripts/services.sh env)"
# Static checks first (configuration in pyproject.toml): lint, import layering, complete migrations.
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/lint-imports
.venv/bin/python manage.py makemigrations --check --dry-run
# A Redis namespace of its own, so a run never meets another run's keys, pushes or tasks.
export IOTHUB_NAMESPACE="${IOTHUB_NAMESPACE:-test-$$}"
exec .venv/bin/python -m pytest "$@"
