"""Property: no strategy ever spends past any limit of its budget, whatever the limits."""

from __future__ import annotations

import asyncio

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from itc.backends.scripted import ScriptedBackend
from itc.nodes import Strategy
from itc.runtime.steps import StepConfig
from itc.strategies.a_star import AStar
from itc.strategies.beam_search import BeamSearch
from itc.strategies.best_of_n import BestOfN
from itc.strategies.dvts import DVTS
from itc.strategies.early_pruning import EarlyPruning
from itc.strategies.generate import Generate
from itc.strategies.particle_filtering import ParticleFiltering
from itc.strategies.rpc import RPC
from itc.strategies.self_consistency import EarlyStop, SelfConsistency
from itc.types import Budget
from itc.verifiers.arithmetic import ArithmeticCheck
from itc.verifiers.judge import LLMJudge
from itc.verifiers.self_certainty import StepCertainty

from .helpers import context

STEPS = ["2 + 2 = 4 |", "2 + 2 = 5 |", "so the answer is 4. |", "more words to think |", "end"]
STEP = StepConfig(delimiter="|", max_tokens=12, max_steps=4)


def _strategy(name: str, width: int, reward_calls: bool) -> Strategy:
    reward = ArithmeticCheck() if not reward_calls else StepCertainty()
    if name == "particle_filtering":
        return ParticleFiltering(particles=width, reward=reward, step=STEP)
    if name == "a_star":
        return AStar(expand=width, reward=reward, step=STEP, max_expansions=8)
    if name == "beam_search":
        return BeamSearch(beams=2 * width, expand=2, reward=reward, step=STEP)
    if name == "dvts":
        return DVTS(beams=2 * width, expand=width, reward=reward, step=STEP)
    if name == "rpc":
        return RPC(inner=Generate(n=2 * width, max_tokens=20))
    if name == "early_pruning":
        return EarlyPruning(samples=2 * width, prefix_tokens=4, max_tokens=16, keep=0.5)
    if name == "self_consistency":
        return SelfConsistency(inner=Generate(n=width, max_tokens=20), early_stop=EarlyStop())
    return BestOfN(inner=Generate(n=width, max_tokens=20), scorer=LLMJudge())


NAMES = [
    "particle_filtering",
    "a_star",
    "beam_search",
    "dvts",
    "rpc",
    "early_pruning",
    "self_consistency",
    "best_of_n",
]


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.sampled_from(NAMES),
    width=st.integers(min_value=1, max_value=4),
    reward_calls=st.booleans(),
    tokens=st.one_of(st.none(), st.integers(min_value=1, max_value=400)),
    completion=st.one_of(st.none(), st.integers(min_value=1, max_value=200)),
    calls=st.one_of(st.none(), st.integers(min_value=1, max_value=12)),
    reward_limit=st.one_of(st.none(), st.integers(min_value=1, max_value=4)),
    seed=st.integers(min_value=0, max_value=10_000),
)
def test_no_strategy_spends_past_its_budget(
    name: str,
    width: int,
    reward_calls: bool,
    tokens: int | None,
    completion: int | None,
    calls: int | None,
    reward_limit: int | None,
    seed: int,
) -> None:
    budget = Budget(
        tokens=tokens, completion_tokens=completion, calls=calls, reward_calls=reward_limit
    )

    def script(request, index):  # type: ignore[no-untyped-def]
        return STEPS[(seed + index + len(request.prompt_ids or ())) % len(STEPS)]

    ctx = context(ScriptedBackend(script), budget)
    strategy = _strategy(name, width, reward_calls)

    async def go() -> None:
        try:
            await strategy.run(ctx, [])
        except Exception as error:  # a refusal may surface; overspending never may
            assert type(error).__name__ == "BudgetExhausted", error

    asyncio.run(go())
    refused = any(e.status in ("refused", "clipped") for e in ctx.trace.events)
    event(f"{name}: {'a limit bound' if refused else 'within every limit'}")
    spent = ctx.ledger.spent
    assert tokens is None or spent.total_tokens <= tokens
    assert completion is None or spent.completion_tokens <= completion
    assert calls is None or spent.calls <= calls
    assert reward_limit is None or spent.reward_calls <= reward_limit
