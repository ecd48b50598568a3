"""RPC: the Weibull mixture behind reasoning pruning, and the perplexity-consistency vote."""

from __future__ import annotations

import math
import random

import pytest

from itc.backends.base import GenerationRequest, GenerationResult, StreamProgress
from itc.backends.scripted import ScriptedBackend
from itc.runtime.budget import BudgetExhausted
from itc.strategies.generate import Generate
from itc.strategies.rpc import RPC, fit_weibull, fit_weibull_mixture, reasoning_pruning
from itc.strategies.self_consistency import SelfConsistency
from itc.types import Budget, Candidate

from .helpers import answers, context


def two_modes(seed: int = 11) -> tuple[list[float], list[float]]:
    rng = random.Random(seed)
    low = [rng.weibullvariate(0.3, 2.5) for _ in range(400)]  # (scale, shape)
    high = [rng.weibullvariate(0.85, 12.0) for _ in range(400)]
    return low, high


def path(text: str, confidence: float) -> Candidate:
    """A sampled path whose exp(mean token logprob) is `confidence`."""
    return Candidate(text=text, token_logprobs=(math.log(confidence),) * 3)


class LogprobBackend(ScriptedBackend):
    """Scripted samples whose token logprobs are set per text (the base gives one constant)."""

    confidence: dict[str, float]

    async def generate(
        self, request: GenerationRequest, progress: StreamProgress | None = None
    ) -> GenerationResult:
        result = await super().generate(request, progress)
        if not request.logprobs:
            return result
        choices = tuple(
            c.model_copy(
                update={"token_logprobs": (math.log(self.confidence[c.text]),) * len(c.token_ids)}
            )
            for c in result.choices
        )
        return result.model_copy(update={"choices": choices})


def test_a_weighted_weibull_fit_recovers_shape_and_scale() -> None:
    rng = random.Random(3)
    values = [rng.weibullvariate(0.6, 4.0) for _ in range(3000)]
    fit = fit_weibull(values, [1.0] * len(values))
    assert fit.shape == pytest.approx(4.0, rel=0.06) and fit.scale == pytest.approx(0.6, rel=0.02)
    # Weights act as counts: doubling a half is the same as listing it twice.
    half = values[:1500]
    weighted = fit_weibull(half + values[1500:], [2.0] * 1500 + [1.0] * 1500)
    listed = fit_weibull(half + half + values[1500:], [1.0] * 4500)
    assert weighted.shape == pytest.approx(listed.shape, rel=1e-6)
    assert weighted.scale == pytest.approx(listed.scale, rel=1e-6)


def test_weibull_em_recovers_two_well_separated_components() -> None:
    low, high = two_modes()
    mixture = fit_weibull_mixture(high + low)
    assert mixture is not None
    assert mixture.low.shape == pytest.approx(2.5, rel=0.2)
    assert mixture.low.scale == pytest.approx(0.3, rel=0.06)
    assert mixture.high.shape == pytest.approx(12.0, rel=0.2)
    assert mixture.high.scale == pytest.approx(0.85, rel=0.03)
    assert mixture.weight == pytest.approx(0.5, abs=0.05)
    assert mixture.posterior_high(0.9) > 0.99 and mixture.posterior_high(0.2) < 0.01


def test_reasoning_pruning_drops_the_low_mode_below_the_mean() -> None:
    low, high = two_modes()
    values = low + high
    keep, posteriors = reasoning_pruning(values)
    assert posteriors is not None
    assert sum(keep[:400]) < 0.1 * 400  # the low mode is nearly all gone
    assert sum(keep[400:]) > 0.97 * 400  # the high mode nearly all stays
    mean = sum(values) / len(values)
    for kept, p, x in zip(keep, posteriors, values, strict=True):
        assert kept == (p >= 0.5 or x >= mean)
    assert keep[values.index(max(values))]


def test_pruning_is_skipped_for_tiny_or_constant_sets() -> None:
    assert reasoning_pruning([0.95, 0.9, 0.01]) == ([True] * 3, None)
    assert reasoning_pruning([0.4] * 8) == ([True] * 8, None)
    assert fit_weibull_mixture([0.4] * 8) is None
    # Four paths, two clear modes: now it prunes.
    keep, posteriors = reasoning_pruning([0.95, 0.93, 0.05, 0.04])
    assert posteriors is not None and keep == [True, True, False, False]


async def test_perplexity_consistency_counts_a_duplicate_once_and_can_beat_the_majority() -> None:
    inputs = [
        path("first way: The answer is 4", 0.9),
        path("second way: The answer is 4", 0.8),
        path("guess: The answer is 5", 0.6),
        path("guess: The answer is 5", 0.6),  # the same completion again: one path
        path("other guess: The answer is 5", 0.6),
        path("no idea", 0.7),  # no answer: not in the vote
    ]
    node = RPC(inputs=("samples",), prune=False)
    ranked = await node.run(context(ScriptedBackend(answers("unused"))), inputs)
    assert [c.answer for c in ranked] == ["4", "5"]
    # 4: 0.9 + 0.8 = 1.7; 5: 0.6 + 0.6 (the duplicate not counted) = 1.2.
    assert ranked[0].scores["confidence"] == pytest.approx(1.7 / 2.9)
    assert ranked[1].scores["confidence"] == pytest.approx(1.2 / 2.9)
    assert ranked[0].text == "first way: The answer is 4"  # its most confident path
    assert len(ranked[1].lineage) == 3
    # Counted twice, the duplicate would have made 5 win (1.8 > 1.7); so does a plain vote.
    vote = await SelfConsistency(inputs=("samples",)).run(
        context(ScriptedBackend(answers("unused"))), inputs
    )
    assert vote[0].answer == "5"


