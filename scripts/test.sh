#!/usr/bin/env bash
# Installs and starts the real services (PostgreSQL, Redis, Mosquitto, Kafka, Chromium) and runs
# the whole test suite against them. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh requirements-dev.txt
scripts/services.sh up
eval "$(scripts/services.sh env)"
exec .venv/bin/python -m pytest "$@"
