"""Verify: a Yes/No judge filters the candidates (the `verify` node)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from itc.nodes import CostBound, Strategy
from itc.runtime.budget import BudgetExhausted
from itc.runtime.context import NodeContext
from itc.strategies.critic import settled
from itc.types import Candidate
from itc.verifiers.judge import LLMJudge, _verdict


class Verify(Strategy):
    """Keeps the candidates a judge passes: P(Yes) >= `threshold`, read from the logprobs of
    one constrained token per candidate (all sent together, the question first so they
    share a cached prefix), best P(Yes) first.

    The judge is a reward model, so its calls count against `Budget.reward_calls` as well as
    `calls`. When none passes, the one most likely to is kept anyway (a pipeline still
    answers), noted in `metadata["verify"]`. A candidate whose verdict the budget refused is
    dropped unless no verdict came back at all; then every input goes on, noted unverified.
    Each request is `judge`'s own, so a judge configured for `llm_judge` asks the same here.
    """

    type: Literal["verify"] = "verify"
    threshold: float = Field(default=0.5, ge=0.0, le=1.0, description="Least P(Yes) kept.")
    judge: LLMJudge = Field(
        default=LLMJudge(),
        description="The Yes/No judge: its template, system message and what it reads.",
    )

    def worst_case(self, inputs: int | None = 0) -> CostBound | None:
        return self.judge.worst_case(inputs)

    async def run(self, ctx: NodeContext, inputs: list[Candidate]) -> list[Candidate]:
        if not inputs:
            return []
        judging = ctx.child("judge", reward=True)
        outcomes = await settled(judging, [self.judge.request(ctx, c) for c in inputs])
        judged = [
            c.with_score("verify", _verdict(o))
            for c, o in zip(inputs, outcomes, strict=True)
            if not isinstance(o, BudgetExhausted)
        ]
        if not judged:
            refusal = next(o for o in outcomes if isinstance(o, BudgetExhausted))
            note = f"unverified: {refusal}"
            return [c.model_copy(update={"metadata": {**c.metadata, "verify": note}})
                    for c in inputs]
        ranked = sorted(judged, key=lambda c: c.scores["verify"], reverse=True)
        passed = [c for c in ranked if c.scores["verify"] >= self.threshold]
        if not passed:
            best = ranked[0]
            note = f"none passed: kept the likeliest (P(Yes) {best.scores['verify']:.3f})"
            passed = [best.model_copy(update={"metadata": {**best.metadata, "verify": note}})]
        ctx.log_candidates(ranked, kept=[c.id for c in passed])
        return passed
