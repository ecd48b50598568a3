"""Free scorers: the model's own confidence in what it wrote, whole or step by step."""

from __future__ import annotations

import math
from typing import ClassVar, Literal

from pydantic import Field

from itc.nodes import Aggregate, CostBound, Scorer, StepScorer
from itc.runtime.context import NodeContext
from itc.runtime.steps import Partial
from itc.types import Candidate


class SelfCertainty(Scorer):
    """exp(mean token logprob) of the candidate: in (0, 1], no extra LLM call."""

    type: Literal["self_certainty"] = "self_certainty"
    needs_token_logprobs: ClassVar[bool] = True

    async def score(self, ctx: NodeContext, candidates: list[Candidate]) -> list[float]:
        return [
            0.0 if c.mean_logprob is None else math.exp(c.mean_logprob) for c in candidates
        ]

    def worst_case(self, candidates: int | None) -> CostBound:
        return CostBound()


class StepCertainty(StepScorer):
    """A free process reward: exp(mean token logprob) of each step, from the logprobs the
    step came back with (particle filtering's weights when no reward model is given)."""

    type: Literal["step_certainty"] = "step_certainty"
    aggregate: Aggregate = Field(default="mean", description="How step rewards fold into one.")
    needs_token_logprobs: ClassVar[bool] = True

    async def score_steps(self, ctx: NodeContext, prefixes: list[Partial]) -> list[float]:
        return [
            math.exp(p.step_logprobs[-1])
            if p.step_logprobs and p.step_logprobs[-1] is not None
            else 0.5
            for p in prefixes
        ]

    def worst_case_steps(self, steps: int) -> CostBound:
        return CostBound()

    async def score(self, ctx: NodeContext, candidates: list[Candidate]) -> list[float]:
        return await SelfCertainty().score(ctx, candidates)
