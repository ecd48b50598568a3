"""The one node contract every strategy follows.

A strategy is a pydantic model (so it is config data: it validates, dumps to YAML/JSON and
loads back) with one async method, `run(ctx, inputs) -> candidates`, best first. `inputs`
are the candidates of the node's parents in the pipeline graph; a nested strategy (an
`inner` field) is run by its parent through `ctx.child(...)`. Strategies never see HTTP:
all they can do is ask `ctx.generate`.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, ConfigDict, SerializeAsAny

from itc.runtime.context import NodeContext
from itc.types import Candidate


class Component(BaseModel):
    """Base of every config-as-data part that is chosen by its `type` name."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: str
    kind: ClassVar[str] = "component"


class Strategy(Component):
    kind: ClassVar[str] = "strategy"

    inputs: tuple[str, ...] = ()
    """Names of parent nodes in a pipeline graph (top-level nodes only)."""

    async def run(self, ctx: NodeContext, inputs: list[Candidate]) -> list[Candidate]:
        raise NotImplementedError

    def max_outputs(self) -> int | None:
        """Upper bound on how many candidates one run returns, if known (for early stops)."""
        return None


class Scorer(Component):
    """Turns candidates into scores in [0, 1], higher is better."""

    kind: ClassVar[str] = "scorer"

    async def score(self, ctx: NodeContext, candidates: list[Candidate]) -> list[float]:
        raise NotImplementedError


StrategyNode = SerializeAsAny[Strategy]
ScorerNode = SerializeAsAny[Scorer]
