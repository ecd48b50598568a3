"""Best-of-N: score every candidate, keep the best."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from itc.nodes import Aggregator, CostBound, ScorerNode, StrategyNode, total
from itc.runtime.budget import BudgetExhausted
from itc.runtime.context import NodeContext
from itc.strategies.generate import Generate
from itc.types import Candidate
from itc.verifiers.self_certainty import SelfCertainty


class BestOfN(Aggregator):
    """Ranks its pipeline inputs plus whatever `inner` proposes, by `scorer`.

    Given graph `inputs` and no `inner`, it is a pure ranker over them (generate -> rank).
    """

    type: Literal["best_of_n"] = "best_of_n"
    inner: StrategyNode | None = Field(
        default=Generate(n=4), description="Proposes the candidates (none: rank `inputs` only)."
    )
    scorer: ScorerNode = Field(default=SelfCertainty(), description="Scores each candidate.")
    keep: int = Field(default=1, ge=1, description="How many of the best to pass on.")

    def max_outputs(self) -> int:
        return self.keep

    def worst_case(self, inputs: int | None = 0) -> CostBound | None:
        if self.inner is None:
            return self.scorer.worst_case(inputs)
        proposed = self.inner.max_outputs()
        scored = None if inputs is None or proposed is None else inputs + proposed
        return total(self.inner.worst_case(), self.scorer.worst_case(scored))

    def wants_input_logprobs(self) -> bool:
        return self.scorer.needs_token_logprobs

    async def run(self, ctx: NodeContext, inputs: list[Candidate]) -> list[Candidate]:
        candidates = list(inputs)
        if self.inner is not None:
            wants = ctx.wants_logprobs or self.wants_input_logprobs()
            candidates += await self.inner.run(ctx.child("inner", wants_logprobs=wants), [])
        if not candidates:
            return []
        try:
            scores = await self.scorer.score(self.scorer.context(ctx), candidates)
        except BudgetExhausted as refusal:
            # The samples are paid for: keep them, unranked, and say why (the trace holds the
            # refused scorer calls, so the result reports the limit too).
            note = f"unscored: {refusal}"
            return [c.model_copy(update={"metadata": {**c.metadata, "rank": note}})
                    for c in candidates[: self.keep]]
        ranked = sorted(
            (c.with_score(self.scorer.type, s) for c, s in zip(candidates, scores, strict=True)),
            key=lambda c: c.scores[self.scorer.type],
            reverse=True,
        )
        ctx.log_candidates(ranked, kept=[c.id for c in ranked[: self.keep]])
        return ranked[: self.keep]
