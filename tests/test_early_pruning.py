"""Early pruning: one prefix request, a probe of the open starts, exact continuations of the
best few only, within budgets."""

from __future__ import annotations

import math
from typing import Literal

import pytest

from itc.backends.base import GenerationRequest, GenerationResult, StreamProgress
from itc.backends.scripted import ScriptedBackend, prompt_text
from itc.nodes import Scorer
from itc.runtime.budget import BudgetExhausted
from itc.runtime.context import NodeContext
from itc.strategies.early_pruning import EarlyPruning
from itc.types import Budget, Candidate

from .helpers import context

STARTS = [
    "bad guess here and then more",
    "good start here and then more",
    "answer is 7",  # three words: finished within the prefix
    "bad idea again and more",
    "good plan here and more",
    "bad one again and more",
]


class Probed(ScriptedBackend):
    """Starts from a list, continuations by what they continue, and a probe that likes
    "good"; it keeps every result so tests can check the ids continued from."""

    def __init__(self, starts: list[str]) -> None:
        super().__init__(self._reply)
        self.starts = starts
        self.results: list[GenerationResult] = []

    def _reply(self, request: GenerationRequest, index: int) -> str:
        if request.prompt_ids is not None:
            seen = prompt_text(request, self.vocabulary)
            return "so The answer is 4" if "good" in seen else "so The answer is 9"
        if request.max_tokens == 1:
            return "Yes"
        return self.starts[index]

    async def generate(
        self, request: GenerationRequest, progress: StreamProgress | None = None
    ) -> GenerationResult:
        result = await super().generate(request, progress)
        if request.top_logprobs and request.messages is not None:
            liked = "good" in request.messages[-2].content
            tops = {"Yes": -0.1, "No": -2.5} if liked else {"Yes": -2.5, "No": -0.1}
            result = result.model_copy(
                update={"choices": tuple(c.model_copy(update={"top_logprobs": (tops,)})
                                         for c in result.choices)}
            )
        self.results.append(result)
        return result

    def sampled(self) -> list[tuple[GenerationRequest, GenerationResult]]:
        return [(q, r) for q, r in zip(self.requests, self.results, strict=True)
                if q.max_tokens != 1]


class LikesGood(Scorer):
    """A free scorer (no calls), so budget tests see sampling alone."""

    type: Literal["likes_good"] = "likes_good"

    async def score(self, ctx: NodeContext, candidates: list[Candidate]) -> list[float]:
        return [0.9 if "good" in c.text else 0.1 for c in candidates]


def node(**settings) -> EarlyPruning:  # type: ignore[no-untyped-def]
    return EarlyPruning(**{"samples": 6, "prefix_tokens": 3, "max_tokens": 10, **settings})


async def test_one_prefix_request_then_only_the_best_starts_continue_from_their_ids() -> None:
    backend = Probed(STARTS)
    ranked = await node(keep=0.25).run(context(backend), [])
    (first_request, first), *continuations = backend.sampled()
    assert first_request.n == 6 and first_request.max_tokens == 3
    assert first_request.messages is not None and first.prompt_ids is not None
    probes = [q for q in backend.requests if q.max_tokens == 1]
    assert len(probes) == 5  # the open starts, not the finished one
    assert all(q.messages and q.messages[-2].role == "assistant" for q in probes)
    assert {q.messages[-2].content for q in probes if q.messages} == {
        " ".join(STARTS[i].split()[:3]) for i in (0, 1, 3, 4, 5)
    }
    # ceil(0.25 x 6) = 2 continued, the two the probe liked, from their exact ids.
    assert len(continuations) == math.ceil(0.25 * 6)
    expected = {first.prompt_ids + first.choices[i].token_ids for i in (1, 4)}  # type: ignore[operator]
    assert {q.prompt_ids for q, _ in continuations} == expected
    assert all(q.n == 1 and q.max_tokens == 10 - 3 for q, _ in continuations)
    # Finals: the finished start as it was plus the two continued; the vote picks 4.
    assert ranked[0].answer == "4" and ranked[0].scores["vote_share"] == pytest.approx(2 / 3)
    assert ranked[0].metadata["continued"] and ranked[0].scores["prefix_score"] > 0.5
    assert ranked[0].completion_tokens == 3 + 5
    assert [c.text for c in ranked[1:]] == ["answer is 7"]


async def test_a_finished_start_is_never_continued_and_few_open_starts_need_no_probe() -> None:
    starts = ["answer is 7", "good start here and more", "answer is 8", "bad start here and more"]
    backend = Probed(starts)
    ranked = await node(samples=4, keep=0.5).run(context(backend), [])
    (_, first), *continuations = backend.sampled()
    assert not [q for q in backend.requests if q.max_tokens == 1]  # 2 open, 2 to continue
    assert first.prompt_ids is not None
    assert {q.prompt_ids for q, _ in continuations} == {
        first.prompt_ids + first.choices[i].token_ids  # type: ignore[operator]
        for i in (1, 3)
    }
    assert sorted(c.answer or "" for c in ranked) == ["4", "7", "8", "9"]

    backend = Probed(["answer is 7", "answer is 7", "answer is 8"])
    ranked = await node(samples=3, keep=1.0).run(context(backend), [])
    assert len(backend.requests) == 1  # every sample finished in its prefix
    assert ranked[0].answer == "7" and ranked[0].scores["vote_share"] == pytest.approx(2 / 3)


