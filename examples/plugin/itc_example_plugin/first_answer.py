"""Sample one solution at a time until one states an answer."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from itc import Answer, Candidate, NodeContext, Strategy, StrategyNode
from itc.strategies import Generate
from itc.verifiers import MathAnswer


class FirstAnswer(Strategy):
    """Runs `inner` up to `attempts` times in turn and keeps the first candidate with an
    answer: cheap when the model usually answers, persistent when it rambles."""

    type: Literal["first_answer"] = "first_answer"
    inner: StrategyNode = Generate(n=1)
    attempts: int = Field(default=3, ge=1, le=64, description="How many tries at most.")
    answer: Answer = Field(default=MathAnswer(), description="What counts as an answer.")

    async def run(self, ctx: NodeContext, inputs: list[Candidate]) -> list[Candidate]:
        tried: list[Candidate] = []
        for attempt in range(self.attempts):
            for candidate in await self.inner.run(ctx.child("inner", rollout=attempt), []):
                found = self.answer.read(candidate)
                if found is not None:
                    return [candidate.model_copy(update={"answer": found})]
                tried.append(candidate)
        return tried[:1]
