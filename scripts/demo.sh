#!/usr/bin/env bash
# Zero-infrastructure demo: SQLite, in-memory channel layer, eager Celery, embedded MQTT broker
# (when nothing answers on MQTT_URL), simulated sensors. Serves http://127.0.0.1:8000/.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh requirements.txt
exec .venv/bin/python manage.py runhub "$@"