async def test_select_best_ranks_the_finished_solutions_by_the_probe() -> None:
    backend = Probed(STARTS)
    ranked = await node(keep=0.25, select="best").run(context(backend), [])
    assert len(ranked) == 3  # one finished start + two continued
    assert len([q for q in backend.requests if q.max_tokens == 1]) == 5 + 3
    scores = [c.scores["partial_probe"] for c in ranked]
    assert scores == sorted(scores, reverse=True)
    assert "good" in ranked[0].text and ranked[-1].text == "answer is 7"


async def test_continuations_are_clipped_or_refused_within_a_completion_budget() -> None:
    backend = Probed([" ".join(["good"] * 12)] * 4)
    budget = Budget(completion_tokens=16)
    ctx = context(backend, budget)
    ranked = await node(samples=4, keep=0.5, scorer=LikesGood()).run(ctx, [])
    assert ctx.ledger.spent.completion_tokens <= 16
    # 12 tokens of prefixes leave 4: one continuation clipped to them, the other refused
    # (its 3-token fragment does not compete with a longer solution).
    assert [c.completion_tokens for c in ranked] == [3 + 4] and ranked[0].metadata["continued"]
    assert [e.status for e in ctx.trace.events].count("refused") == 1
    assert [e.max_tokens for e in ctx.trace.events if e.status == "clipped"] == [4]
    # With nothing left after the prefixes, the fragments are all there is: they answer.
    ctx = context(Probed([" ".join(["good"] * 12)] * 4), Budget(completion_tokens=12))
    ranked = await node(samples=4, keep=0.5, scorer=LikesGood()).run(ctx, [])
    assert ctx.ledger.spent.completion_tokens == 12
    assert len(ranked) == 2 and all("cut" in c.metadata for c in ranked)
    with pytest.raises(BudgetExhausted):
        await node(samples=4).run(context(Probed(STARTS), Budget(completion_tokens=3)), [])


async def test_refused_probes_and_continuations_still_leave_an_answer() -> None:
    backend = Probed(STARTS)
    ctx = context(backend, Budget(calls=3))
    ranked = await node(keep=0.25).run(ctx, [])
    # The prefix call and two probes fit; the other probes and every continuation are
    # refused, so the finished start answers alone.
    assert ctx.ledger.spent.calls == 3 and len(backend.sampled()) == 1
    assert [c.answer for c in ranked] == ["7"]


def test_keep_is_a_share_of_the_samples_and_at_least_one() -> None:
    assert node(keep=0.25, samples=8).continued == 2
    assert node(keep=0.3, samples=10).continued == 3
    assert node(keep=0.01, samples=8).continued == 1
    with pytest.raises(ValueError, match="prefix_tokens"):
        node(prefix_tokens=10, max_tokens=10)


class Recording:
    """A real backend that keeps what it was asked and what it answered."""

    def __init__(self, backend) -> None:  # type: ignore[no-untyped-def]
        self.backend = backend
        self.model = backend.model
        self.calls: list[tuple[GenerationRequest, GenerationResult]] = []

    async def generate(self, request, progress=None):  # type: ignore[no-untyped-def]
        result = await self.backend.generate(request, progress)
        self.calls.append((request, result))
        return result

    async def count_prompt_tokens(self, request):  # type: ignore[no-untyped-def]
        return await self.backend.count_prompt_tokens(request)

    async def max_model_len(self):  # type: ignore[no-untyped-def]
        return await self.backend.max_model_len()

    async def aclose(self) -> None:
        return None


@pytest.mark.vllm
async def test_real_early_pruning_continues_exact_ids_within_a_budget(backend) -> None:  # type: ignore[no-untyped-def]
    from itc.runtime.budget import Ledger
    from itc.runtime.context import NodeContext, Runtime
    from itc.runtime.trace import Trace
    from itc.types import Problem

    recording = Recording(backend)
    problem = Problem(id="ep", prompt="Tom has 3 apples and buys 4 more. How many apples?")
    budget = Budget(tokens=700, completion_tokens=64)
    ctx = NodeContext(problem, Runtime(backend=recording), Ledger(budget), Trace(problem_id="e"))
    strategy = EarlyPruning(
        samples=4, prefix_tokens=8, max_tokens=40, keep=0.5, seed=5,
        template="{question}\nSolve it step by step, then finish with: The answer is <number>.",
    )
    ranked = await strategy.run(ctx, [])
    spent = ctx.ledger.spent
    assert ranked and spent.completion_tokens <= 64 and spent.total_tokens <= 700
    sampled = [(q, r) for q, r in recording.calls if q.max_tokens != 1]
    (first_request, first), *continuations = sampled
    assert first_request.n == 4 and first.prompt_ids
    open_ = [c for c in first.choices if c.finish_reason == "length"]
    probes = [q for q, _ in recording.calls if q.max_tokens == 1]
    assert len(probes) == (len(open_) if len(open_) > 2 else 0)
    assert 1 <= len(continuations) <= 2 or not open_  # 4 x 8 + 4 probe tokens leave room
    starts = {first.prompt_ids + (c.token_ids or ()) for c in open_}
    for request, _ in continuations:
        assert request.prompt_ids in starts  # the start's exact ids, never re-tokenised
        assert request.prompt_ids[: len(first.prompt_ids)] == first.prompt_ids
    for c in ranked:
        if c.metadata.get("continued"):
            start = first.choices[c.metadata["index"]]
            assert c.text.startswith(start.text) and c.completion_tokens <= 40
