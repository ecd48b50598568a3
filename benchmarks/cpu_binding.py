"""Decode throughput with vLLM's own CPU binding vs the one itc chooses, side by side.

vLLM's automatic binding keeps a core for its scheduler; on a 2-core machine that halves the
worker's compute. Each round starts the managed server once per binding (order alternating
between rounds, so drift in the machine hits both alike), sends one warm-up request and then
one request for many samples, and reports generated tokens per second.

    .venv/bin/python benchmarks/cpu_binding.py [--model qwen2.5-coder-0.5b] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import time

from itc.backends.base import GenerationRequest
from itc.backends.local.resources import default_cpu_binding
from itc.backends.local.server import ManagedServer
from itc.backends.vllm import VLLMBackend
from itc.types import Message

QUESTION = (
    "A bakery sells muffins for $3 and cookies for $2. On Monday it sold 14 muffins and twice as "
    "many cookies. How much money did it make? Solve it step by step."
)


async def decode_rate(model: str, binding: str, samples: int, max_tokens: int, seed: int) -> float:
    async with ManagedServer(model, cpu_binding=binding) as server:
        async with VLLMBackend(server.base_url, server.served_model_name) as backend:
            messages = (Message(role="user", content=QUESTION),)
            await backend.generate(GenerationRequest(messages=messages, max_tokens=8))
            request = GenerationRequest(
                messages=messages, n=samples, max_tokens=max_tokens, temperature=0.8, seed=seed
            )
            started = time.perf_counter()
            result = await backend.generate(request)
            return result.completion_tokens / (time.perf_counter() - started)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="qwen2.5-coder-0.5b")
    parser.add_argument("--samples", type=int, default=64, help="sequences decoded together")
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    chosen = default_cpu_binding()
    if chosen is None:
        raise SystemExit("itc leaves vLLM's binding alone on this machine: nothing to compare")
    rates: dict[str, list[float]] = {"auto": [], chosen: []}
    for round_ in range(args.rounds):
        order = ["auto", chosen] if round_ % 2 == 0 else [chosen, "auto"]
        for binding in order:
            rate = await decode_rate(args.model, binding, args.samples, args.max_tokens, round_)
            rates[binding].append(rate)
            print(f"round {round_ + 1}  bind={binding:<6} {rate:6.1f} generated tok/s", flush=True)
    mean = {binding: sum(r) / len(r) for binding, r in rates.items()}
    print(
        f"\n{args.model}, {args.samples} sequences x {args.max_tokens} tokens, {args.rounds} rounds"
    )
    for binding, value in mean.items():
        print(f"  bind={binding:<6} mean {value:6.1f} tok/s")
    print(f"  ratio {chosen} / auto: {mean[chosen] / mean['auto']:.2f}x")


if __name__ == "__main__":
    asyncio.run(main())
