"""Request-shape probe for the hot path: which wire form of the same sampling work is fastest.

Raw httpx against one vLLM server, no itc code in the loop. Every variant draws the same
seeded samples (same prompts, seeds, n, max_tokens); only how they are asked for differs:
streaming with per-token usage and logprobs (itc before the hot-path work), coarser streams,
non-streaming, chat vs completions on rendered token ids, one request with n=8 vs 8 requests
with n=1. Variants alternate over rounds, each round under its own `cache_salt` so no variant
is served from another's prefix cache. Also times `/tokenize` idle and under load.

    .venv/bin/python benchmarks/hot_path_probe.py --base-url http://127.0.0.1:8011
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

try:
    from itc.bench.datasets import load_dataset
except ImportError:  # before the datasets module moved under itc.bench
    from itc.datasets import load_dataset  # type: ignore[no-redef]

Variant = Callable[[httpx.AsyncClient, dict[str, Any], str], Awaitable[int]]


def chat_body(problem: dict[str, Any], salt: str, **extra: Any) -> dict[str, Any]:
    return {
        "model": problem["model"],
        "messages": problem["messages"],
        "n": problem["n"],
        "max_tokens": problem["max_tokens"],
        "temperature": 0.7,
        "seed": problem["seed"],
        "cache_salt": salt,
        **extra,
    }


def ids_body(problem: dict[str, Any], salt: str, **extra: Any) -> dict[str, Any]:
    return {
        "model": problem["model"],
        "prompt": problem["ids"],
        "n": problem["n"],
        "max_tokens": problem["max_tokens"],
        "temperature": 0.7,
        "seed": problem["seed"],
        "cache_salt": salt,
        **extra,
    }


async def streamed(client: httpx.AsyncClient, path: str, body: dict[str, Any]) -> int:
    tokens = 0
    async with client.stream("POST", path, json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if line.startswith("data:") and line[5:].strip() != "[DONE]":
                usage = json.loads(line[5:]).get("usage")
                if usage:
                    tokens = int(usage["completion_tokens"])
    return tokens


async def posted(client: httpx.AsyncClient, path: str, body: dict[str, Any]) -> int:
    response = await client.post(path, json=body)
    response.raise_for_status()
    return int(response.json()["usage"]["completion_tokens"])


async def chat_stream_full(client: httpx.AsyncClient, p: dict[str, Any], salt: str) -> int:
    """itc before: stream, usage in every chunk, per-token logprobs."""
    body = chat_body(p, salt, stream=True, logprobs=True, top_logprobs=0,
                     stream_options={"include_usage": True, "continuous_usage_stats": True})
    return await streamed(client, "/v1/chat/completions", body)


async def chat_stream_usage(client: httpx.AsyncClient, p: dict[str, Any], salt: str) -> int:
    """Stream with a final usage chunk only, no logprobs."""
    body = chat_body(p, salt, stream=True, stream_options={"include_usage": True})
    return await streamed(client, "/v1/chat/completions", body)


async def chat_stream_logprobs(client: httpx.AsyncClient, p: dict[str, Any], salt: str) -> int:
    """Stream with per-chunk usage, without logprobs."""
    body = chat_body(p, salt, stream=True,
                     stream_options={"include_usage": True, "continuous_usage_stats": True})
    return await streamed(client, "/v1/chat/completions", body)


async def chat_plain_logprobs(client: httpx.AsyncClient, p: dict[str, Any], salt: str) -> int:
    """Non-streaming chat with per-token logprobs."""
    body = chat_body(p, salt, logprobs=True, top_logprobs=0)
    return await posted(client, "/v1/chat/completions", body)


async def chat_plain(client: httpx.AsyncClient, p: dict[str, Any], salt: str) -> int:
    """Non-streaming chat, no logprobs (the plain loop)."""
    return await posted(client, "/v1/chat/completions", chat_body(p, salt))


async def ids_plain(client: httpx.AsyncClient, p: dict[str, Any], salt: str) -> int:
    """Non-streaming completions on the chat rendered once to token ids."""
    return await posted(client, "/v1/completions", ids_body(p, salt, return_token_ids=True))


async def ids_stream_usage(client: httpx.AsyncClient, p: dict[str, Any], salt: str) -> int:
    """Streaming completions on token ids, final usage only."""
    body = ids_body(p, salt, stream=True, stream_options={"include_usage": True})
    return await streamed(client, "/v1/completions", body)


async def ids_split(client: httpx.AsyncClient, p: dict[str, Any], salt: str) -> int:
    """n separate n=1 requests (seeds seed..seed+n-1: the same samples as one n request)."""
    bodies = [
        ids_body({**p, "n": 1, "seed": p["seed"] + i}, salt, return_token_ids=True)
        for i in range(p["n"])
    ]
    counts = await asyncio.gather(*(posted(client, "/v1/completions", b) for b in bodies))
    return sum(counts)


VARIANTS: dict[str, Variant] = {
    "chat_stream_full": chat_stream_full,
    "chat_stream_usage_only": chat_stream_usage,
    "chat_stream_no_logprobs": chat_stream_logprobs,
    "chat_nostream_logprobs": chat_plain_logprobs,
    "chat_nostream": chat_plain,
    "ids_nostream": ids_plain,
    "ids_stream_usage_only": ids_stream_usage,
    "ids_nostream_split_n1": ids_split,
}


async def run_variant(
    client: httpx.AsyncClient, variant: Variant, problems: list[dict[str, Any]], in_flight: int
) -> tuple[int, float]:
    salt = uuid.uuid4().hex
    gate = asyncio.Semaphore(in_flight)

    async def one(problem: dict[str, Any]) -> int:
        async with gate:
            return await variant(client, problem, salt)

    started = time.perf_counter()
    tokens = sum(await asyncio.gather(*(one(p) for p in problems)))
    return tokens, time.perf_counter() - started


async def tokenize_latency(client: httpx.AsyncClient, problems: list[dict[str, Any]]) -> float:
    times = []
    for problem in problems:
        started = time.perf_counter()
        response = await client.post(
            "/tokenize", json={"model": problem["model"], "messages": problem["messages"]}
        )
        response.raise_for_status()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--problems", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--in-flight", default="16,1", help="comma list of problems in flight")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--single-problems", type=int, default=3)
    args = parser.parse_args()
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=256)
    async with httpx.AsyncClient(base_url=args.base_url, timeout=600, limits=limits) as client:
        model = (await client.get("/v1/models")).json()["data"][0]["id"]
        problems = []
        for i, problem in enumerate(load_dataset("gsm8k", args.problems).problems):
            messages = [{"role": "user", "content": problem.question}]
            tokenized = (await client.post(
                "/tokenize", json={"model": model, "messages": messages}
            )).json()
            problems.append({"model": model, "messages": messages, "ids": tokenized["tokens"],
                             "n": args.n, "max_tokens": args.max_tokens, "seed": 1000 + i})
        print(f"model {model}; {args.problems} problems x n={args.n} x {args.max_tokens} tokens; "
              f"/tokenize idle median {await tokenize_latency(client, problems):.1f} ms",
              flush=True)
        names = args.variants.split(",")
        for in_flight in (int(x) for x in args.in_flight.split(",")):
            batch = problems if in_flight > 1 else problems[: args.single_problems]
            totals: dict[str, list[float]] = {name: [0, 0.0] for name in names}
            await run_variant(client, chat_plain, batch, in_flight)  # untimed warm-up
            for round_ in range(args.rounds):
                order = names if round_ % 2 == 0 else list(reversed(names))
                for name in order:
                    if in_flight > 1 and name == "chat_stream_full":
                        # Time /tokenize while the server is busy with the heaviest variant.
                        run = asyncio.create_task(
                            run_variant(client, VARIANTS[name], batch, in_flight)
                        )
                        await asyncio.sleep(2.0)
                        busy = await tokenize_latency(client, problems[:5])
                        tokens, seconds = await run
                        print(f"  /tokenize under load median {busy:.1f} ms", flush=True)
                    else:
                        tokens, seconds = await run_variant(client, VARIANTS[name], batch,
                                                            in_flight)
                    totals[name][0] += tokens
                    totals[name][1] += seconds
                    print(f"in_flight={in_flight} round {round_} {name}: {tokens} tok "
                          f"{seconds:.1f}s {tokens / seconds:.1f} tok/s", flush=True)
            print(f"\n| {in_flight} in flight | tok/s | vs chat_stream_full |\n|---|---|---|")
            base = totals["chat_stream_full"][0] / totals["chat_stream_full"][1] \
                if "chat_stream_full" in totals else None
            for name in names:
                rate = totals[name][0] / totals[name][1]
                ratio = f"{rate / base:.2f}" if base else "-"
                print(f"| {name} | {rate:.1f} | {ratio} |")
            print(flush=True)


if __name__ == "__main__":
    asyncio.run(main())
