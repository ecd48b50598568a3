"""Critic: a review (strengths and weaknesses) of each candidate, for the nodes after it."""

from __future__ import annotations

import asyncio
from typing import Literal

from pydantic import Field, field_validator

from itc.backends.base import GenerationRequest, GenerationResult
from itc.nodes import CostBound, Strategy, check_template
from itc.runtime.budget import BudgetExhausted
from itc.runtime.context import NodeContext
from itc.types import Candidate, Message

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


class Critic(Strategy):
    """One review per input candidate, all sent together; the candidates go on unchanged
    (same id, same text) with the review in `metadata["critique"]`.

    The question comes first in the prompt, so one problem's reviews share a prefix in the
    server's cache. A review the budget refuses is simply missing: its candidate still goes
    on, since it was paid for.
    """

    type: Literal["critic"] = "critic"
    template: str = Field(
        default=TEMPLATE, description="The request for a review: {question}, {solution}."
    )
    system: str | None = Field(default=None, description="A system message for the critic.")
    max_tokens: int = Field(default=256, ge=1, description="Most tokens one review may take.")
    temperature: float = Field(default=0.0, ge=0.0, description="Sampling temperature.")
    seed: int | None = Field(
        default=0, description="Base seed; each rollout gets its own (null: unseeded, uncached)."
    )
    max_solution_chars: int = Field(
        default=4000, ge=100, description="Only the end of a longer candidate is shown."
    )

    @field_validator("template")
    @classmethod
    def _question_and_solution(cls, template: str) -> str:
        return check_template(template, {"question", "solution"})

    def worst_case(self, inputs: int | None = 0) -> CostBound | None:
        if inputs is None:
            return None
        return CostBound(completion_tokens=inputs * self.max_tokens, calls=inputs)

    def request(self, ctx: NodeContext, candidate: Candidate) -> GenerationRequest:
        prompt = self.template.format(
            question=ctx.problem.question, solution=candidate.text[-self.max_solution_chars :]
        )
        user = Message(role="user", content=prompt)
        messages = (Message(role="system", content=self.system), user) if self.system else (user,)
        return GenerationRequest(
            messages=messages,
            max_tokens=self.max_tokens,
            temperature=self.temperature,
            seed=ctx.seed_for(self.seed),
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
