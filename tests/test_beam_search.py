"""Beam search keeps the top N/M beams a round, DVTS keeps each subtree's best child; both send
a round's requests together, set finished solutions aside and stop within their budgets."""

from __future__ import annotations

import time

import pytest
from pydantic import ValidationError

from itc.backends.base import GenerationRequest
from itc.backends.scripted import ScriptedBackend, prompt_text
from itc.config import ConfigError, parse_pipeline
from itc.runtime.steps import StepConfig
from itc.strategies.beam_search import BeamSearch
from itc.strategies.dvts import DVTS
from itc.types import Budget
from itc.verifiers.arithmetic import ArithmeticCheck

from .helpers import context

GOOD, BAD, PLAIN = "3 + 4 = 7", "3 + 4 = 8", "we add them"
DONE = "The answer is 7."
# The scripted backend matches stop strings as whole words, so a step ends at " |".
STEP = StepConfig(delimiter="|", max_tokens=20, max_steps=6)


def labelled(backend_ref: list[ScriptedBackend], bodies: dict[str, str]):  # type: ignore[no-untyped-def]
    """A script whose every step reads "<label>: <body> |": a child's label is its parent's
    label plus a letter for its place among the siblings, so a request's prompt ids name the
    beam it extends. Unlisted labels get a correct step."""

    def script(request: GenerationRequest, index: int) -> str:
        parent = extended(backend_ref[0], request)
        label = parent + "abcdefgh"[index]
        return f"{label}: {bodies.get(label, GOOD)} |"

    return script


def extended(backend: ScriptedBackend, request: GenerationRequest) -> str:
    """The label of the beam a request extends ("" for the root)."""
    if request.prompt_ids is None:
        return ""
    labels = [w for w in prompt_text(request, backend.vocabulary).split() if w.endswith(":")]
    return labels[-1][:-1] if labels else ""


def scripted(bodies: dict[str, str]) -> ScriptedBackend:
    ref: list[ScriptedBackend] = []
    backend = ScriptedBackend(labelled(ref, bodies))
    ref.append(backend)
    return backend


def rounds(backend: ScriptedBackend) -> list[list[tuple[str, int]]]:
    """Requests grouped by the depth of the beam they extend: (label, n) per request."""
    grouped: dict[int, list[tuple[str, int]]] = {}
    for request in backend.requests:
        label = extended(backend, request)
        grouped.setdefault(len(label), []).append((label, request.n))
    return [grouped[d] for d in sorted(grouped)]


def search(kind: type, **fields):  # type: ignore[no-untyped-def]
    return kind(beams=4, expand=2, step=STEP, reward=ArithmeticCheck(), **fields)


async def test_beam_keeps_the_top_n_over_m_and_sets_finished_beams_aside() -> None:
    backend = scripted(
        {
            # Round 1: a, c, d tie on 1.0; ties go to the first sampled, so a and c go on.
            "a": GOOD, "b": BAD, "c": GOOD, "d": GOOD,
            # Round 2: ab finishes (set aside), cb is wrong: aa and ca go on.
            "aa": GOOD, "ab": DONE, "ca": GOOD, "cb": BAD,
            # Round 3: everything finishes, so 5 >= N beams are done.
            "aaa": DONE, "aab": BAD + " " + DONE, "caa": DONE, "cab": DONE,
        }
    )
    ctx = context(backend)
    ranked = await search(BeamSearch).run(ctx, [])
    assert rounds(backend) == [[("", 4)], [("a", 2), ("c", 2)], [("aa", 2), ("ca", 2)]]
    prompt = backend.encode(prompt_text(backend.requests[0]))
    for request in backend.requests[1:]:
        # Each later request sends the beam's exact ids: the rendered prompt, then its steps.
        assert request.messages is None and request.prompt_ids is not None
        assert request.prompt_ids[: len(prompt)] == prompt
    assert "ab" not in {label for level in rounds(backend) for label, _ in level}
    logged = ctx.trace.search
    assert [r.round for r in logged] == [1, 2, 3]
    kept_first = {p.id for p in logged[0].partials if p.copies == 1}
    assert len(kept_first) == 2 and sum(p.copies for p in logged[0].partials) == 2
    finished_second = [p for p in logged[1].partials if p.finished]
    assert len(finished_second) == 1 and finished_second[0].copies == 0
    assert {p.parent for p in logged[1].partials} == kept_first  # round 2 grew only the kept
    # The vote is over the five finished solutions; the wrong one weighs nothing.
    assert ranked[0].answer == "7" and ranked[0].finish_reason == "answer"
    assert len(ranked[0].lineage) == 5


