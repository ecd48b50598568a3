"""Prefer shorter solutions: a free scorer with no LLM call."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field

from itc import Candidate, NodeContext, Scorer


class Brevity(Scorer):
    """exp(-tokens / scale): 1 for an empty reply, 1/e at `scale` generated tokens."""

    type: Literal["brevity"] = "brevity"
    scale: float = Field(default=200.0, gt=0, description="Tokens at which the score is 1/e.")

    async def score(self, ctx: NodeContext, candidates: list[Candidate]) -> list[float]:
        return [math.exp(-c.completion_tokens / self.scale) for c in candidates]
