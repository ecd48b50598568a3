"""Refine: critique, then revise, a few rounds at most, stopping once good enough."""

from __future__ import annotations

import asyncio
from typing import ClassVar, Literal

from pydantic import Field

from itc.backends.base import GenerationRequest
from itc.nodes import CostBound, ScorerNode, total
from itc.runtime.budget import BudgetExhausted
from itc.runtime.context import NodeContext
from itc.strategies.critic import Critic
from itc.strategies.generate import sampled
from itc.strategies.prompting import Writer
from itc.types import Candidate

TEMPLATE = (
    "Question:\n{question}\n\nA response to it:\n{solution}\n\nA review of that response:\n"
    "{critique}\n\nWrite an improved response to the question that fixes the weaknesses the "
    "review names. Do not mention the review."
)


class Refine(Writer):
    """Each input in turn is reviewed by `critic` and revised, at most `max_rounds` times;
    inputs are refined concurrently, each round after the last.

    With a `scorer`, the input and each revision are scored: the loop stops as soon as a
    version scores at least `threshold` (an input that already does costs no revision), and
    the best version seen is kept, so a revision that made things worse is dropped. Without
    one, nothing tells versions apart and the latest revision is kept. When the budget
    refuses a call the best version so far goes on. `metadata["refine"]` says how many
    rounds ran and why the loop stopped.
    """

    type: Literal["refine"] = "refine"
    placeholders: ClassVar[tuple[str, ...]] = ("question", "solution", "critique")
    critic: Critic = Field(default=Critic(), description="Writes each round's review.")
    template: str = Field(
        default=TEMPLATE, description="The revision request: {question}, {solution}, {critique}."
    )
    max_rounds: int = Field(default=2, ge=1, le=8, description="Most critique-revise rounds.")
    scorer: ScorerNode | None = Field(
        default=None, description="Scores each version (none: keep the latest revision)."
    )
    threshold: float = Field(
        default=0.9, ge=0.0, le=1.0, description="Stop once a version scores at least this."
    )

    def wants_input_logprobs(self) -> bool:
        return self.scorer is not None and self.scorer.needs_token_logprobs

    def worst_case(self, inputs: int | None = 0) -> CostBound | None:
        if inputs is None:
            return None
        rounds = self.max_rounds
        revising = CostBound(completion_tokens=self.critic.max_tokens + self.max_tokens, calls=2)
        scoring = CostBound() if self.scorer is None else self.scorer.worst_case(1)
        one = total(revising * rounds, None if scoring is None else scoring * (rounds + 1))
        return None if one is None else one * inputs

    def request(self, ctx: NodeContext, candidate: Candidate, critique: str) -> GenerationRequest:
        messages = self.messages(
            question=ctx.problem.question, solution=self.shown(candidate), critique=critique
        )
        logprobs = ctx.wants_logprobs or self.wants_input_logprobs()
        return self.sample(ctx, messages, logprobs=logprobs)

    async def run(self, ctx: NodeContext, inputs: list[Candidate]) -> list[Candidate]:
        refined = await asyncio.gather(*(self._refine(ctx, c) for c in inputs))
        if self.scorer is None:
            return list(refined)
        name = self.scorer.type
        return sorted(refined, key=lambda c: c.scores.get(name, float("-inf")), reverse=True)

    async def _score(self, ctx: NodeContext, candidate: Candidate) -> Candidate:
        assert self.scorer is not None
        [score] = await self.scorer.score(self.scorer.context(ctx), [candidate])
        return candidate.with_score(self.scorer.type, score)

    def _good_enough(self, candidate: Candidate) -> bool:
        return self.scorer is not None and candidate.scores[self.scorer.type] >= self.threshold

    async def _refine(self, ctx: NodeContext, candidate: Candidate) -> Candidate:
        best = current = candidate
        rounds = 0
        try:
            if self.scorer is not None:
                best = current = await self._score(ctx, candidate)
            while rounds < self.max_rounds and not self._good_enough(best):
                review = await ctx.child("critic").generate(self.critic.request(ctx, current))
                revising = ctx.child("revise")
                request = self.request(ctx, current, review.choices[0].text.strip())
                [revised] = sampled(revising, await revising.generate(request))
                rounds += 1
                metadata = {**revised.metadata, "round": rounds}
                current = revised.model_copy(
                    update={"lineage": (current.id,), "metadata": metadata}
                )
                if self.scorer is None:
                    best = current
                    continue
                current = await self._score(ctx, current)
                if current.scores[self.scorer.type] > best.scores[self.scorer.type]:
                    best = current
        except BudgetExhausted as refusal:
            stop = f"budget: {refusal}"
        else:
            stop = "threshold" if self._good_enough(best) else "max_rounds"
        return best.model_copy(
            update={"metadata": {**best.metadata, "refine": {"rounds": rounds, "stop": stop}}}
        )
