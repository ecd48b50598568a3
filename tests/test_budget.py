"""Budget arithmetic: reservations make limits hard, even with calls in flight."""

from __future__ import annotations

import asyncio

import pytest

from itc.backends.base import GenerationRequest
from itc.backends.scripted import ScriptedBackend
from itc.runtime.budget import BudgetExhausted, Ledger
from itc.strategies.generate import Generate
from itc.types import Budget, Message, Usage
from tests.helpers import answers, context

LONG = " ".join(["word"] * 50)


def test_reserve_clips_max_tokens_to_what_is_left() -> None:
    ledger = Ledger(Budget(tokens=100))
    reservation = ledger.reserve(prompt_tokens=20, n=4, max_tokens=512)
    assert reservation.max_tokens == 20 and reservation.clipped
    with pytest.raises(BudgetExhausted) as refusal:
        ledger.reserve(prompt_tokens=1, n=1, max_tokens=10)
    assert refusal.value.limit == "tokens"


def test_settle_releases_the_unused_part_of_a_reservation() -> None:
    ledger = Ledger(Budget(tokens=100))
    reservation = ledger.reserve(prompt_tokens=10, n=1, max_tokens=90)
    ledger.settle(reservation, Usage(prompt_tokens=10, completion_tokens=5, calls=1))
    assert ledger.spent.total_tokens == 15
    assert ledger.reserve(prompt_tokens=10, n=1, max_tokens=500).max_tokens == 75


def test_call_and_completion_limits() -> None:
    ledger = Ledger(Budget(calls=1, completion_tokens=30))
    assert ledger.reserve(prompt_tokens=999, n=3, max_tokens=100).max_tokens == 10
    with pytest.raises(BudgetExhausted) as refusal:
        ledger.reserve(prompt_tokens=1, n=1, max_tokens=1)
    assert refusal.value.limit == "calls"


def test_wall_time_limit_refuses_after_deadline() -> None:
    now = [0.0]
    ledger = Ledger(Budget(wall_time=5.0), clock=lambda: now[0])
    ledger.reserve(prompt_tokens=1, n=1, max_tokens=1)
    now[0] = 6.0
    with pytest.raises(BudgetExhausted, match="wall_time"):
        ledger.reserve(prompt_tokens=1, n=1, max_tokens=1)


async def test_concurrent_calls_never_jointly_exceed_the_token_budget() -> None:
    backend = ScriptedBackend(answers(LONG), seconds_per_token=0.0005)
    ctx = context(backend, Budget(tokens=200))
    node = Generate(n=1, max_tokens=100)
    results = await asyncio.gather(
        *(node.run(ctx.child("g", rollout=i), []) for i in range(10)), return_exceptions=True
    )
    assert ctx.ledger.spent.total_tokens <= 200
    assert any(isinstance(r, BudgetExhausted) for r in results)
    sent = [r for r in backend.requests]
    assert all(r.max_tokens <= 100 for r in sent)
    refused = [e for e in ctx.trace.events if e.status == "refused"]
    assert refused and len(sent) + len(refused) == 10


async def test_context_length_clips_max_tokens() -> None:
    backend = ScriptedBackend(answers(LONG), context_length=30)
    ctx = context(backend)
    result = await ctx.generate(
        GenerationRequest(messages=(Message(role="user", content="a b c d e"),), max_tokens=500)
    )
    assert backend.requests[0].max_tokens == 25
    assert result.choices[0].finish_reason == "length"


async def test_cut_calls_that_did_not_stream_are_charged_their_reservation_within_budget() -> None:
    # A real server reports nothing until a call not streamed is done: cutting one charges
    # its whole reservation, which was admitted inside the budget, so the limit still holds.
    backend = ScriptedBackend(answers(LONG), seconds_per_token=0.001, meter_unstreamed=False)
    ctx = context(backend, Budget(tokens=300))
    node = Generate(n=1, max_tokens=100)
    tasks = [asyncio.create_task(node.run(ctx.child("g", rollout=i), [])) for i in range(3)]
    await asyncio.sleep(0.01)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    cancelled = [e for e in ctx.trace.events if e.status == "cancelled"]
    assert cancelled and all("whole reservation" in (e.detail or "") for e in cancelled)
    assert all(e.completion_tokens == e.max_tokens for e in cancelled)
    assert ctx.ledger.spent.total_tokens <= 300
