"""Every capability against the real vLLM server (marker `vllm`)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from itc.backends.base import BackendError, GenerationRequest, StructuredOutputs
from itc.backends.vllm import VLLMBackend
from itc.bench.datasets import load_dataset
from itc.bench.runner import run_benchmark
from itc.config import PipelineConfig, load_pipeline, parse_pipeline
from itc.planner.executor import Planner
from itc.runtime.budget import Ledger
from itc.runtime.context import NodeContext, Runtime
from itc.runtime.trace import Trace
from itc.strategies.best_of_n import BestOfN
from itc.strategies.generate import Generate
from itc.strategies.self_consistency import EarlyStop, SelfConsistency
from itc.types import Budget, Message, Problem
from itc.verifiers.judge import LLMJudge
from itc.verifiers.math import MathGrader

pytestmark = pytest.mark.vllm

ROOT = Path(__file__).resolve().parents[1]
ARITHMETIC = Problem(id="add", prompt="What is 2 + 3? Reply with just the number.", answer="5")
WORD = Problem(
    id="word",
    prompt="Tom has 3 apples and buys 4 more. How many apples does he have?",
    answer="7",
)


@pytest.fixture
async def grader():  # type: ignore[no-untyped-def]
    with MathGrader() as grader:
        yield grader


def ctx_for(backend, grader, problem=WORD, budget=None) -> NodeContext:  # type: ignore[no-untyped-def]
    runtime = Runtime(backend=backend, grader=grader)
    return NodeContext(problem, runtime, Ledger(budget or Budget()), Trace(problem_id=problem.id))


def chat(text: str) -> tuple[Message, ...]:
    return (Message(role="user", content=text),)


async def server_tokens(backend: VLLMBackend) -> tuple[float, float]:
    metrics = await backend.metrics()
    return metrics["vllm:prompt_tokens_total"], metrics["vllm:generation_tokens_total"]


async def test_generate_uses_n_and_counts_usage_exactly_like_the_server(backend, grader) -> None:
    before = await server_tokens(backend)
    ctx = ctx_for(backend, grader)
    candidates = await Generate(n=4, temperature=1.0, max_tokens=48).run(ctx, [])
    after = await server_tokens(backend)
    assert len(candidates) == 4 and len({c.text for c in candidates}) > 1
    assert [e.n for e in ctx.trace.events] == [4] and ctx.ledger.spent.calls == 1
    # vLLM's usage field counts the shared prompt once; its Prometheus counter counts it once
    # per sequence (the other n-1 are prefix-cache hits).
    assert ctx.ledger.spent.prompt_tokens * 4 == after[0] - before[0]
    assert ctx.ledger.spent.completion_tokens == after[1] - before[1]
    assert sum(c.completion_tokens for c in candidates) == ctx.ledger.spent.completion_tokens
    assert all(c.token_logprobs is None for c in candidates)  # nobody asked for them


async def test_same_seed_same_text_and_rollouts_differ(backend) -> None:
    request = GenerationRequest(messages=chat(WORD.prompt or ""), n=2, max_tokens=32, seed=7)
    first, second = await asyncio.gather(backend.generate(request), backend.generate(request))
    assert [c.text for c in first.choices] == [c.text for c in second.choices]
    other = await backend.generate(request.model_copy(update={"seed": 8}))
    assert [c.text for c in other.choices] != [c.text for c in first.choices]


async def test_continue_final_message_continues_the_partial_answer(backend) -> None:
    messages = (
        Message(role="user", content="Count from 1 to 10, separated by commas."),
        Message(role="assistant", content="1, 2, 3, 4, 5,"),
    )
    request = GenerationRequest(
        messages=messages, continue_final_message=True, max_tokens=12, temperature=0.0
    )
    result = await backend.generate(request)
    assert result.choices[0].text.lstrip().startswith("6")


async def test_completions_stop_strings_and_stop_reason(backend) -> None:
    request = GenerationRequest(
        prompt="1, 2, 3, 4, 5,",
        max_tokens=30,
        temperature=0.0,
        stop=(" 8",),
        include_stop_str_in_output=True,
    )
    choice = (await backend.generate(request)).choices[0]
    assert choice.text.endswith(" 8") and choice.stop_reason == " 8"
    assert choice.finish_reason == "stop"


async def test_structured_choice_and_prompt_logprobs(backend) -> None:
    request = GenerationRequest(
        messages=chat("Is the sky blue? Answer Yes or No."),
        max_tokens=3,
        temperature=1.0,
        n=4,
        structured_outputs=StructuredOutputs(choice=("Yes", "No")),
    )
    result = await backend.generate(request)
    assert {c.text for c in result.choices} <= {"Yes", "No"}
    scored = await backend.generate(
        GenerationRequest(prompt="The capital of France is Paris", max_tokens=1, prompt_logprobs=1)
    )
    assert scored.prompt_logprobs is not None and scored.prompt_logprobs[0] is None
    assert all(entry for entry in scored.prompt_logprobs[1:])
    assert (
        await backend.count_prompt_tokens(
            GenerationRequest(prompt="The capital of France is Paris")
        )
        == scored.prompt_tokens
    )


async def test_server_errors_are_quoted(backend) -> None:
    too_long = GenerationRequest(prompt="word " * 3000, max_tokens=10)
    with pytest.raises(BackendError, match="HTTP 400"):
        await backend.generate(too_long)


async def test_prefix_cache_hits_for_siblings(backend, grader) -> None:
    before = await backend.metrics()
    ctx = ctx_for(backend, grader, Problem(id="long", prompt="Explain fractions. " * 60))
    node = Generate(n=1, max_tokens=4)
    await asyncio.gather(*(node.run(ctx.child("g", i), []) for i in range(4)))
    await Generate(n=1, max_tokens=4, seed=99).run(ctx, [])
    after = await backend.metrics()
    hits = after["vllm:prefix_cache_hits_total"] - before["vllm:prefix_cache_hits_total"]
    assert hits > 0


async def test_self_consistency_votes_on_real_samples(backend, grader) -> None:
    ctx = ctx_for(backend, grader, ARITHMETIC)
    ranked = await SelfConsistency(inner=Generate(n=6, max_tokens=24)).run(ctx, [])
    assert ranked and ranked[0].answer is not None
    shares = [c.scores["vote_share"] for c in ranked]
    assert shares == sorted(shares, reverse=True) and sum(shares) == pytest.approx(1.0)
    assert sum(len(c.lineage) for c in ranked) <= 6


async def test_adaptive_self_consistency_cancels_on_the_real_server(backend, grader) -> None:
    # Greedy samples agree, so the vote is settled after 7 of 12; two in flight at a time
    # leaves samples still running or queued then, and those must be cancelled.
    runtime = Runtime(backend=backend, grader=grader, max_in_flight=2)
    ctx = NodeContext(ARITHMETIC, runtime, Ledger(Budget()), Trace(problem_id="add"))
    node = SelfConsistency(
        inner=Generate(n=1, temperature=0.0, max_tokens=32),
        repeats=12,
        early_stop=EarlyStop(min_votes=3),
    )
    ranked = await node.run(ctx, [])
    statuses = [e.status for e in ctx.trace.events]
    assert ranked[0].answer is not None and ranked[0].scores["vote_share"] == 1.0
    assert statuses.count("ok") in (7, 8), statuses
    assert statuses.count("cancelled") >= 1, statuses
    await asyncio.sleep(0.5)
    before = await server_tokens(backend)
    await asyncio.sleep(1.0)
    # Cancelled requests were aborted on the server: nothing more is being generated.
    assert await server_tokens(backend) == before


async def test_best_of_n_with_judge_scores_in_unit_interval(backend, grader) -> None:
    ctx = ctx_for(backend, grader)
    ranked = await BestOfN(inner=Generate(n=3, max_tokens=64), scorer=LLMJudge(), keep=3).run(
        ctx, []
    )
    scores = [c.scores["llm_judge"] for c in ranked]
    assert all(0.0 <= s <= 1.0 for s in scores) and scores == sorted(scores, reverse=True)
    judge_calls = [e for e in ctx.trace.events if e.node.endswith("scorer:llm_judge")]
    assert len(judge_calls) == 3 and all(e.max_tokens == 1 for e in judge_calls)


async def test_token_budget_is_never_exceeded(backend, grader) -> None:
    before = await server_tokens(backend)
    pipeline = PipelineConfig.single(
        SelfConsistency(inner=Generate(n=1, max_tokens=200, temperature=1.0), repeats=6)
    )
    planner = Planner(Runtime(backend=backend, grader=grader))
    result = await planner.run(pipeline, WORD, Budget(tokens=600))
    after = await server_tokens(backend)
    spent_on_server = (after[0] - before[0]) + (after[1] - before[1])
    assert result.usage.total_tokens <= 600
    assert spent_on_server <= 600
    assert any(e.status in ("clipped", "refused") for e in result.trace.events)


async def test_yaml_pipeline_equals_python_pipeline(backend, grader, tmp_path) -> None:
    python = PipelineConfig(
        nodes={
            "gen": Generate(n=3, max_tokens=48, seed=3),
            "vote": SelfConsistency(inner=None, inputs=("gen",)),
        }
    )
    path = tmp_path / "p.yaml"
    path.write_text(
        "nodes:\n  gen: {type: generate, n: 3, max_tokens: 48, seed: 3}\n"
        "  vote: {type: self_consistency, inner: null, inputs: [gen]}\n"
    )
    loaded = load_pipeline(path)
    assert loaded == python
    planner = Planner(Runtime(backend=backend, grader=grader))
    a, b = await asyncio.gather(planner.run(python, WORD), planner.run(loaded, WORD))
    assert (a.answer, a.text) == (b.answer, b.text)
    assert a.usage.completion_tokens == b.usage.completion_tokens


async def test_bench_on_gsm8k_grades_and_resumes(backend, tmp_path) -> None:
    pipeline = parse_pipeline(
        {"name": "greedy", "type": "generate", "temperature": 0.0, "max_tokens": 200}
    )
    data = load_dataset("gsm8k", limit=3)
    first = await run_benchmark([pipeline], data, backend, output_dir=tmp_path)
    rows = [json.loads(x) for x in next(tmp_path.glob("*.jsonl")).read_text().splitlines()]
    assert first[0].problems == 3 and len(rows) == 3
    assert all(r["usage"]["calls"] == 1 and r["gold"] for r in rows)
    assert first[0].correct == sum(r["correct"] for r in rows)
    before = await server_tokens(backend)
    again = await run_benchmark([pipeline], data, backend, output_dir=tmp_path)
    assert again[0].correct == first[0].correct
    assert await server_tokens(backend) == before  # nothing was re-sent


def itc_cli(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """The installed CLI as a user runs it, with room for its tables."""
    return subprocess.run(
        [sys.executable, "-m", "itc.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
        timeout=timeout,
    )


def test_cli_run_and_bench_end_to_end(vllm_server, tmp_path) -> None:
    run = itc_cli(
        "run", str(ROOT / "examples/self_consistency.yaml"), "--problem", WORD.prompt or "",
        "--base-url", vllm_server.base_url, "--trace-json", str(tmp_path / "t.json"),
        timeout=600,
    )
    assert run.returncode == 0, run.stderr
    assert "answer:" in run.stdout and "trace by node" in run.stdout
    trace = json.loads((tmp_path / "t.json").read_text())
    assert trace["usage"]["calls"] == 1 and trace["trace"]["events"][0]["n"] == 8
    bench = itc_cli(
        "bench", str(ROOT / "examples/greedy.yaml"), "--dataset", "gsm8k", "--limit", "2",
        "--base-url", vllm_server.base_url, "--output-dir", str(tmp_path / "runs"),
        timeout=600,
    )
    assert bench.returncode == 0, bench.stderr
    assert "greedy" in bench.stdout and "accuracy" in bench.stdout
    summary = json.loads((tmp_path / "runs/summary.json").read_text())
    assert summary[0]["problems"] == 2
    bad = itc_cli(
        "bench", str(ROOT / "examples/greedy.yaml"), "--dataset", "nope",
        "--base-url", vllm_server.base_url,
        timeout=120,
    )
    assert bad.returncode == 2 and "unknown dataset 'nope'" in bad.stderr


async def test_self_certainty_weighted_vote_on_real_samples(backend, grader) -> None:
    from itc.verifiers.self_certainty import SelfCertainty

    ctx = ctx_for(backend, grader, ARITHMETIC)
    node = SelfConsistency(inner=Generate(n=5, max_tokens=24), scorer=SelfCertainty())
    ranked = await node.run(ctx, [])
    shares = [c.scores["vote_share"] for c in ranked]
    assert ranked and sum(shares) == pytest.approx(1.0)
    # Weighted by exp(mean logprob) in (0, 1]: shares need not be multiples of 1/5.
    assert all(0.0 < s <= 1.0 for s in shares)


def test_cli_sweep_then_report(vllm_server, tmp_path) -> None:
    config = tmp_path / "sc.yaml"
    config.write_text(
        "name: sc\nnodes:\n  main:\n    type: self_consistency\n"
        "    inner: {type: generate, n: 2, max_tokens: 96, seed: 1}\n"
    )
    greedy = tmp_path / "greedy.yaml"
    greedy.write_text("name: greedy\ntype: generate\ntemperature: 0.0\nmax_tokens: 96\n")
    runs = tmp_path / "runs"
    bench = itc_cli(
        "bench", str(greedy), str(config), "--dataset", "gsm8k", "--limit", "2",
        "--sweep", "main.inner.n=1..2", "--base-url", vllm_server.base_url,
        "--output-dir", str(runs), "--cache", str(runs / "cache.sqlite"),
        timeout=900,
    )
    assert bench.returncode == 0, bench.stderr
    summary = json.loads((runs / "summary.json").read_text())
    assert [s["config"] for s in summary] == ["greedy", "sc[n=1]", "sc[n=2]"]
    assert summary[2]["completion_tokens_per_problem"] > summary[1]["completion_tokens_per_problem"]
    report = (runs / "report.md").read_text()
    assert "sc[n=2]" in report and "greedy" in report
    pngs = list(runs.glob("*.png"))
    assert pngs and all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    again = itc_cli("report", str(runs), "--out-dir", str(tmp_path / "rep"), timeout=300)
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "rep" / "report.md").read_text().count("sc[n=") >= 2


def test_cli_bench_budget_override_is_hard_and_kept_apart(vllm_server, tmp_path) -> None:
    runs = tmp_path / "runs"
    common = (
        "bench", str(ROOT / "examples/greedy.yaml"), "--dataset", "synthetic", "--count", "2",
        "--base-url", vllm_server.base_url, "--output-dir", str(runs), "--no-report",
    )
    assert itc_cli(*common, timeout=600).returncode == 0
    capped = itc_cli(*common, "--budget-tokens", "120", timeout=600)
    assert capped.returncode == 0, capped.stderr
    files = sorted(runs.glob("greedy-*.jsonl"))
    assert len(files) == 2  # a budget is part of the config, so of the resume key
    greedy = load_pipeline(ROOT / "examples/greedy.yaml")
    capped_fingerprint = greedy.model_copy(update={"budget": Budget(tokens=120)}).fingerprint()
    rows = [json.loads(line) for f in files for line in f.read_text().splitlines()]
    budgeted = [r for r in rows if r["fingerprint"] == capped_fingerprint]
    assert len(budgeted) == 2
    assert all(r["usage"]["prompt_tokens"] + r["usage"]["completion_tokens"] <= 120 for r in rows
               if r in budgeted)
    # Rerunning with the override kept the unbudgeted entry in the summary.
    assert len(json.loads((runs / "summary.json").read_text())) == 2
