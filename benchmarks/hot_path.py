"""itc's hot path against a plain asyncio + httpx loop doing the same work on the same server.

Three workloads, each run through itc (Planner, Runtime, VLLMBackend) and through a minimal
loop of raw httpx requests, back to back, with the same prompts, seeds and sampling settings:

* ``sc30``: self-consistency, 8 samples per problem, 30 problems in flight. itc runs
  SelfConsistency(inner=Generate(n=8)); the plain loop sends one non-streaming chat request
  with n=8 per problem, all at once.
* ``sc1``: the same with one problem in flight (latency-bound). The plain loop also runs as
  8 separate n=1 requests per problem (``plain_n1``, reported for reference only).
* ``steps``: step-shaped, many short calls on growing shared prefixes: per problem 8 chains,
  each extended ``--steps`` times by ``--step-tokens`` tokens (a chain stops early on EOS).
  itc runs the small ``StepChains`` strategy below (only ``ctx.generate``); the plain loop
  sends ``/v1/completions`` with the rendered chat text growing by each step's text.

Metric: generated tokens (as the server reports them in ``usage``) per wall-clock second for
the whole workload; the figure of merit is itc's rate over the plain loop's. Runs alternate
sides (ABBA over rounds) so drift does not favour either. Every run has its own
``cache_salt`` so no run is served from the prefix cache of an earlier one (itc's requests
get it through a transport wrapper that edits the JSON body; the plain loop sets it itself).

    .venv/bin/python benchmarks/hot_path.py --base-url http://127.0.0.1:8011 --label after
    .venv/bin/python benchmarks/hot_path.py --workloads sc1 --rounds 4   # managed server
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import subprocess
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx

import itc
from itc.backends.base import GenerationRequest
from itc.backends.connect import connect
from itc.backends.vllm import VLLMBackend
from itc.config import PipelineConfig
from itc.nodes import Strategy
from itc.planner.executor import Planner
from itc.runtime.context import NodeContext, Runtime
from itc.strategies.generate import Generate, render_messages
from itc.strategies.self_consistency import SelfConsistency
from itc.types import Candidate, Problem

try:
    from itc.bench.datasets import load_dataset
except ImportError:  # before the datasets module moved under itc.bench
    from itc.datasets import load_dataset  # type: ignore[no-redef]

RESULTS = Path(__file__).parent / "results" / "hot-path"
LIMITS = httpx.Limits(max_connections=None, max_keepalive_connections=256)
TIMEOUT = httpx.Timeout(600.0, connect=10.0)
TEMPERATURE = 0.7
IDS_SUPPORTED = "prompt_ids" in GenerationRequest.model_fields


def step_seed(base: int, chain: int, step: int) -> int:
    return base + 1000 * chain + step


# -- the step-shaped strategy -----------------------------------------------------------------


class StepChains(Strategy):
    """`samples` independent chains, each extended `steps` times by `step_tokens` new tokens.

    The shape of step-level search (beam, particle filtering) without its scoring: every call
    is short and continues a prefix the previous call produced. With ``ids`` the chain is
    carried as token ids (the chat rendered once, each step's sampled ids appended), so no
    call needs the prompt counted; without, it is carried as text (``problem.prompt`` holds
    the rendered chat).
    """

    type: Literal["bench_step_chains"] = "bench_step_chains"
    samples: int = 8
    steps: int = 6
    step_tokens: int = 40
    seed: int = 0
    ids: bool = True

    async def run(self, ctx: NodeContext, inputs: list[Candidate]) -> list[Candidate]:
        chains = await asyncio.gather(*(self._chain(ctx, i) for i in range(self.samples)))
        return list(chains)

    async def _chain(self, ctx: NodeContext, index: int) -> Candidate:
        text = ""
        ids: tuple[int, ...] | None = None
        completion = 0
        for step in range(self.steps):
            settings: dict[str, Any] = {
                "max_tokens": self.step_tokens,
                "temperature": TEMPERATURE,
                "seed": step_seed(self.seed, index, step),
            }
            if not self.ids:
                assert ctx.problem.prompt is not None
                request = GenerationRequest(prompt=ctx.problem.prompt + text, **settings)
            elif ids is None:
                request = GenerationRequest(messages=render_messages(ctx.problem), **settings)
            else:
                request = GenerationRequest(prompt_ids=ids, **settings)  # type: ignore[call-arg]
            result = await ctx.generate(request)
            choice = result.choices[0]
            text += choice.text
            completion += choice.completion_tokens
            if self.ids:
                prefix = ids if ids is not None else result.prompt_ids  # type: ignore[attr-defined]
                if prefix is None or choice.token_ids is None:  # type: ignore[attr-defined]
                    raise RuntimeError("the backend returned no token ids to extend")
                ids = (*prefix, *choice.token_ids)  # type: ignore[attr-defined]
            if choice.finish_reason != "length":
                break
        return Candidate(text=text, node=ctx.path, completion_tokens=completion)


# -- plumbing shared by both sides -------------------------------------------------------------


class SaltedTransport(httpx.AsyncBaseTransport):
    """Adds the current run's `cache_salt` to every `/v1/...` POST body, so itc's run
    starts from a cold prefix cache exactly as the plain loop's does."""

    def __init__(self, salt: str) -> None:
        self.salt = salt
        self.inner = httpx.AsyncHTTPTransport(limits=LIMITS)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and request.url.path.startswith("/v1/"):
            body = json.loads(request.content)
            body["cache_salt"] = self.salt
            headers = [(k, v) for k, v in request.headers.raw if k.lower() != b"content-length"]
            request = httpx.Request(
                "POST", request.url, headers=headers, json=body, extensions=request.extensions
            )
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


@dataclass
class Run:
    workload: str
    side: str
    round: int
    tokens: int
    seconds: float
    server_tokens: float
    errors: int = 0
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.tokens / self.seconds


@dataclass
class Setup:
    base_url: str
    model: str
    samples: int
    max_tokens: int
    steps: int
    step_tokens: int
    steps_ids: bool
    sc30: list[Problem]
    sc1: list[Problem]
    steps_problems: list[Problem]
    rendered: dict[str, tuple[str, list[int]]]
    """Problem id -> (chat rendered to text, its token ids), for the step workload."""


async def generation_tokens(client: httpx.AsyncClient) -> float:
    text = (await client.get("/metrics")).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith("vllm:generation_tokens_total"):
            total += float(line.rpartition(" ")[2])
    return total


def chat(problem: Problem) -> list[dict[str, str]]:
    return [{"role": m.role, "content": m.content} for m in render_messages(problem)]


async def post(client: httpx.AsyncClient, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = await client.post(path, json=body)
    response.raise_for_status()
    return response.json()


# -- the plain loop ----------------------------------------------------------------------------


async def plain_sc(
    client: httpx.AsyncClient, setup: Setup, problems: list[Problem], salt: str, split: bool
) -> tuple[int, int]:
    """One non-streaming chat request with n samples per problem (or n with n=1), all at once."""

    async def one(problem: Problem) -> int:
        body = {
            "model": setup.model,
            "messages": chat(problem),
            "n": setup.samples,
            "max_tokens": setup.max_tokens,
            "temperature": TEMPERATURE,
            "seed": 0,
            "cache_salt": salt,
        }
        if not split:
            return int((await post(client, "/v1/chat/completions", body))["usage"][
                "completion_tokens"])
        # vLLM seeds sample i of an n-request with seed + i: these are the same samples.
        parts = await asyncio.gather(*(
            post(client, "/v1/chat/completions", {**body, "n": 1, "seed": i})
            for i in range(setup.samples)
        ))
        return sum(int(p["usage"]["completion_tokens"]) for p in parts)

    return sum(await asyncio.gather(*(one(p) for p in problems))), 0


async def plain_steps(
    client: httpx.AsyncClient, setup: Setup, problems: list[Problem], salt: str
) -> tuple[int, int]:
    """Completions on the rendered chat text, growing by each step's generated text."""

    async def one_chain(problem: Problem, index: int) -> int:
        text, tokens = setup.rendered[problem.id][0], 0
        for step in range(setup.steps):
            data = await post(client, "/v1/completions", {
                "model": setup.model,
                "prompt": text,
                "max_tokens": setup.step_tokens,
                "temperature": TEMPERATURE,
                "seed": step_seed(0, index, step),
                "cache_salt": salt,
            })
            choice = data["choices"][0]
            text += choice["text"]
            tokens += int(data["usage"]["completion_tokens"])
            if choice["finish_reason"] != "length":
                break
        return tokens

    counts = await asyncio.gather(
        *(one_chain(p, i) for p in problems for i in range(setup.samples))
    )
    return sum(counts), 0


# -- itc ---------------------------------------------------------------------------------------


async def run_itc(
    setup: Setup, workload: str, problems: list[Problem], salt: str
) -> tuple[int, float, int, dict[str, Any]]:
    transport = SaltedTransport(salt)
    client = httpx.AsyncClient(base_url=setup.base_url, transport=transport, timeout=TIMEOUT)
    backend = VLLMBackend(setup.base_url, setup.model, client=client)
    await backend.resolve_model()
    if workload == "steps":
        node: Strategy = StepChains(
            samples=setup.samples, steps=setup.steps, step_tokens=setup.step_tokens,
            ids=setup.steps_ids,
        )
        in_flight, calls_in_flight = len(problems), len(problems) * setup.samples
        if not setup.steps_ids:
            problems = [
                Problem(id=p.id, prompt=setup.rendered[p.id][0], answer=p.answer)
                for p in problems
            ]
    else:
        node = SelfConsistency(inner=Generate(
            n=setup.samples, temperature=TEMPERATURE, max_tokens=setup.max_tokens, seed=0
        ))
        in_flight = 1 if workload == "sc1" else len(problems)
        calls_in_flight = max(32, in_flight)
    runtime = Runtime(backend=backend, max_in_flight=calls_in_flight)
    planner = Planner(runtime, max_problems_in_flight=in_flight)
    pipeline = PipelineConfig.single(node)
    try:
        started = time.perf_counter()
        results = await planner.run_many(pipeline, problems)
        seconds = time.perf_counter() - started
    finally:
        await backend.aclose()
    tokens = sum(r.usage.completion_tokens for r in results)
    errors = sum(1 for r in results if r.error or r.budget_exhausted)
    calls = sum(r.usage.calls for r in results)
    first_error = next((r.error or r.budget_exhausted for r in results if r.error), None)
    notes: dict[str, Any] = {"calls": calls}
    if first_error:
        notes["first_error"] = first_error
    return tokens, seconds, errors, notes


async def run_plain(
    setup: Setup, workload: str, problems: list[Problem], salt: str, split: bool = False
) -> tuple[int, float, int, dict[str, Any]]:
    async with httpx.AsyncClient(base_url=setup.base_url, timeout=TIMEOUT, limits=LIMITS) as c:
        started = time.perf_counter()
        if workload == "steps":
            tokens, errors = await plain_steps(c, setup, problems, salt)
        elif workload == "sc1":
            tokens = errors = 0
            for problem in problems:
                done, _ = await plain_sc(c, setup, [problem], salt, split)
                tokens += done
        else:
            tokens, errors = await plain_sc(c, setup, problems, salt, split)
        return tokens, time.perf_counter() - started, errors, {}


# -- driver ------------------------------------------------------------------------------------


async def prepare(args: argparse.Namespace, base_url: str) -> Setup:
    async with httpx.AsyncClient(base_url=base_url, timeout=TIMEOUT) as client:
        model = args.model or (await client.get("/v1/models")).json()["data"][0]["id"]
        needed = max(args.sc30_problems, args.sc1_problems, args.steps_problems)
        options: dict[str, Any] = {"count": needed} if args.dataset == "synthetic" else {}
        problems = list(load_dataset(args.dataset, needed, **options).problems)
        rendered = {}
        for problem in problems[: args.steps_problems]:
            tokens = (await post(client, "/tokenize", {"model": model,
                                                       "messages": chat(problem)}))["tokens"]
            text = (await post(client, "/detokenize", {"model": model, "tokens": tokens}))[
                "prompt"]
            rendered[problem.id] = (text, tokens)
        # Warm both endpoints, at full width, so neither side pays a first-request cost.
        await asyncio.gather(*(
            post(client, "/v1/chat/completions", {"model": model, "messages": chat(p),
                                                  "n": args.samples, "max_tokens": 8})
            for p in problems[: args.sc30_problems]
        ))
        await post(client, "/v1/completions", {"model": model, "prompt": "Hello", "max_tokens": 4})
    steps_ids = {"auto": IDS_SUPPORTED, "ids": True, "text": False}[args.steps_mode]
    return Setup(
        base_url=base_url, model=model, samples=args.samples, max_tokens=args.max_tokens,
        steps=args.steps, step_tokens=args.step_tokens, steps_ids=steps_ids,
        sc30=problems[: args.sc30_problems], sc1=problems[: args.sc1_problems],
        steps_problems=problems[: args.steps_problems], rendered=rendered,
    )


async def one_run(setup: Setup, workload: str, side: str, round_: int) -> Run:
    problems = {"sc30": setup.sc30, "sc1": setup.sc1, "steps": setup.steps_problems}[workload]
    salt = uuid.uuid4().hex
    async with httpx.AsyncClient(base_url=setup.base_url, timeout=TIMEOUT) as metrics:
        before = await generation_tokens(metrics)
        if side == "itc":
            tokens, seconds, errors, notes = await run_itc(setup, workload, problems, salt)
        else:
            tokens, seconds, errors, notes = await run_plain(
                setup, workload, problems, salt, split=side == "plain_n1"
            )
        server = await generation_tokens(metrics) - before
    run = Run(workload, side, round_, tokens, seconds, server, errors, notes)
    print(f"  {workload:<6} round {round_} {side:<8} {tokens:>6} tok {seconds:7.1f} s "
          f"{run.rate:7.1f} tok/s (server counted {server:.0f})"
          + (f" errors={errors} {notes}" if errors else ""), flush=True)
    return run


def summarise(runs: list[Run]) -> dict[str, dict[str, Any]]:
    summary: dict[str, dict[str, Any]] = {}
    for workload in dict.fromkeys(r.workload for r in runs):
        rates: dict[str, Any] = {}
        for side in dict.fromkeys(r.side for r in runs if r.workload == workload):
            mine = [r for r in runs if r.workload == workload and r.side == side]
            rates[side] = {
                "tokens": sum(r.tokens for r in mine),
                "seconds": round(sum(r.seconds for r in mine), 3),
                "tok_per_s": round(sum(r.tokens for r in mine) / sum(r.seconds for r in mine), 2),
                "runs": len(mine),
            }
        ratio = rates["itc"]["tok_per_s"] / rates["plain"]["tok_per_s"]
        entry: dict[str, Any] = {"sides": rates, "itc_over_plain": round(ratio, 3)}
        if "plain_n1" in rates:
            entry["plain_n1_over_plain"] = round(
                rates["plain_n1"]["tok_per_s"] / rates["plain"]["tok_per_s"], 3
            )
        summary[workload] = entry
    return summary


def git_commit() -> str:
    """HEAD, and where the measured itc came from (the working tree, dirty or not, or a
    snapshot put first on PYTHONPATH)."""
    root = Path(__file__).resolve().parents[1]

    def git(*argv: str) -> str:
        return subprocess.run(["git", "-C", str(root), *argv], capture_output=True,
                              text=True).stdout.strip()

    commit = git("rev-parse", "HEAD")
    package = Path(itc.__file__).resolve().parent
    if package != root / "itc":
        return f"{commit} (itc imported from {package})"
    dirty = git("status", "--porcelain", "--", "itc")
    return commit + (" + uncommitted changes in itc/" if dirty else "")


def markdown(meta: dict[str, Any], summary: dict[str, dict[str, Any]]) -> str:
    lines = [
        f"# Hot path: itc vs a plain httpx loop ({meta['label']})",
        "",
        f"- command: `{meta['command']}`",
        f"- date: {meta['date']}; model: {meta['model']}; commit: {meta['commit']}",
        f"- settings: {json.dumps(meta['settings'])}",
        "",
        "| workload | plain tok/s | itc tok/s | itc / plain | runs per side |",
        "|---|---:|---:|---:|---:|",
    ]
    for workload, entry in summary.items():
        sides = entry["sides"]
        lines.append(
            f"| {workload} | {sides['plain']['tok_per_s']:.1f} | {sides['itc']['tok_per_s']:.1f} "
            f"| {entry['itc_over_plain']:.3f} | {sides['itc']['runs']} |"
        )
    for workload, entry in summary.items():
        if "plain_n1" in entry["sides"]:
            lines.append(
                f"\n{workload}: the plain loop as {meta['settings']['samples']} n=1 requests per "
                f"problem: {entry['sides']['plain_n1']['tok_per_s']:.1f} tok/s "
                f"({entry['plain_n1_over_plain']:.3f} of one n-request)."
            )
    return "\n".join(lines) + "\n"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", help="a running vLLM server; else a managed one starts")
    parser.add_argument("--model", help="served model name (default: the server's first)")
    parser.add_argument("--workloads", default="sc30,sc1,steps")
    parser.add_argument("--dataset", "--problems", default="gsm8k",
                        help="gsm8k or synthetic (seeded arithmetic)")
    parser.add_argument("--sc30-problems", type=int, default=30)
    parser.add_argument("--sc1-problems", type=int, default=6)
    parser.add_argument("--steps-problems", type=int, default=12)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=48, help="per sample, sc workloads")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--step-tokens", type=int, default=40)
    parser.add_argument("--steps-mode", choices=("auto", "ids", "text"), default="auto",
                        help="how StepChains carries a chain: token ids (when the backend "
                             "supports them) or text")
    parser.add_argument("--rounds", type=int, default=2,
                        help="runs per side; sides alternate ABBA")
    parser.add_argument("--no-split", action="store_true",
                        help="skip the plain n=1 reference in sc1")
    parser.add_argument("--label", default="run", help="output file stem")
    parser.add_argument("--output-dir", type=Path, default=RESULTS)
    args = parser.parse_args()
    workloads = args.workloads.split(",")
    if args.base_url is None:
        async with connect(None) as managed:
            await measure(args, workloads, managed.base_url)
    else:
        await measure(args, workloads, args.base_url.rstrip("/").removesuffix("/v1"))


async def measure(args: argparse.Namespace, workloads: list[str], base_url: str) -> None:
    setup = await prepare(args, base_url)
    settings = {
        "dataset": args.dataset, "samples": setup.samples, "temperature": TEMPERATURE,
        "max_tokens": setup.max_tokens, "sc30_problems": len(setup.sc30),
        "sc1_problems": len(setup.sc1), "steps_problems": len(setup.steps_problems),
        "steps": setup.steps, "step_tokens": setup.step_tokens,
        "steps_carried_as": "token ids" if setup.steps_ids else "text", "rounds": args.rounds,
    }
    print(f"model {setup.model} at {base_url}; {json.dumps(settings)}", flush=True)
    runs: list[Run] = []
    for w_index, workload in enumerate(workloads):
        for round_ in range(args.rounds):
            sides = ["plain", "itc"] if (round_ + w_index) % 2 == 0 else ["itc", "plain"]
            if workload == "sc1" and not args.no_split:
                sides.append("plain_n1")
            for side in sides:
                runs.append(await one_run(setup, workload, side, round_))
    summary = summarise(runs)
    meta = {
        "label": args.label,
        "command": " ".join([".venv/bin/python", "benchmarks/hot_path.py", *sys.argv[1:]]),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "model": setup.model,
        "commit": git_commit(),
        "settings": settings,
    }
    args.output_dir.mkdir(parents=True, exist_ok=True)
    payload = {**meta, "summary": summary, "runs": [asdict(r) for r in runs]}
    (args.output_dir / f"{args.label}.json").write_text(json.dumps(payload, indent=2) + "\n")
    table = markdown(meta, summary)
    (args.output_dir / f"{args.label}.md").write_text(table)
    print("\n" + table)


if __name__ == "__main__":
    asyncio.run(main())
