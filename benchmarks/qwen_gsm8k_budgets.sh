#!/usr/bin/env bash
# Greedy, self-consistency and best-of-N at budgets 1..16 on GSM8K with the larger bundled
# model (Qwen2.5-Coder-0.5B-Instruct). Greedy runs as itself; the sampling strategies are
# priced at every budget from one pool of 16 samples per problem (itc/bench/pools.py).
# Resumable: rerun the same command after a crash or a stop and finished problems are kept.
# Usage: LIMIT=50 bash benchmarks/qwen_gsm8k_budgets.sh [--base-url URL]
# POOL_CONCURRENCY requests of 16 samples each are in flight: 8 keeps a CPU server's batch
# near 128 sequences, where it decodes fastest here, while problems still finish steadily.
set -euo pipefail
cd "$(dirname "$0")/.."
LIMIT="${LIMIT:-50}"
OUT="${OUT:-benchmarks/results/qwen-gsm8k-budgets}"
MODEL="${MODEL:-qwen2.5-coder-0.5b}"
POOL_CONCURRENCY="${POOL_CONCURRENCY:-8}"
common=(--dataset gsm8k --limit "$LIMIT" --model "$MODEL" --output-dir "$OUT" --no-report)
.venv/bin/itc bench examples/greedy.yaml "${common[@]}" "$@"
.venv/bin/itc bench benchmarks/configs/sample_pool.yaml "${common[@]}" \
  --concurrency "$POOL_CONCURRENCY" "$@"
.venv/bin/itc report "$OUT" --out-dir "$OUT" --pool sample-pool --budgets 1..16
