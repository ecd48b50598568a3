#!/usr/bin/env bash
# The main job on the embedded default: prepares the local vLLM server (cached), then compares
# greedy decoding with self-consistency over 8 samples on GSM8K problems, side by side.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
LIMIT="${LIMIT:-20}"
exec .venv/bin/itc bench examples/greedy.yaml examples/self_consistency.yaml \
  --dataset gsm8k --limit "$LIMIT" --output-dir "${OUTPUT_DIR:-runs/demo}" "$@"
