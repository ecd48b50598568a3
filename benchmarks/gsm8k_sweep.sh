#!/usr/bin/env bash
# Budget sweep on GSM8K: greedy, self-consistency and best-of-N (self-certainty) at
# n = 1, 2, 4, 8 samples, one command, side by side on one server. SC and best-of-N at the
# same n send identical seeded requests, so the response cache serves the second from the
# first (their usage is still charged in full: the comparison is per strategy, as if alone).
# Usage: bash benchmarks/gsm8k_sweep.sh [--base-url URL]   (default: the managed local server)
set -euo pipefail
cd "$(dirname "$0")/.."
LIMIT="${LIMIT:-30}"
OUT="${OUT:-benchmarks/results/gsm8k-sweep}"
exec .venv/bin/itc bench examples/greedy.yaml examples/self_consistency.yaml \
  examples/best_of_n_self_certainty.yaml --dataset gsm8k --limit "$LIMIT" \
  --sweep main.inner.n=1..8 --cache "$OUT/cache.sqlite" --output-dir "$OUT" "$@"