async def test_rpc_asks_its_sampler_for_logprobs_and_prunes_the_unlikely_paths() -> None:
    confident = {f"way {i}: The answer is 4": c for i, c in enumerate([0.9, 0.92, 0.88])}
    unsure = {f"try {i}: The answer is 7": c for i, c in enumerate([0.3, 0.32, 0.28, 0.31, 0.29])}
    texts = list(confident) + list(unsure)
    backend = LogprobBackend(answers(*texts))
    backend.confidence = {k: v for d in (confident, unsure) for k, v in d.items()}
    ranked = await RPC(inner=Generate(n=8)).run(context(backend), [])
    assert len(backend.requests) == 1 and backend.requests[0].logprobs
    assert backend.requests[0].n == 8
    # Five unsure paths answering 7 are pruned: only 4 is left, with all the confidence.
    assert [c.answer for c in ranked] == ["4"]
    assert ranked[0].scores["confidence"] == pytest.approx(1.0)
    assert ranked[0].scores["path_confidence"] == pytest.approx(0.92)
    assert ranked[0].scores["p_high"] > 0.5

    backend = LogprobBackend(answers(*texts))
    backend.confidence = {k: v for d in (confident, unsure) for k, v in d.items()}
    unpruned = await RPC(inner=Generate(n=8), prune=False).run(context(backend), [])
    assert [c.answer for c in unpruned] == ["4", "7"]
    assert unpruned[1].scores["confidence"] == pytest.approx(1.5 / 4.2)


async def test_rpc_on_three_paths_keeps_even_a_very_unlikely_one() -> None:
    inputs = [
        path("The answer is 4", 0.9),
        path("so The answer is 4", 0.95),
        path("The answer is 9", 0.01),
    ]
    ranked = await RPC(inputs=("samples",)).run(context(ScriptedBackend(answers("x"))), inputs)
    assert [c.answer for c in ranked] == ["4", "9"]
    assert "p_high" not in ranked[0].scores  # no mixture was fitted
    assert sum(c.scores["confidence"] for c in ranked) == pytest.approx(1.0)


async def test_when_pruning_leaves_no_answer_every_path_votes() -> None:
    inputs = [
        path("no idea at all", 0.95),
        path("still thinking", 0.93),
        path("The answer is 3", 0.05),
        path("maybe The answer is 3", 0.04),
    ]
    assert reasoning_pruning([0.95, 0.93, 0.05, 0.04])[0] == [True, True, False, False]
    ranked = await RPC(inputs=("samples",)).run(context(ScriptedBackend(answers("x"))), inputs)
    assert [c.answer for c in ranked] == ["3"] and ranked[0].scores["confidence"] == 1.0


async def test_a_refused_sampler_leaves_the_inputs_or_names_the_limit() -> None:
    backend = ScriptedBackend(answers("The answer is 4"))
    node = RPC(inputs=("samples",), inner=Generate(n=8))
    inputs = [path("The answer is 5", 0.5)]
    ranked = await node.run(context(backend, Budget(completion_tokens=4)), inputs)
    assert [c.answer for c in ranked] == ["5"] and backend.requests == []
    with pytest.raises(BudgetExhausted):
        await RPC(inner=Generate(n=8)).run(context(backend, Budget(completion_tokens=4)), [])


@pytest.mark.vllm
async def test_real_rpc_ranks_answers_by_normalised_confidence(backend) -> None:  # type: ignore[no-untyped-def]
    from itc.runtime.budget import Ledger
    from itc.runtime.context import NodeContext, Runtime
    from itc.runtime.trace import Trace
    from itc.types import Problem

    problem = Problem(id="rpc", prompt="Tom has 3 apples and buys 4 more. How many apples?")
    ctx = NodeContext(problem, Runtime(backend=backend), Ledger(Budget()), Trace(problem_id="r"))
    template = "{question}\nSolve it step by step, then finish with: The answer is <number>."
    node = RPC(inner=Generate(n=6, max_tokens=48, temperature=0.8, seed=3, template=template))
    ranked = await node.run(ctx, [])
    assert ranked and ctx.ledger.spent.calls == 1
    shares = [c.scores["confidence"] for c in ranked]
    assert all(0.0 < s <= 1.0 for s in shares) and sum(shares) == pytest.approx(1.0)
    assert shares == sorted(shares, reverse=True)
    assert len({c.answer for c in ranked}) == len(ranked)  # one candidate per answer
    for c in ranked:
        assert c.token_logprobs  # the sampler was asked for logprobs
        assert c.scores["path_confidence"] == pytest.approx(math.exp(c.mean_logprob or 0.0))
        assert 0.0 < c.scores["path_confidence"] <= 1.0