async def test_beam_runs_until_n_beams_finish_or_the_step_cap() -> None:
    backend = scripted({})  # every step correct, none states an answer
    ctx = context(backend)
    capped = StepConfig(delimiter="|", max_tokens=20, max_steps=3)
    ranked = await BeamSearch(beams=4, expand=2, step=capped, reward=ArithmeticCheck()).run(
        ctx, []
    )
    assert [len(level) for level in rounds(backend)] == [1, 2, 2]
    assert all(n == 2 for level in rounds(backend)[1:] for _, n in level)
    assert {c.finish_reason for c in ranked} == {"max_steps"}
    assert all(c.metadata["steps"] == 3 for c in ranked)


async def test_dvts_subtrees_stay_independent() -> None:
    backend = scripted(
        {
            # The root's 4 samples are dealt 2 per subtree: {a, b} and {c, d}. Subtree 2's
            # best (d) is worse than both of subtree 1's, yet it is the one subtree 2 extends.
            "a": GOOD, "b": GOOD, "c": BAD, "d": PLAIN,
            # ab (1.0) beats db (0.5), but each subtree extends only its own best.
            "aa": GOOD, "ab": GOOD, "da": BAD, "db": PLAIN,
            "aaa": DONE, "aab": BAD, "dba": DONE, "dbb": DONE,
        }
    )
    ctx = context(backend)
    ranked = await search(DVTS).run(ctx, [])
    assert rounds(backend) == [[("", 4)], [("a", 2), ("d", 2)], [("aa", 2), ("db", 2)]]
    logged = ctx.trace.search
    assert [r.round for r in logged] == [1, 2, 3]
    for number, level in enumerate(logged):
        # One child kept per subtree, and each round's children all come from kept parents.
        assert sum(p.copies for p in level.partials) == 2
        if number:
            before = {p.id for p in logged[number - 1].partials if p.copies}
            assert {p.parent for p in level.partials} == before
    # The answer is voted over the two subtrees' finished leaves (tied: the first subtree's).
    assert ranked[0].answer == "7" and len(ranked[0].lineage) == 2
    assert ranked[0].text.startswith("a: ") and ranked[0].text.endswith(f"aaa: {DONE} |")


async def test_dvts_a_finished_subtree_stops_while_the_others_go_on() -> None:
    backend = scripted({"a": DONE, "b": BAD, "c": GOOD, "d": BAD})
    ctx = context(backend)
    capped = StepConfig(delimiter="|", max_tokens=20, max_steps=3)
    dvts = DVTS(beams=4, expand=2, step=capped, reward=ArithmeticCheck(), select="best")
    ranked = await dvts.run(ctx, [])
    # Subtree 1 finished on its first step (a); subtree 2 grew on alone to the step cap.
    assert rounds(backend) == [[("", 4)], [("c", 2)], [("ca", 2)]]
    # One leaf per subtree, best first: c's all-correct path (1.0) over a's bare answer (0.5).
    leaves = [(c.text.split(":")[0], c.finish_reason, c.scores["reward"]) for c in ranked]
    assert leaves == [("c", "max_steps", 1.0), ("a", "answer", 0.5)]


