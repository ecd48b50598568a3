"""Particle filtering: resampling statistics, the ESS trigger, finished particles, Gibbs."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from itc.backends.scripted import ScriptedBackend, prompt_text
from itc.runtime.steps import StepConfig
from itc.strategies.particle_filtering import (
    ParticleFiltering,
    effective_sample_size,
    multinomial,
    systematic,
    weights_from_rewards,
)
from itc.types import Budget
from itc.verifiers.arithmetic import ArithmeticCheck

from .helpers import context

PIPE = StepConfig(delimiter="|", max_tokens=20, max_steps=4, temperature=1.0)


def test_multinomial_frequencies_match_the_weights() -> None:
    weights = [0.5, 0.3, 0.15, 0.05]
    draws = 40_000
    counts = Counter(multinomial(weights, draws, random.Random(7)))
    chi2 = sum((counts[i] - draws * w) ** 2 / (draws * w) for i, w in enumerate(weights))
    assert chi2 < 16.3  # the 99.9% quantile of chi-square with 3 degrees of freedom


def test_systematic_gives_each_particle_floor_or_ceil_of_its_share() -> None:
    weights = [0.37, 0.21, 0.2, 0.12, 0.1]
    count = 8
    rng = random.Random(3)
    spread_systematic, spread_multinomial = [], []
    for _ in range(2_000):
        copies = Counter(systematic(weights, count, rng))
        for i, w in enumerate(weights):
            assert copies[i] in (int(count * w), int(count * w) + 1)
        spread_systematic.append(copies[0])
        spread_multinomial.append(Counter(multinomial(weights, count, rng))[0])

    def variance(xs: list[int]) -> float:
        mean = sum(xs) / len(xs)
        return sum((x - mean) ** 2 for x in xs) / len(xs)

    # Both are unbiased; systematic resampling adds far less noise.
    assert abs(sum(spread_systematic) / 2_000 - count * weights[0]) < 0.05
    assert variance(spread_systematic) < variance(spread_multinomial) / 4


def test_weights_are_the_rewards_odds_to_the_power_one_over_t() -> None:
    rewards = [0.9, 0.5, 0.2]
    for temperature in (0.5, 1.0, 2.0):
        weights = weights_from_rewards(rewards, temperature)
        odds = [(r / (1 - r)) ** (1 / temperature) for r in rewards]
        assert weights == pytest.approx([o / sum(odds) for o in odds])
    assert effective_sample_size([0.25] * 4) == pytest.approx(4)
    assert effective_sample_size([1.0, 0.0, 0.0]) == pytest.approx(1)


def _steps(good: str = "2 + 2 = 4 |", bad: str = "2 + 2 = 5 |", final: str = "answer is 4. |"):  # type: ignore[no-untyped-def]
    """Depth 1: alternate right and wrong arithmetic; depth 2: the answer."""

    def script(request, index):  # type: ignore[no-untyped-def]
        depth = prompt_text(request, backend.vocabulary).count("|")
        if depth == 0:
            return good if index % 2 == 0 else bad
        return final

    backend = ScriptedBackend(script)
    return backend


async def test_resampling_moves_particles_to_right_arithmetic() -> None:
    backend = _steps()
    ctx = context(backend)
    search = ParticleFiltering(particles=4, reward=ArithmeticCheck(), step=PIPE)
    ranked = await search.run(ctx, [])
    first, second = ctx.trace.search[:2]
    assert "resampled" in (first.note or "")
    kept = {p.id: p.copies for p in first.partials}
    rewards = {p.id: p.reward for p in first.partials}
    # Wrong steps (reward 0) lose every place; right ones (reward 1) share all four.
    assert sum(c for i, c in kept.items() if rewards[i] == 1.0) == 4
    assert all(c == 0 for i, c in kept.items() if rewards[i] == 0.0)
    # Copies of one particle were extended by one request with n = copies.
    assert sorted(r.n for r in backend.requests[1:]) == [2, 2]
    assert ranked[0].answer == "4" and all("5" not in c.text for c in ranked)
    assert second.note == "all finished"


async def test_the_ess_threshold_decides_whether_to_resample() -> None:
    ctx = context(_steps(bad="2 + 2 = 4 |"))  # every particle equally good: ESS = N
    await ParticleFiltering(particles=4, reward=ArithmeticCheck(), step=PIPE).run(ctx, [])
    assert (ctx.trace.search[0].note or "").startswith("kept")
    ctx = context(_steps())
    low = ParticleFiltering(particles=4, reward=ArithmeticCheck(), step=PIPE, ess_threshold=0.4)
    await low.run(ctx, [])
    assert (ctx.trace.search[0].note or "").startswith("kept")  # ESS 2 >= 0.4 x 4
    ctx = context(_steps())
    high = ParticleFiltering(particles=4, reward=ArithmeticCheck(), step=PIPE, ess_threshold=0.6)
    await high.run(ctx, [])
    assert (ctx.trace.search[0].note or "").startswith("resampled")  # ESS 2 < 0.6 x 4


async def test_finished_particles_stay_in_the_pool_and_are_never_extended() -> None:
    backend = _steps(good="answer is 4. |", bad="3 + 3 = 6 |", final="3 + 3 = 6 |")
    ctx = context(backend)
    search = ParticleFiltering(
        particles=4,
        reward=ArithmeticCheck(),
        step=PIPE.model_copy(update={"max_steps": 3}),
        template="{question}",
    )
    ranked = await search.run(ctx, [])
    finished_ids = {
        p.id for r in ctx.trace.search for p in r.partials if p.finished and p.steps == 1
    }
    assert finished_ids
    sent = [prompt_text(r, backend.vocabulary) for r in backend.requests[1:]]
    assert sent and all("answer is" not in s for s in sent)
    assert ranked and all(c.finish_reason is not None for c in ranked)


async def test_particle_gibbs_keeps_the_reference_particle() -> None:
    backend = _steps()
    ctx = context(backend)
    search = ParticleFiltering(particles=3, reward=ArithmeticCheck(), step=PIPE, iterations=2)
    ranked = await search.run(ctx, [])
    second = [r for r in ctx.trace.search if r.node.endswith("iteration:1")]
    assert second, "the second iteration logged its rounds"
    first_final = {p.id for r in ctx.trace.search if r.node.endswith("iteration:0")
                   for p in r.partials}
    # Slot 0 of every round in iteration 2 is a prefix of iteration 1's reference: never
    # resampled away, it always holds a place.
    for round_ in second:
        kept = [p for p in round_.partials if p.id in first_final or p.parent in first_final]
        assert kept and all(p.copies >= 1 for p in kept[:1])
    assert ranked and ranked[0].answer == "4"


async def test_the_answer_weights_give_the_expected_accuracy() -> None:
    ctx = context(_steps(final="answer is 5. |", bad="2 + 2 = 4 |"))
    ranked = await ParticleFiltering(particles=4, reward=ArithmeticCheck(), step=PIPE).run(ctx, [])
    weights = ranked[0].metadata["answer_weights"]
    assert weights == pytest.approx({"5": 1.0})


async def test_budget_stops_the_filter_within_its_limit() -> None:
    for budget in (Budget(calls=3), Budget(completion_tokens=15), Budget(calls=1)):
        backend = _steps()
        ctx = context(backend, budget)
        ranked = await ParticleFiltering(
            particles=4, reward=ArithmeticCheck(), step=PIPE
        ).run(ctx, [])
        spent = ctx.ledger.spent
        assert budget.calls is None or spent.calls <= budget.calls
        limit = budget.completion_tokens
        assert limit is None or spent.completion_tokens <= limit
        assert ranked  # it answers from the particles it has


def _real_context(backend, prompt: str, budget: Budget | None = None):  # type: ignore[no-untyped-def]
    from itc.runtime.budget import Ledger
    from itc.runtime.context import NodeContext, Runtime
    from itc.runtime.trace import Trace
    from itc.types import Problem

    problem = Problem(id="pf", prompt=prompt, answer="14")
    return NodeContext(
        problem, Runtime(backend=backend), Ledger(budget or Budget()), Trace(problem_id="pf")
    )


@pytest.mark.vllm
async def test_real_particle_filtering_hits_the_prefix_cache_within_budget(backend) -> None:  # type: ignore[no-untyped-def]
    # A shared prefix of several KV blocks, as a few-shot prompt or a long problem has (the
    # CPU build caches whole blocks only, so a one-line prompt would show no hits at all).
    facts = " ".join(f"Shop {i} sells apples at {i + 2} cents each." for i in range(60))
    prompt = f"{facts}\nTom has 3 apples and buys 4 more, then doubles them. How many?"
    budget = Budget(completion_tokens=600)
    ctx = _real_context(backend, prompt, budget)
    search = ParticleFiltering(
        particles=4,
        reward=ArithmeticCheck(),
        step=StepConfig(delimiter="\n", max_tokens=40, max_steps=5, temperature=0.8),
        template="{question}\nSolve it step by step, then finish with: The answer is <number>.",
    )
    before = await backend.metrics()
    ranked = await search.run(ctx, [])
    after = await backend.metrics()
    hits = after["vllm:prefix_cache_hits_total"] - before["vllm:prefix_cache_hits_total"]
    queries = after["vllm:prefix_cache_queries_total"] - before["vllm:prefix_cache_queries_total"]
    assert queries > 0 and hits / queries > 0.5
    assert ranked and ctx.ledger.spent.completion_tokens <= 600
    rounds = ctx.trace.search
    assert len(rounds) >= 2 and all(p.reward is not None for r in rounds for p in r.partials)
    # Each round's places add up to the particle count; weights sum to one.
    for round_ in rounds:
        assert sum(p.copies for p in round_.partials) == 4
        assert sum(p.weight or 0.0 for p in round_.partials) == pytest.approx(1.0)
    step_calls = [e for e in ctx.trace.events if e.node.endswith("step") and e.status != "refused"]
    assert len(step_calls) >= 2


@pytest.mark.vllm
async def test_real_particle_filtering_prefers_right_arithmetic(backend) -> None:  # type: ignore[no-untyped-def]
    ctx = _real_context(backend, "What is 3 + 4? Then multiply the result by 2.")
    search = ParticleFiltering(
        particles=6,
        reward=ArithmeticCheck(),
        step=StepConfig(delimiter="\n", max_tokens=40, max_steps=4, temperature=1.0),
        template="{question}\nSolve it step by step, then finish with: The answer is <number>.",
    )
    ranked = await search.run(ctx, [])
    assert ranked
    # Every resampling gave no place to a particle whose latest arithmetic was wrong while
    # some particle's held (a zero reward has odds 0 against any positive reward).
    for round_ in ctx.trace.search:
        if "resampled" not in (round_.note or ""):
            continue
        best = max(p.reward or 0.0 for p in round_.partials)
        for p in round_.partials:
            if p.reward == 0.0 and best > 0.0:
                assert p.copies == 0
    # When any final particle states no false equation, the winner is one of those.
    final = ctx.trace.search[-1].partials
    if any((p.reward or 0.0) > 0.0 for p in final if p.finished):
        assert ranked[0].scores["reward"] > 0.0
