"""Critic: a review (strengths and weaknesses) of each candidate, for the nodes after it."""

from __future__ import annotations

import asyncio
from typing import ClassVar, Literal

from pydantic import Field

from itc.backends.base import GenerationRequest, GenerationResult
from itc.nodes import CostBound
from itc.runtime.budget import BudgetExhausted
from itc.runtime.context import NodeContext
from itc.strategies.prompting import Writer
from itc.types import Candidate

CRITIQUE = "critique"
"""The metadata key a candidate's critique travels under (fusers and rankers read it)."""

TEMPLATE = (
    "Question:\n{question}\n\nResponse:\n{solution}\n\n"
    "Review this response to the question. List its strengths, then its weaknesses "
    "(mistakes, gaps, unclear steps). Be brief and specific; do not write a new solution."
)


async def settled(
    ctx: NodeContext, requests: list[GenerationRequest]
) -> list[GenerationResult | BudgetExhausted]:
    """Every request sent at once; a refused one leaves its refusal in its place, so the
    answers that were paid for are kept (any other error is raised once all have settled)."""
    outcomes = await asyncio.gather(*(ctx.generate(r) for r in requests), return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, BaseException) and not isinstance(outcome, BudgetExhausted):
            raise outcome
    return outcomes  # type: ignore[return-value]


class Critic(Writer):
    """One review per input candidate, all sent together; the candidates go on unchanged
    (same id, same text) with the review in `metadata["critique"]`.

    The question comes first in the prompt, so one problem's reviews share a prefix in the
    server's cache. A review the budget refuses is simply missing: its candidate still goes
    on, since it was paid for.
    """

    type: Literal["critic"] = "critic"
    placeholders: ClassVar[tuple[str, ...]] = ("question", "solution")
    template: str = Field(
        default=TEMPLATE, description="The request for a review: {question}, {solution}."
    )
    max_tokens: int = Field(default=256, ge=1, description="Most tokens one review may take.")
    temperature: float = Field(default=0.0, ge=0.0, description="Sampling temperature.")

    def worst_case(self, inputs: int | None = 0) -> CostBound | None:
        if inputs is None:
            return None
        return CostBound(completion_tokens=inputs * self.max_tokens, calls=inputs)

    def request(self, ctx: NodeContext, candidate: Candidate) -> GenerationRequest:
        return self.sample(
            ctx, self.messages(question=ctx.problem.question, solution=self.shown(candidate))
        )

    async def run(self, ctx: NodeContext, inputs: list[Candidate]) -> list[Candidate]:
        outcomes = await settled(ctx, [self.request(ctx, c) for c in inputs])
        return [
            c
            if isinstance(outcome, BudgetExhausted)
            else c.model_copy(
                update={"metadata": {**c.metadata, CRITIQUE: outcome.choices[0].text.strip()}}
            )
            for c, outcome in zip(inputs, outcomes, strict=True)
        ]
