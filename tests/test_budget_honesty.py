"""Budgets act visibly: waits instead of premature refusals, every refusal and clip reported,
paid samples kept, retries admitted like any call."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from itc.backends.base import GenerationRequest
from itc.backends.scripted import ScriptedBackend
from itc.config import PipelineConfig, load_pipeline
from itc.planner.executor import Planner
from itc.runtime.budget import Ledger
from itc.runtime.context import Runtime
from itc.strategies.generate import Generate
from itc.strategies.self_consistency import SelfConsistency
from itc.types import Budget, Usage
from itc.verifiers.judge import LLMJudge

from .helpers import PROBLEM, answers
from .test_hot_path import FakeServer, backend_for, ctx_for

SHORT = "so the answer is 4"  # 5 words: 5 tokens on the scripted backend


def test_a_call_blocked_only_by_reservations_is_told_to_wait() -> None:
    ledger = Ledger(Budget(tokens=700))
    first = ledger.admit(prompt_tokens=10, n=1, max_tokens=320)
    second = ledger.admit(prompt_tokens=10, n=1, max_tokens=320)
    assert not isinstance(first, asyncio.Event) and not isinstance(second, asyncio.Event)
    third = ledger.admit(prompt_tokens=10, n=1, max_tokens=320)
    assert isinstance(third, asyncio.Event) and not third.is_set()
    ledger.settle(first, Usage(prompt_tokens=10, completion_tokens=40, calls=1))
    assert third.is_set()
    # 310 would fit beside the second call's reservation: clipped only by it, so wait again.
    again = ledger.admit(prompt_tokens=10, n=1, max_tokens=320)
    assert isinstance(again, asyncio.Event)
    ledger.settle(second, Usage(prompt_tokens=10, completion_tokens=40, calls=1))
    admitted = ledger.admit(prompt_tokens=10, n=1, max_tokens=320)
    assert not isinstance(admitted, asyncio.Event) and admitted.max_tokens == 320
    ledger.settle(admitted, Usage(prompt_tokens=10, completion_tokens=320, calls=1))
    # With nothing in flight, what does not fit is clipped (or refused) at once.
    last = ledger.admit(prompt_tokens=10, n=1, max_tokens=1000)
    assert not isinstance(last, asyncio.Event) and last.clipped and last.limit == "tokens"
    assert last.max_tokens == 700 - (50 + 50 + 330) - 10


async def test_six_samples_under_a_tight_budget_all_vote_and_none_is_refused() -> None:
    # 6 runs of up to 320 tokens against 700: reserving worst cases side by side would refuse
    # four; waiting for real spending (5 tokens each) admits all six.
    backend = ScriptedBackend(answers(SHORT), seconds_per_token=0.001)
    pipeline = PipelineConfig.single(
        SelfConsistency(inner=Generate(n=1, max_tokens=320), repeats=6),
        budget=Budget(tokens=700),
    )
    result = await Planner(Runtime(backend=backend)).run(pipeline, PROBLEM)
    assert len(backend.requests) == 6 and result.refused_calls == 0
    assert result.candidates[0].scores["vote_share"] == 1.0
    assert result.usage.total_tokens <= 700


async def test_a_clipped_answer_says_so() -> None:
    backend = ScriptedBackend(answers(" ".join(["step"] * 100)))
    pipeline = PipelineConfig.single(Generate(temperature=0.0, max_tokens=320))
    result = await Planner(Runtime(backend=backend)).run(pipeline, PROBLEM, Budget(tokens=60))
    assert result.budget_exhausted == "tokens" and result.clipped_calls == 1
    assert result.usage.total_tokens <= 60
    assert result.trace.events[0].status == "clipped" and result.trace.events[0].limit == "tokens"


async def test_best_of_n_keeps_its_paid_samples_when_the_judge_is_refused() -> None:
    pipeline = load_pipeline("examples/best_of_n.yaml")
    backend = ScriptedBackend(answers(" ".join(["x"] * 60) + " answer is 4"))
    result = await Planner(Runtime(backend=backend)).run(pipeline, PROBLEM, Budget(tokens=300))
    assert result.answer == "4" and result.error is None
    assert result.budget_exhausted == "tokens" and result.refused_calls >= 1
    assert result.candidates[0].metadata["rank"].startswith("unscored: tokens budget exhausted")


async def test_a_weighted_vote_falls_back_to_plain_votes_when_its_scorer_is_refused() -> None:
    node = SelfConsistency(inner=Generate(n=3, max_tokens=20), scorer=LLMJudge())
    backend = ScriptedBackend(answers("answer is 4", "answer is 4", "answer is 5"))
    result = await Planner(Runtime(backend=backend)).run(
        PipelineConfig.single(node), PROBLEM, Budget(calls=1)
    )
    assert result.answer == "4" and result.budget_exhausted == "calls"
    assert result.candidates[0].scores["vote_share"] == 2 / 3


async def test_retries_are_admitted_against_the_budget_and_counted_as_calls() -> None:
    flaky = FakeServer(failures=[500, 500, 500, 500])
    ctx = ctx_for(backend_for(flaky), Budget(tokens=20))
    request = GenerationRequest(prompt_ids=(1, 2), n=1, max_tokens=3)
    try:
        await ctx.generate(request)
    except Exception as error:
        refused = error
    assert type(refused).__name__ == "BudgetExhausted" and "retry refused" in str(refused)
    # Each lost attempt is charged its worst case (5 tokens): never more than the budget.
    assert ctx.ledger.spent.total_tokens <= 20
    sent = [path for path in flaky.paths() if path != "/tokenize"]
    assert ctx.ledger.spent.calls == len(sent) and len(sent) < 5

    ok = FakeServer(failures=[503])
    ctx = ctx_for(backend_for(ok))
    await ctx.generate(request)
    assert ctx.ledger.spent.calls == 2  # two HTTP requests, two calls


async def test_a_retry_refused_by_the_call_limit() -> None:
    flaky = FakeServer(failures=[httpx.ReadError("reset")])
    ctx = ctx_for(backend_for(flaky), Budget(calls=1))
    try:
        await ctx.generate(GenerationRequest(prompt_ids=(1, 2), n=1, max_tokens=3))
    except Exception as error:
        refused = error
    assert getattr(refused, "limit", None) == "calls"
    assert ctx.ledger.spent.calls == 1


@pytest.mark.vllm
async def test_waiting_admission_on_the_real_server(backend) -> None:  # type: ignore[no-untyped-def]
    from itc.types import Problem

    question = Problem(id="add", prompt="What is 2 + 3? Reply with just the number.", answer="5")
    pipeline = PipelineConfig.single(
        SelfConsistency(inner=Generate(n=1, max_tokens=320, temperature=0.8), repeats=6),
        budget=Budget(tokens=700),
    )
    result = await Planner(Runtime(backend=backend)).run(pipeline, question)
    sent = [e for e in result.trace.events if e.status in ("ok", "clipped")]
    # Reserving 320-token worst cases side by side admits two of six; waiting for what the
    # short replies really cost admits more, and never spends past the budget.
    assert len(sent) >= 3
    assert result.usage.total_tokens <= 700
    assert len(sent) + result.refused_calls == 6
    assert all(e.limit == "tokens" for e in result.trace.events if e.status == "refused")
    limited = result.refused_calls + result.clipped_calls > 0
    assert (result.budget_exhausted is not None) == limited
