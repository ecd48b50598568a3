"""A free scorer: the model's own confidence in what it wrote."""

from __future__ import annotations

import math
from typing import ClassVar, Literal

from itc.nodes import Scorer
from itc.runtime.context import NodeContext
from itc.types import Candidate


class SelfCertainty(Scorer):
    """exp(mean token logprob) of the candidate: in (0, 1], no extra LLM call."""

    type: Literal["self_certainty"] = "self_certainty"
    needs_token_logprobs: ClassVar[bool] = True

    async def score(self, ctx: NodeContext, candidates: list[Candidate]) -> list[float]:
        return [
            0.0 if c.mean_logprob is None else math.exp(c.mean_logprob) for c in candidates
        ]
