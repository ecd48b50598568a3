#!/usr/bin/env bash
# The main job: prepares the local vLLM server with the larger bundled model (cached after the
# first run), then runs greedy decoding, weighted best-of-N and self-consistency (4 samples
# each) and particle filtering (4 particles, steps checked by the exact arithmetic checker) on
# 16 seeded two-step arithmetic word problems and prints them side by side, with the share of
# prompt tokens the server's prefix cache served for each.
# Knobs: MODEL (a bundled name or model folder), COUNT, N, OUTPUT_DIR; extra flags go to
# `itc bench` (for example --base-url to use a running server).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
OUT="${OUTPUT_DIR:-runs/demo}"
.venv/bin/itc bench examples/greedy.yaml examples/best_of_n_weighted.yaml \
  examples/self_consistency.yaml examples/particle_filtering.yaml \
  --model "${MODEL:-qwen2.5-coder-0.5b}" --dataset synthetic --difficulty 1 --count "${COUNT:-16}" --sweep "main.inner.n=${N:-4}" \
  --cache "$OUT/cache.sqlite" --output-dir "$OUT" "$@"
echo "Self-consistency draws the same seeded samples as weighted best-of-N (which also asked"
echo "for their logprobs), so the response cache replays them: its tokens are charged in full,"
echo "its wall time is the vote only."
