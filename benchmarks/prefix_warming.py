"""Prefix warming vs none, side by side on one server.

Self-consistency with `repeats` single-sample requests per problem (the adaptive form that
needs separate requests). With warming, siblings with the same prompt wait for the first one's
first token, so vLLM serves their prompt from its prefix cache; without, all prefill at once.
Reports the prefix-cache hit rate (from /metrics), prompt tokens prefilled and wall time,
alternating the two modes over several rounds so machine noise hits both alike.

    .venv/bin/python benchmarks/prefix_warming.py --base-url http://127.0.0.1:8000 [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import time

from itc.backends.vllm import VLLMBackend
from itc.bench.datasets import load_dataset
from itc.config import PipelineConfig
from itc.planner.executor import Planner
from itc.runtime.context import Runtime
from itc.strategies.generate import Generate
from itc.strategies.self_consistency import SelfConsistency
from itc.verifiers.math import MathGrader

FEW_SHOT = "Solve the problem carefully. " * 40 + "\n\n"


async def one_round(backend: VLLMBackend, grader: MathGrader, warm: bool, problems, repeats: int):
    # A fresh opening line per round, so no earlier round left these prompts in the cache.
    nonce = f"Session {time.time_ns()}.\n"
    pipeline = PipelineConfig.single(
        SelfConsistency(
            inner=Generate(n=1, max_tokens=16, seed=0, template=nonce + FEW_SHOT + "{question}"),
            repeats=repeats,
        )
    )
    runtime = Runtime(backend=backend, grader=grader, warm_prefixes=warm)
    before = await backend.metrics()
    started = time.perf_counter()
    await Planner(runtime).run_many(pipeline, problems)
    elapsed = time.perf_counter() - started
    after = await backend.metrics()
    queries = after["vllm:prefix_cache_queries_total"] - before["vllm:prefix_cache_queries_total"]
    hits = after["vllm:prefix_cache_hits_total"] - before["vllm:prefix_cache_hits_total"]
    return hits / max(queries, 1), queries - hits, elapsed


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--problems", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    problems = load_dataset("gsm8k", limit=args.problems).problems
    async with VLLMBackend(args.base_url) as backend, MathGrader() as grader:
        totals = {True: [0.0, 0.0, 0.0], False: [0.0, 0.0, 0.0]}
        for round_ in range(args.rounds):
            for warm in (round_ % 2 == 0, round_ % 2 == 1):
                hit_rate, prefilled, elapsed = await one_round(
                    backend, grader, warm, problems, args.repeats
                )
                print(f"round {round_} warm={warm}: hit rate {hit_rate:.1%}, "
                      f"prefilled {prefilled:.0f} tokens, {elapsed:.1f}s", flush=True)
                for i, value in enumerate((hit_rate, prefilled, elapsed)):
                    totals[warm][i] += value / args.rounds
    print("\n| mode | prefix-cache hit rate | prompt tokens prefilled | wall time (s) |")
    print("|---|---|---|---|")
    for warm in (False, True):
        hit, prefilled, elapsed = totals[warm]
        mode = "warm" if warm else "no warming"
        print(f"| {mode} | {hit:.1%} | {prefilled:.0f} | {elapsed:.1f} |")


if __name__ == "__main__":
    asyncio.run(main())
