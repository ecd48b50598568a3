#!/usr/bin/env bash
# Creates the project venv (.venv) and installs itc with its dev tools, the bench extra and the
# worked example plugin (examples/plugin, loaded by the tests). Idempotent.
# The vLLM server's own environment is separate and cached outside the clone (`itc setup`).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip 2>/dev/null || true
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[dev,bench]' -e examples/plugin
