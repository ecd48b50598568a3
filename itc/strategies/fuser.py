"""Fuser: writes new candidates from several, keeping what they get right."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from itc.backends.base import GenerationRequest
from itc.nodes import CostBound
from itc.runtime.budget import BudgetExhausted
from itc.runtime.context import NodeContext
from itc.strategies.critic import CRITIQUE
from itc.strategies.generate import sampled
from itc.strategies.prompting import Writer
from itc.types import Candidate

TEMPLATE = (
    "Question:\n{question}\n\nHere are candidate responses to the question, some with a "
    "review:\n\n{responses}\n\nWrite one response to the question that keeps what the "
    "candidates get right and avoids what they get wrong. Do not mention the candidates."
)


class Fuser(Writer):
    """`n` new candidates synthesised from its inputs (best first, at most `max_candidates`),
    each shown with its critique when it has one; `lineage` lists the fused candidates.

    Its inputs are read by parent: every parent gives responses, except those named in
    `critiques_from`, which only lend their critiques to the responses of the others (paired
    by candidate id: a critic passes its candidates on under their own ids). So `inputs:
    [rank, critique]` with `critiques_from: [critique]` fuses the ranker's top few with the
    reviews a critic wrote in parallel. A candidate reaching it twice is shown once.

    When the budget refuses the call, the first `n` responses go on as they are, noted in
    `metadata["fused"]`.
    """

    type: Literal["fuser"] = "fuser"
    placeholders: ClassVar[tuple[str, ...]] = ("question", "responses")
    n: int = Field(default=1, ge=1, le=64, description="Fused candidates, sent as one request.")
    template: str = Field(
        default=TEMPLATE, description="The request: {question}, {responses} (numbered)."
    )
    use_critiques: bool = Field(default=True, description="Show each response's critique.")
    critiques_from: tuple[str, ...] = Field(
        default=(), description="Parents that give critiques only, not responses."
    )
    max_candidates: int = Field(default=4, ge=1, le=16, description="Most responses fused.")
    max_solution_chars: int = Field(
        default=2000, ge=100, description="Only the end of a longer response is shown."
    )
    max_critique_chars: int = Field(
        default=1000, ge=50, description="Only the start of a longer critique is shown."
    )

    @model_validator(mode="after")
    def _critique_parents_are_inputs(self) -> Fuser:
        unknown = [p for p in self.critiques_from if p not in self.inputs]
        if unknown:
            raise ValueError(f"critiques_from names {unknown}, which are not in inputs")
        if self.critiques_from and set(self.inputs) <= set(self.critiques_from):
            raise ValueError("every parent is in critiques_from: none gives responses")
        return self

    def max_outputs(self) -> int:
        return self.n

    def worst_case(self, inputs: int | None = 0) -> CostBound:
        return CostBound(completion_tokens=self.n * self.max_tokens, calls=1)

    def responses(self, inputs: list[Candidate]) -> list[tuple[Candidate, str | None]]:
        """The responses to fuse, in input order, each paired with its critique (if any)."""
        responses: dict[str, Candidate] = {}
        critiques: dict[str, str] = {}
        for parent, group in self.by_parent(inputs).items():
            for c in group:
                if c.metadata.get(CRITIQUE):
                    critiques.setdefault(c.id, str(c.metadata[CRITIQUE]))
                if parent not in self.critiques_from:
                    responses.setdefault(c.id, c)
        chosen = list(responses.values())[: self.max_candidates]
        return [(c, critiques.get(c.id) if self.use_critiques else None) for c in chosen]

    def request(
        self, ctx: NodeContext, responses: list[tuple[Candidate, str | None]]
    ) -> GenerationRequest:
        blocks = []
        for i, (c, critique) in enumerate(responses, 1):
            block = f"Response {i}:\n{self.shown(c).strip()}"
            if critique:
                block += f"\n\nReview of response {i}:\n{critique[: self.max_critique_chars]}"
            blocks.append(block)
        messages = self.messages(question=ctx.problem.question, responses="\n\n".join(blocks))
        return self.sample(ctx, messages, n=self.n, logprobs=ctx.wants_logprobs)

    async def run(self, ctx: NodeContext, inputs: list[Candidate]) -> list[Candidate]:
        responses = self.responses(inputs)
        if not responses:
            return []
        try:
            result = await ctx.generate(self.request(ctx, responses))
        except BudgetExhausted as refusal:
            note = f"not fused: {refusal}"
            return [c.model_copy(update={"metadata": {**c.metadata, "fused": note}})
                    for c, _ in responses[: self.n]]
        lineage = tuple(c.id for c, _ in responses)
        return [
            c.model_copy(
                update={"lineage": lineage, "metadata": {**c.metadata, "fused": len(lineage)}}
            )
            for c in sampled(ctx, result)
        ]
