"""An LLM judge that reads its verdict from logprobs instead of parsing free text."""

from __future__ import annotations

import asyncio
import math
from typing import Literal

from pydantic import Field, field_validator

from itc.backends.base import GenerationRequest, StructuredOutputs
from itc.nodes import Scorer, check_template
from itc.runtime.context import NodeContext
from itc.types import Candidate, Message

DEFAULT_TEMPLATE = (
    "Question:\n{question}\n\nProposed solution:\n{solution}\n\n"
    "Is the proposed solution correct? Answer Yes or No."
)


def p_yes(top_logprobs: dict[str, float], yes: str = "yes", no: str = "no") -> float:
    """P(yes) / (P(yes) + P(no)) over the first token's alternatives.

    Spelling variants (" Yes", "YES") are pooled. A verdict missing from the top list is
    bounded by the smallest probability shown, so one-sided evidence stays one-sided.
    """
    mass = {yes: 0.0, no: 0.0}
    for token, logprob in top_logprobs.items():
        word = token.strip().lower()
        if word in mass:
            mass[word] += math.exp(logprob)
    if mass[yes] == mass[no] == 0.0:
        return 0.5
    floor = math.exp(min(top_logprobs.values())) if top_logprobs else 0.0
    p, q = mass[yes] or floor, mass[no] or floor
    return p / (p + q)


class LLMJudge(Scorer):
    """Asks the served model whether each candidate is correct: one token, read as P(Yes).

    The question comes first in the prompt so all judgements of one problem share a prefix
    that the server's prefix cache reuses; they are sent together.
    """

    type: Literal["llm_judge"] = "llm_judge"
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

    def request(self, ctx: NodeContext, candidate: Candidate) -> GenerationRequest:
        prompt = self.template.format(
            question=ctx.problem.question, solution=candidate.text[-self.max_solution_chars :]
        )
        messages = [Message(role="user", content=prompt)]
        if self.system:
            messages.insert(0, Message(role="system", content=self.system))
        return GenerationRequest(
            messages=tuple(messages),
            max_tokens=1,
            temperature=0.0,
            top_logprobs=self.top_logprobs,
            structured_outputs=StructuredOutputs(choice=("Yes", "No")),
        )

    async def score(self, ctx: NodeContext, candidates: list[Candidate]) -> list[float]:
        async def judge(candidate: Candidate) -> float:
            result = await ctx.generate(self.request(ctx, candidate))
            tops = result.choices[0].top_logprobs
            return p_yes(tops[0]) if tops else 0.5

        return list(await asyncio.gather(*(judge(c) for c in candidates)))