@pytest.mark.parametrize("kind", [BeamSearch, DVTS])
@pytest.mark.parametrize(
    "budget",
    [Budget(calls=2), Budget(calls=4), Budget(completion_tokens=40), Budget(completion_tokens=90)],
    ids=["calls=2", "calls=4", "completion=40", "completion=90"],
)
async def test_budgets_are_never_exceeded_and_an_answer_is_kept(kind: type, budget: Budget) -> None:
    backend = scripted({})  # steps go on until the budget stops them
    ctx = context(backend, budget)
    ranked = await search(kind).run(ctx, [])
    spent = ctx.ledger.spent
    assert budget.calls is None or spent.calls <= budget.calls
    assert budget.completion_tokens is None or spent.completion_tokens <= budget.completion_tokens
    assert any(e.status == "refused" for e in ctx.trace.events)  # the budget did stop it
    assert ranked and all(c.metadata["steps"] >= 1 for c in ranked)
    assert len(ctx.trace.search) >= 1


@pytest.mark.parametrize("kind", [BeamSearch, DVTS])
async def test_a_refused_first_step_returns_nothing(kind: type) -> None:
    backend = scripted({})
    ctx = context(backend, Budget(completion_tokens=1))
    assert await search(kind).run(ctx, []) == []
    assert ctx.ledger.spent.completion_tokens == 0 and ctx.trace.search == []


@pytest.mark.parametrize("kind", ["beam_search", "dvts"])
def test_beams_must_be_a_multiple_of_expand(kind: str) -> None:
    with pytest.raises(ConfigError, match=r"beams \(6\) must be a multiple of expand \(4\)"):
        parse_pipeline({"type": kind, "beams": 6, "expand": 4})
    with pytest.raises(ValidationError, match="multiple of expand"):
        (BeamSearch if kind == "beam_search" else DVTS)(beams=2, expand=4)
    assert parse_pipeline({"type": kind, "beams": 6, "expand": 3}).nodes["main"].beams == 6


@pytest.mark.vllm
@pytest.mark.parametrize("kind", [BeamSearch, DVTS])
async def test_real_server_search_within_a_token_budget(backend, kind: type) -> None:  # type: ignore[no-untyped-def]
    from itc.runtime.budget import Ledger
    from itc.runtime.context import NodeContext, Runtime
    from itc.runtime.trace import Trace
    from itc.types import Problem

    seen: list[GenerationRequest] = []
    send = backend.generate

    async def recorded(request, progress=None):  # type: ignore[no-untyped-def]
        seen.append(request)
        return await send(request, progress)

    backend.generate = recorded
    problem = Problem(
        id="two-step",
        prompt="Tom has 3 apples and buys 4 more. Then he doubles them. How many apples now?",
        answer="14",
    )
    budget = Budget(completion_tokens=400)
    ctx = NodeContext(problem, Runtime(backend=backend), Ledger(budget), Trace(problem_id="t"))
    step = StepConfig(delimiter="\n", max_tokens=24, max_steps=3)
    strategy = kind(beams=4, expand=2, step=step, reward=ArithmeticCheck())
    started = time.monotonic()
    ranked = await strategy.run(ctx, [])
    assert time.monotonic() - started < 60
    assert ctx.ledger.spent.completion_tokens <= 400
    assert ranked, "no candidate came back"
    assert seen[0].messages is not None and seen[0].n == 4
    assert len(seen) > 1 and all(r.prompt_ids is not None for r in seen[1:])
    assert all(r.n == 2 for r in seen[1:])
    logged = ctx.trace.search
    assert logged and [r.round for r in logged] == list(range(1, len(logged) + 1))
    for level in logged:
        went_on = sum(p.copies for p in level.partials)
        assert went_on <= 2  # N/M beams or subtrees a round
        assert all(p.reward is not None for p in level.partials)
    # Each later round extends only partials an earlier round kept.
    for number in range(1, len(logged)):
        kept = {p.id for p in logged[number - 1].partials if p.copies}
        assert {p.parent for p in logged[number].partials} <= kept
