"""Compute-optimal allocation (Snell et al.): spend on a problem what its difficulty calls for."""

from __future__ import annotations

from bisect import bisect_right
from itertools import pairwise
from typing import Any, Literal

from pydantic import Field, model_validator

from itc.nodes import (
    Aggregator,
    AnswerNode,
    CostBound,
    Strategy,
    StrategyNode,
    total,
)
from itc.runtime.budget import BudgetExhausted
from itc.runtime.context import NodeContext
from itc.runtime.trace import SearchRound
from itc.strategies.generate import Generate
from itc.strategies.self_consistency import SelfConsistency, Tally, cast_votes
from itc.types import Candidate
from itc.verifiers.answers import MathAnswer

TEMPLATE = "{question}\nSolve it step by step, then finish with: The answer is <number>."
CHOICE = "compute_optimal"
"""The metadata key of what the node measured and chose."""


class ComputeOptimal(Strategy):
    """A few cheap `probe` samples estimate how hard the problem is; the strategy of that
    difficulty's bin in `table` then solves it.

    Difficulty is 1 minus the share of probe samples holding the most common final answer
    (grouped by `answer`; a sample stating none agrees with nobody), so it lies in [0, 1].
    The `bins` edges split [0, 1] into `len(bins) + 1` bins, easiest first: bin i holds
    difficulties from `bins[i-1]` up to, not including, `bins[i]`; `table[i]` is its strategy.
    A strategy's own settings (samples, tokens, steps) are the budget that bin gets, and the
    problem's hard budget still binds what is left after the probe.

    The probe is not wasted: when the chosen strategy is an `Aggregator` (self-consistency,
    best-of-N, ...) the probe samples, after this node's own graph inputs, are its inputs, so
    they vote or are ranked alongside what it samples; any other strategy starts afresh.
    The probe and the chosen strategy run as different rollouts, so they draw different
    samples. If the budget refuses the chosen strategy outright, the probe's vote answers.
    Every candidate carries `metadata["compute_optimal"]` (difficulty, agreement, bin,
    strategy), and the trace gets a one-line `search` entry saying the same.

    A table comes from a search: run `itc search` once per difficulty bin on problems the
    probe puts in that bin (or read one search's trials per bin: each trial's accuracy and
    tokens on those problems) and put each bin's best configuration, under the bin's share
    of the budget, in its row.
    """

    type: Literal["compute_optimal"] = "compute_optimal"
    probe: Generate = Field(
        default=Generate(n=3, max_tokens=256, template=TEMPLATE),
        description="The cheap samples whose agreement measures difficulty (n >= 2).",
    )
    answer: AnswerNode = Field(default=MathAnswer(), description="How probe answers are grouped.")
    bins: tuple[float, ...] = Field(
        default=(0.2, 0.5),
        description="Rising difficulty edges in (0, 1]; they make len(bins) + 1 bins.",
    )
    table: tuple[StrategyNode, ...] = Field(
        default=(
            Generate(n=1, temperature=0.0, max_tokens=320, template=TEMPLATE),
            SelfConsistency(inner=Generate(n=4, max_tokens=320, template=TEMPLATE)),
            SelfConsistency(inner=Generate(n=8, max_tokens=320, template=TEMPLATE)),
        ),
        min_length=1,
        description="One strategy per difficulty bin, easiest bin first.",
    )

    @model_validator(mode="after")
    def _one_strategy_per_bin(self) -> ComputeOptimal:
        if self.probe.n < 2:
            raise ValueError("probe.n: agreement needs at least 2 probe samples")
        edges = list(self.bins)
        if any(not 0.0 < edge <= 1.0 for edge in edges):
            raise ValueError(f"bins: every edge must lie in (0, 1], got {edges}")
        if any(a >= b for a, b in pairwise(edges)):
            raise ValueError(f"bins: edges must rise strictly, got {edges}")
        if len(self.table) != len(edges) + 1:
            raise ValueError(
                f"table: {len(edges)} bin edges make {len(edges) + 1} difficulty bins but the "
                f"table has {len(self.table)} strategies; give one per bin, easiest first"
            )
        return self

    def bin_of(self, difficulty: float) -> int:
        """The index of the bin (and table row) a difficulty falls in."""
        return bisect_right(self.bins, difficulty)

    def max_outputs(self) -> int | None:
        most = [s.max_outputs() for s in self.table]
        return None if None in most else max([self.probe.n, *(m for m in most if m is not None)])

    def wants_input_logprobs(self) -> bool:
        return any(isinstance(s, Aggregator) and s.wants_input_logprobs() for s in self.table)

    def worst_case(self, inputs: int | None = 0) -> CostBound | None:
        passed = None if inputs is None else inputs + self.probe.n
        rows = [s.worst_case(passed if isinstance(s, Aggregator) else 0) for s in self.table]
        if any(row is None for row in rows):
            return None
        bounded = [row for row in rows if row is not None]
        costliest = CostBound(
            completion_tokens=max(row.completion_tokens for row in bounded),
            calls=max(row.calls for row in bounded),
            reward_calls=max(row.reward_calls for row in bounded),
        )
        return total(self.probe.worst_case(), costliest)

    async def run(self, ctx: NodeContext, inputs: list[Candidate]) -> list[Candidate]:
        # Aggregator rows may score the probe samples from their token logprobs.
        wants = ctx.wants_logprobs or self.wants_input_logprobs()
        probing = ctx.child("probe", rollout=2 * ctx.rollout, wants_logprobs=wants)
        probed = await self.probe.run(probing, [])  # refused: nothing was paid for, say so
        tally = Tally()
        await cast_votes(ctx, tally, probed, self.answer)
        standings = tally.standings()
        agreement = standings[0][1] / tally.votes if standings else 0.0
        difficulty = 1.0 - agreement
        row = self.bin_of(difficulty)
        strategy = self.table[row]
        choice: dict[str, Any] = {
            "difficulty": round(difficulty, 4),
            "agreement": round(agreement, 4),
            "bin": row,
            "strategy": strategy.type,
        }
        ctx.trace.search.append(
            SearchRound(
                node=ctx.path,
                round=0,
                note=f"difficulty {difficulty:.2f} ({len(probed)} probe samples): "
                f"bin {row} of {len(self.table)}, {strategy.type}",
            )
        )
        passed = [*inputs, *probed] if isinstance(strategy, Aggregator) else []
        solving = ctx.child(f"bin{row}", rollout=2 * ctx.rollout + 1)
        try:
            chosen = await strategy.run(solving, passed)
        except BudgetExhausted as refusal:
            chosen = _vote(tally)
            choice["stop"] = f"budget: {refusal}"
        return [
            c.model_copy(update={"metadata": {**c.metadata, CHOICE: choice}}) for c in chosen
        ]


def _vote(tally: Tally) -> list[Candidate]:
    """The probe's answers, most common first (its samples, when none stated one)."""
    if not tally.members:
        return list(tally.voters)
    votes = tally.votes
    return [
        tally.members[key][0]
        .with_score("vote_share", weight / votes)
        .model_copy(update={"lineage": tuple(c.id for c in tally.members[key])})
        for key, weight in tally.standings()
    ]
