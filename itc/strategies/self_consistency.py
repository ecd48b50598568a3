"""Self-consistency: sample several solutions, answer with the most common final answer."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from itc.nodes import (
    Aggregator,
    AnswerNode,
    CostBound,
    ScorerNode,
    Strategy,
    StrategyNode,
    total,
)
from itc.runtime.budget import BudgetExhausted
from itc.runtime.context import NodeContext
from itc.strategies.generate import Generate
from itc.types import Candidate
from itc.verifiers.answers import MathAnswer


class EarlyStop(BaseModel):
    """When to stop sampling and cancel what is still in flight.

    The vote always stops once the leader cannot be overtaken by the votes still to come;
    `agreement` also stops it once the leader holds that share of at least `min_votes`.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    min_votes: int = Field(default=3, ge=1, description="Votes counted before any stop.")
    agreement: float | None = Field(
        default=None, gt=0.5, le=1.0, description="Also stop once the leader holds this share."
    )


class Tally:
    """Vote arithmetic, kept apart from the async plumbing so it can be tested alone."""

    def __init__(self) -> None:
        self.weight: dict[str, float] = defaultdict(float)
        self.members: dict[str, list[Candidate]] = defaultdict(list)
        self.voters: list[Candidate] = []
        """Every candidate counted, those with no answer too."""

    @property
    def votes(self) -> int:
        return len(self.voters)

    def add(self, key: str | None, candidate: Candidate, weight: float) -> None:
        self.voters.append(candidate)
        if key is None:
            return
        self.weight[key] += weight
        self.members[key].append(candidate)

    def standings(self) -> list[tuple[str, float]]:
        # Ties go to the answer seen first, which keeps the result reproducible.
        order = {key: i for i, key in enumerate(self.members)}
        return sorted(self.weight.items(), key=lambda kv: (-kv[1], order[kv[0]]))

    def decided(self, remaining_weight: float, rule: EarlyStop) -> bool:
        standings = self.standings()
        if not standings or self.votes < rule.min_votes:
            return False
        leader = standings[0][1]
        runner_up = standings[1][1] if len(standings) > 1 else 0.0
        if leader > runner_up + remaining_weight:
            return True
        total = sum(w for _, w in standings)
        return rule.agreement is not None and total > 0 and leader / total >= rule.agreement


async def cast_votes(
    ctx: NodeContext,
    tally: Tally,
    candidates: list[Candidate],
    answer: AnswerNode,
    weights: list[float] | None = None,
) -> None:
    """Each candidate's final answer read and grouped by its key (one vote each unless
    weighted): the one way every vote here counts answers."""
    given = [1.0] * len(candidates) if weights is None else weights
    for candidate, weight in zip(candidates, given, strict=True):
        read = answer.read(candidate)
        key = None if read is None else await answer.key(read, ctx.grader)
        tally.add(key, candidate.model_copy(update={"answer": read}), weight)


class SelfConsistency(Aggregator):
    """Votes over the final answers of its inputs plus `repeats` runs of `inner`.

    With `scorer` the vote is weighted by its scores; with `early_stop` the runs still in
    flight are cancelled as soon as the outcome is settled. One request for `n` samples cannot
    stop early, so with `early_stop` a single `Generate(n=k)` is sampled as k runs of n=1
    (sent together, so the server still shares their prompt's prefix).
    """

    type: Literal["self_consistency"] = "self_consistency"
    inner: StrategyNode | None = Field(
        default=Generate(n=8), description="Proposes the voters (none: vote over `inputs`)."
    )
    repeats: int = Field(default=1, ge=1, le=4096, description="Runs of `inner`, in parallel.")
    answer: AnswerNode = Field(default=MathAnswer(), description="How answers are grouped.")
    scorer: ScorerNode | None = Field(default=None, description="Weights each vote by its score.")
    early_stop: EarlyStop | None = Field(
        default=None, description="Stop sampling once the vote is decided."
    )

    def max_outputs(self) -> int | None:
        return None

    def worst_case(self, inputs: int | None = 0) -> CostBound | None:
        runs, repeats, voters = CostBound(), 0, inputs
        if self.inner is not None:
            inner, repeats = self.runs()
            runs, per_run = inner.worst_case(), inner.max_outputs()
            voters = None if voters is None or per_run is None else voters + repeats * per_run
        scoring = CostBound() if self.scorer is None else self.scorer.worst_case(voters)
        return total(None if runs is None else runs * repeats, scoring)

    def wants_input_logprobs(self) -> bool:
        return self.scorer is not None and self.scorer.needs_token_logprobs

    async def run(self, ctx: NodeContext, inputs: list[Candidate]) -> list[Candidate]:
        tally = Tally()
        await self._count(ctx, tally, inputs)
        if self.inner is not None:
            await self._sample(ctx, tally)
        ranked = self._ranked(tally)
        ctx.log_candidates(tally.voters, kept=[c.id for c in ranked[:1]])
        return ranked

    async def _count(self, ctx: NodeContext, tally: Tally, candidates: list[Candidate]) -> None:
        if not candidates:
            return
        weights = [1.0] * len(candidates)
        if self.scorer is not None:
            try:
                weights = await self.scorer.score(
                    self.scorer.context(ctx), candidates
                )
            except BudgetExhausted:
                pass  # the samples still vote, one vote each; the trace shows the refusal
        await cast_votes(ctx, tally, candidates, self.answer, weights)

    def runs(self) -> tuple[Strategy, int]:
        """What one run samples and how many runs there are."""
        assert self.inner is not None
        if (
            self.early_stop is not None
            and self.repeats == 1
            and isinstance(self.inner, Generate)
            and self.inner.n > 1
        ):
            return self.inner.model_copy(update={"n": 1}), self.inner.n
        return self.inner, self.repeats

    async def _sample(self, ctx: NodeContext, tally: Tally) -> None:
        inner, repeats = self.runs()
        per_run = inner.max_outputs()

        async def one_run(rollout: int) -> None:
            run_ctx = ctx.child(
                "inner",
                rollout=ctx.rollout * repeats + rollout,
                wants_logprobs=ctx.wants_logprobs or self.wants_input_logprobs(),
                # Runs an early stop may cancel stream, so they are charged what they produced.
                streams=ctx.streams or self.early_stop is not None,
            )
            await self._count(ctx, tally, await inner.run(run_ctx, []))

        pending = {asyncio.create_task(one_run(i)) for i in range(repeats)}
        refused: BudgetExhausted | None = None
        try:
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    error = task.exception()
                    if isinstance(error, BudgetExhausted):
                        refused = refused or error
                    elif error is not None:
                        raise error
                if self.early_stop is not None and per_run is not None:
                    if tally.decided(len(pending) * per_run * 1.0, self.early_stop):
                        break
        finally:
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if tally.votes == 0 and refused is not None:
            raise refused  # not one run fit: say which limit stopped them

    def _ranked(self, tally: Tally) -> list[Candidate]:
        total = sum(w for _, w in tally.standings()) or 1.0
        ranked = []
        for key, weight in tally.standings():
            members = tally.members[key]
            best = max(members, key=lambda c: c.mean_logprob or float("-inf"))
            ranked.append(
                best.with_score("vote_share", weight / total).model_copy(
                    update={"lineage": tuple(c.id for c in members)}
                )
            )
        return ranked
