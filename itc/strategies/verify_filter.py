"""Verify: a Yes/No judge filters the candidates (the `verify` node)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from itc.backends.base import GenerationRequest
from itc.nodes import CostBound, Strategy, check_template
from itc.runtime.budget import BudgetExhausted
from itc.runtime.context import NodeContext
from itc.strategies.critic import settled
from itc.types import Candidate
from itc.verifiers.judge import DEFAULT_TEMPLATE, _judge_messages, _verdict, _verdict_request


class Verify(Strategy):
    """Keeps the candidates a judge passes: P(Yes) >= `threshold`, read from the logprobs of
    one constrained token per candidate (all sent together, the question first so they
    share a cached prefix), best P(Yes) first.

    The judge is a reward model, so its calls count against `Budget.reward_calls` as well as
    `calls`. When none passes, the one most likely to is kept anyway (a pipeline still
    answers), noted in `metadata["verify"]`. A candidate whose verdict the budget refused is
    dropped unless no verdict came back at all; then every input goes on, noted unverified.
    """

    type: Literal["verify"] = "verify"
    threshold: float = Field(default=0.5, ge=0.0, le=1.0, description="Least P(Yes) kept.")
    template: str = Field(
        default=DEFAULT_TEMPLATE, description="The question to the judge: {question}, {solution}."
    )
    system: str | None = Field(default=None, description="A system message for the judge.")
    top_logprobs: int = Field(
        default=20, ge=2, le=20, description="Alternatives read for the Yes/No verdict."
    )
    max_solution_chars: int = Field(
        default=6000, ge=100, description="Only the end of a longer solution is shown."
    )

    @field_validator("template")
    @classmethod
    def _question_and_solution(cls, template: str) -> str:
        return check_template(template, {"question", "solution"})

    def worst_case(self, inputs: int | None = 0) -> CostBound | None:
        if inputs is None:
            return None
        return CostBound(completion_tokens=inputs, calls=inputs, reward_calls=inputs)

    def request(self, ctx: NodeContext, candidate: Candidate) -> GenerationRequest:
        prompt = self.template.format(
            question=ctx.problem.question, solution=candidate.text[-self.max_solution_chars :]
        )
        return _verdict_request(_judge_messages(prompt, self.system), self.top_logprobs)

    async def run(self, ctx: NodeContext, inputs: list[Candidate]) -> list[Candidate]:
        if not inputs:
            return []
        judging = ctx.child("judge", reward=True)
        outcomes = await settled(judging, [self.request(ctx, c) for c in inputs])
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
