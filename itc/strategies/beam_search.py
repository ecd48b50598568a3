"""Step-level beam search (as in search-and-learn): N beams grow a step each round, a process
reward ranks them, the top N/M are kept and each is expanded M ways to refill the width.
Every round's requests go out together (one per kept beam, n = M), so a round costs one
server round trip however wide the beam is."""

from __future__ import annotations

from typing import Any, Literal, Self

from pydantic import Field, model_validator

from itc.nodes import CostBound
from itc.runtime.context import NodeContext
from itc.runtime.steps import Partial
from itc.strategies.stepwise import StepSearch
from itc.types import Candidate


def kept_per_round(beams: int, expand: int) -> int:
    """N/M, checked: a width that M does not divide would leave part of a round unused."""
    if beams % expand:
        raise ValueError(
            f"beams ({beams}) must be a multiple of expand ({expand}): "
            f"beams / expand partial solutions are kept each round and each grows expand ways"
        )
    return beams // expand


def top(partials: list[Partial], count: int, score: dict[str, float]) -> list[int]:
    """Indices of the `count` best partials, best first; ties go to the earlier one."""
    order = sorted(range(len(partials)), key=lambda i: (-score[partials[i].id], i))
    return order[:count]


def width(description: str) -> Any:
    """The `beams` field (N) of a `WidthAndExpansion` search, worded for that search."""
    return Field(default=8, ge=1, le=256, description=description)


def expansion(description: str) -> Any:
    """The `expand` field (M) of a `WidthAndExpansion` search, worded for that search."""
    return Field(default=4, ge=1, le=256, description=description)


class WidthAndExpansion(StepSearch):
    """A step search N wide (`beams`) in which each partial it extends gets M children
    (`expand`), N a multiple of M. Each search declares the two fields with `width` and
    `expansion`, in its own words."""

    beams: int
    expand: int

    @model_validator(mode="after")
    def _divisible(self) -> Self:
        kept_per_round(self.beams, self.expand)
        return self

    def worst_case(self, inputs: int | None = 0) -> CostBound | None:
        # N steps a round: the root's N in one request, then one request per kept partial;
        # a partial has at most `max_steps` steps, so there are at most that many rounds.
        rounds = self.step.max_steps
        return self.searched(rounds * self.beams, 1 + (rounds - 1) * (self.beams // self.expand))


class BeamSearch(WidthAndExpansion):
    """Beam search over reasoning steps with width N (`beams`) and expansion factor M
    (`expand`).

    The root is sampled N times in one request; each later round the N/M best unfinished
    beams (by prefix score) are each extended by one request with n = M. A beam that
    finishes (an answer, EOS or the step cap) is set aside and never extended; the search
    stops once N beams finished, no beam is left, or the budget refuses a round. A beam
    whose own request the budget refused is set aside unfinished. The answer comes from the
    finished beams (else the unfinished ones), by a score-weighted vote or the best score.
    """

    type: Literal["beam_search"] = "beam_search"
    beams: int = width("Beam width (N): children a round.")
    expand: int = expansion("Children per kept beam (M); N/M beams are kept.")

    async def run(self, ctx: NodeContext, inputs: list[Candidate]) -> list[Candidate]:
        keep = kept_per_round(self.beams, self.expand)
        active = [self.root(ctx)]
        counts = [self.beams]
        completed: list[Partial] = []
        stopped: list[Partial] = []  # beams the budget refused to extend
        depth = 0
        while active and len(completed) < self.beams:
            children = await self.grow(ctx, active, counts)
            if children is None:
                break
            depth += 1
            stopped += [beam for beam, kids in zip(active, children, strict=True) if not kids]
            grown = await self.rewarded(ctx, [kid for kids in children for kid in kids])
            completed += [kid for kid in grown if kid.finished]
            pool = [kid for kid in grown if not kid.finished]
            score = {p.id: self.score(p) for p in grown}
            kept = top(pool, keep, score)
            chosen = {pool[i].id for i in kept}
            self.log_round(
                ctx,
                depth,
                grown,
                weights=[1 / len(kept) if p.id in chosen else 0.0 for p in grown],
                copies=[int(p.id in chosen) for p in grown],
                note=f"kept {len(kept)} of {len(pool)} unfinished; {len(completed)} finished",
            )
            active = [pool[i] for i in kept]
            counts = [self.expand] * len(active)
        if depth == 0:
            return []  # the budget refused even the first step
        return await self.finish(ctx, completed + active + stopped)
