"""Ensemble generation (Diversity-of-Thought): one problem sampled under several settings."""

from __future__ import annotations

import asyncio
from typing import Literal

from pydantic import Field

from itc.nodes import CostBound, Strategy, total
from itc.runtime.budget import BudgetExhausted
from itc.runtime.context import NodeContext
from itc.strategies.generate import Generate
from itc.types import Candidate


class Ensemble(Strategy):
    """Samples from every variant at once, so candidates differ in how they were asked, not
    only by chance: temperatures, templates and system messages side by side.

    Each variant is a `Generate` run as its own rollout, so two variants with the same seed
    still draw different samples (and cache apart). Its candidates carry `metadata["variant"]`,
    the variant's index (and `metadata["model"]`, a variant's named model), so later nodes and
    reports can tell which settings paid off. A variant with a `model` samples from that named
    generator of the run (`--model-url NAME=URL`): an ensemble over several models.
    """

    type: Literal["ensemble"] = "ensemble"
    variants: tuple[Generate, ...] = Field(
        default=(
            Generate(n=2, temperature=0.3),
            Generate(n=2, temperature=0.7),
            Generate(n=2, temperature=1.0),
        ),
        min_length=1,
        description="The sampling settings, each one `generate` node; all are sent together.",
    )

    def max_outputs(self) -> int:
        return sum(v.n for v in self.variants)

    def worst_case(self, inputs: int | None = 0) -> CostBound | None:
        return total(*(v.worst_case() for v in self.variants))

    async def run(self, ctx: NodeContext, inputs: list[Candidate]) -> list[Candidate]:
        count = len(self.variants)
        outcomes = await asyncio.gather(
            *(
                variant.run(ctx.child(f"variant{i}", rollout=ctx.rollout * count + i), [])
                for i, variant in enumerate(self.variants)
            ),
            return_exceptions=True,
        )
        candidates: list[Candidate] = []
        refused: BudgetExhausted | None = None
        for i, outcome in enumerate(outcomes):
            if isinstance(outcome, BudgetExhausted):
                refused = refused or outcome  # the others' samples are paid for: keep them
            elif isinstance(outcome, BaseException):
                raise outcome
            else:
                tags = {"variant": i} | ({"model": m} if (m := self.variants[i].model) else {})
                candidates += [
                    c.model_copy(update={"metadata": {**c.metadata, **tags}}) for c in outcome
                ]
        if not candidates and refused is not None:
            raise refused  # not one variant fit: say which limit stopped them
        return candidates
