#!/usr/bin/env bash
# Creates .venv with the pinned Python packages (requirements-dev.txt adds the test tools).
set -euo pipefail
cd "$(dirname "$0")/.."
requirements="${1:-requirements.txt}"
if [ ! -x .venv/bin/python ]; then
  echo "bootstrap: creating .venv"
  python3 -m venv .venv
fi
stamp=".venv/.installed-$(cat requirements.txt "$requirements" | sha1sum | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  echo "bootstrap: installing $requirements"
  .venv/bin/pip install --quiet --disable-pip-version-check -r "$requirements"
  touch "$stamp"
fi
# The test tools from npm (package.json: axe-core for the accessibility tests), with the development requirements.
if [ "$requirements" != requirements.txt ]; then
  npm_stamp="node_modules/.installed-$(sha1sum package-lock.json | cut -c1-12)"
  if [ ! -f "$npm_stamp" ]; then
    echo "bootstrap: installing package-lock.json (npm ci)"
    npm ci --no-audit --no-fund --loglevel=error
    touch "$npm_stamp"
  fi
fi
