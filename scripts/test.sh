#!/usr/bin/env bash
# The whole test suite: quick unit tests and the real-vLLM-server tests (the suite starts a
# managed local server once and stops it). Pass -m "not vllm" for the quick loop only.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
.venv/bin/ruff check itc tests benchmarks
.venv/bin/itc setup
exec .venv/bin/pytest -q -ra "$@"
