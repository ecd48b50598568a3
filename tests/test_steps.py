"""Partial solutions extend by exact token ids, siblings in one request, within budgets."""

from __future__ import annotations

import pytest

from itc.backends.scripted import ScriptedBackend
from itc.runtime.budget import BudgetExhausted
from itc.runtime.steps import Partial, StepConfig, extend
from itc.types import Budget, Message

from .helpers import context

ROOT = Partial(messages=(Message(role="user", content="What is 2 plus 2 ?"),))
PIPE = StepConfig(delimiter="|", max_tokens=20, max_steps=3)


async def test_children_extend_their_parent_exactly_and_siblings_share_a_request() -> None:
    answers = iter(["two plus two |", "add them |", "it is 4 |", "so 4 |", "x |", "y |"])
    backend = ScriptedBackend(lambda request, index: next(answers))
    ctx = context(backend)
    [children] = await extend(ctx, [ROOT], n=2, config=PIPE)
    assert len(backend.requests) == 1 and backend.requests[0].n == 2
    assert backend.requests[0].messages == ROOT.messages  # the first step renders the chat
    first = children[0]
    assert first.prompt_ids is not None and first.steps == ("two plus two |",)
    assert first.ids == first.prompt_ids + first.step_ids[0]
    assert not first.finished and backend.requests[0].stop == ("|",)
    grand = await extend(ctx, children, n=2, config=PIPE)
    assert [r.prompt_ids for r in backend.requests[1:]] == [c.ids for c in children]
    for parent, kids in zip(children, grand, strict=True):
        for kid in kids:
            assert kid.ids[: len(parent.ids)] == parent.ids  # never re-tokenised
            assert kid.steps[:-1] == parent.steps and len(kid.step_ids) == 2
    # Two parents at the same depth draw from different seeds.
    assert backend.requests[1].seed != backend.requests[2].seed


async def test_a_solution_finishes_on_eos_an_answer_or_the_step_cap() -> None:
    replies = iter(["no delimiter here", "the answer is 4 |", "keep going |"])
    backend = ScriptedBackend(lambda request, index: next(replies))
    ctx = context(backend)
    [kids] = await extend(ctx, [ROOT], n=3, config=PIPE)
    assert [k.finish_reason for k in kids] == ["eos", "answer", None]
    deep = kids[2]
    for _ in range(2):
        backend.script = lambda request, index: "more |"
        [[deep]] = await extend(ctx, [deep], n=1, config=PIPE)
    assert deep.finished and deep.finish_reason == "max_steps" and len(deep.steps) == 3
    calls = len(backend.requests)
    assert await extend(ctx, [kids[0], deep], n=2, config=PIPE) == [[], []]
    assert len(backend.requests) == calls  # finished partials are never extended


async def test_budget_refusals_leave_parents_childless_and_all_refused_raises() -> None:
    backend = ScriptedBackend(lambda request, index: "step |")
    ctx = context(backend, Budget(calls=2))
    [[a, b]] = await extend(ctx, [ROOT], n=2, config=PIPE)
    children = await extend(ctx, [a, b], n=1, config=PIPE)
    assert sorted(len(c) for c in children) == [0, 1] and ctx.ledger.spent.calls == 2
    with pytest.raises(BudgetExhausted):
        await extend(ctx, [a, b], n=1, config=PIPE)


@pytest.mark.vllm
async def test_real_steps_extend_exactly_and_hit_the_prefix_cache(backend) -> None:  # type: ignore[no-untyped-def]
    from itc.runtime.budget import Ledger
    from itc.runtime.context import NodeContext, Runtime
    from itc.runtime.trace import Trace
    from itc.types import Problem

    # A shared prefix of several KV blocks (vLLM caches whole blocks only; the CPU build's
    # are large), as a real few-shot or long problem statement would be.
    context = " ".join(f"Shop {i} sells apples at {i + 2} cents each." for i in range(60))
    problem = Problem(
        id="steps", prompt=f"{context}\nTom has 3 apples and buys 4 more. Explain step by step."
    )
    ctx = NodeContext(problem, Runtime(backend=backend), Ledger(Budget()), Trace(problem_id="s"))
    root = Partial(messages=(Message(role="user", content=problem.prompt or ""),))
    config = StepConfig(delimiter="\n", max_tokens=24, max_steps=4, answer_marker=None)
    [children] = await extend(ctx, [root], n=4, config=config)
    live = [c for c in children if not c.finished]
    assert live, "every first step ended the solution; nothing to extend"
    before = await backend.metrics()
    grand = await extend(ctx, live, n=2, config=config)
    after = await backend.metrics()
    hits = after["vllm:prefix_cache_hits_total"] - before["vllm:prefix_cache_hits_total"]
    queries = after["vllm:prefix_cache_queries_total"] - before["vllm:prefix_cache_queries_total"]
    assert queries > 0 and hits / queries > 0.5
    for parent, kids in zip(live, grand, strict=True):
        for kid in kids:
            assert kid.ids[: len(parent.ids)] == parent.ids
            # The server reads back exactly the text the steps say.
            shown = await backend._request_json(
                "POST", "/detokenize", {"model": backend.model, "tokens": list(kid.ids)}
            )
            assert shown["prompt"].endswith(kid.text)
