"""A*-decoding (Chatziveroglou, 2025): best-first search over partial solutions, ordered by
f = g + h from process rewards, that stops at the first finished solution it pops."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from pydantic import Field

from itc.nodes import CostBound
from itc.runtime.context import NodeContext
from itc.runtime.steps import Partial
from itc.strategies.stepwise import StepSearch
from itc.types import Candidate

Cost = Literal["zero", "path", "increase"]


def path_cost(prefix_scores: Sequence[float], cost: Cost) -> float:
    """g of a partial from the prefix scores r_1..r_t of its first 1..t steps, with
    h_j = 1 - r_j: "zero" is 0; "path" is sum_j h_j; "increase" is sum_j max(0, h_j - h_{j-1})
    from h_0 = 0 (nothing is wrong before the first step)."""
    if cost == "zero":
        return 0.0
    heights = [1.0 - r for r in prefix_scores]
    if cost == "path":
        return sum(heights)
    return sum(max(0.0, after - before) for before, after in itertools.pairwise([0.0, *heights]))


@dataclass(order=True)
class _Node:
    """A queue entry: the lowest f first; ties to the deeper partial, then to the one
    pushed first (so the order is reproducible)."""

    f: float
    minus_depth: int
    order: int
    g: float = field(compare=False)
    partial: Partial = field(compare=False)


class AStar(StepSearch):
    """A*-decoding: partial solutions wait in a priority queue keyed by f = g + h, where
    h = 1 - r is one minus the process reward's prefix score. Each round pops the best
    partial and samples `expand` next steps for it in one request (n = k, so the server
    prefills the shared prefix once); the children are rewarded and pushed. The search
    stops when it pops a finished solution (the goal, which is the answer), after
    `max_expansions`, or when the budget refuses; then it answers from the best finished
    partial in the queue, else the most promising one left to expand. Finished partials
    are never extended. Siblings with token-identical text are kept once, so duplicates
    cost no reward and no expansion.

    The path cost g: the paper frames decoding as A* search over partial solutions guided
    by a process reward, but the text we could check (the abstract and introduction of
    arXiv 2505.13672v1, the README of its code repository) does not define g, so the choice
    is ours and configurable. `increase` (the default) charges only rises of h along the
    path, from h = 0 before the first step: a step that keeps or improves the prefix score
    is free, so depth is never penalised and the search dives to an answer (the paper
    reports up to 3x fewer tokens than best-of-N), yet a setback stays charged after later
    steps hide it from a non-monotone aggregate (`last`, `mean`); with a monotone one
    (`min`, `product`) it orders nodes exactly as `zero` does. `zero` is greedy best-first
    on h. `path` adds h of every prefix, so each step costs something: a verifier that
    scores most steps neutral (0.5) turns it breadth-first, spending tokens on many short
    prefixes.

    `parallel` > 1 pops that many partials per round and extends them together (their
    requests go out at once): fewer, wider rounds for a little less strict ordering.
    """

    type: Literal["a_star"] = "a_star"
    expand: int = Field(default=4, ge=1, le=64, description="Children per expansion (k).")
    cost: Cost = Field(default="increase", description="Path cost g added to h = 1 - reward.")
    max_expansions: int = Field(
        default=32, ge=1, le=4096, description="Most partials expanded in one search."
    )
    parallel: int = Field(
        default=1, ge=1, le=64, description="Best partials expanded together in one round."
    )

    def max_outputs(self) -> int | None:
        return 1

    def worst_case(self, inputs: int | None = 0) -> CostBound | None:
        # Each expansion is one request for `expand` children; refused ones are not counted.
        return self.searched(self.max_expansions * self.expand, self.max_expansions)

    def g(self, partial: Partial) -> float:
        """The path cost of a partial, from the prefix scores of its scored steps."""
        scores = [self.score(partial.prefix(d)) for d in range(1, len(partial.rewards) + 1)]
        return path_cost(scores, self.cost)

    def h(self, partial: Partial) -> float:
        """Estimated cost to go: one minus the prefix score."""
        return 1.0 - self.score(partial)

    async def run(self, ctx: NodeContext, inputs: list[Candidate]) -> list[Candidate]:
        counter = itertools.count()
        queue: list[_Node] = [_Node(0.0, 0, next(counter), 0.0, self.root(ctx))]
        known: set[tuple[int, ...]] = set()  # token ids of every partial pushed
        expansions, rounds = 0, 0
        why = "queue empty"
        while queue:
            popped: list[_Node] = []
            while queue and len(popped) < min(self.parallel, self.max_expansions - expansions):
                node = heapq.heappop(queue)
                if node.partial.finished:
                    self.log_round(ctx, rounds + 1, [node.partial], note="goal popped")
                    return await self._answer(ctx, node, goal=True, expansions=expansions)
                popped.append(node)
            if not popped:
                why = f"{expansions} expansions done"
                break
            grown = await self.grow(ctx, [n.partial for n in popped], self.expand)
            if grown is None:
                for node in popped:
                    heapq.heappush(queue, node)
                why = "budget spent"
                break
            rounds += 1
            children: list[Partial] = []
            for node, kids in zip(popped, grown, strict=True):
                if not kids:  # this parent's request was refused: it waits for a later round
                    heapq.heappush(queue, node)
                    continue
                expansions += 1
                for kid in kids:
                    if kid.ids not in known:
                        known.add(kid.ids)
                        children.append(kid)
            children = await self.rewarded(ctx, children)
            for child in children:
                g = self.g(child)
                f = round(g + self.h(child), 9)  # so float noise never splits a tie
                entry = _Node(f, -len(child.steps), next(counter), g, child)
                heapq.heappush(queue, entry)
            parents = ", ".join(f"{n.partial.id} (f {n.f:.3f})" for n in popped)
            self.log_round(ctx, rounds, children, note=f"expanded {parents}")
            if any(len(c.rewards) < len(c.steps) for c in children):
                why = "reward budget spent"
                break
        # Cut short: the best finished partial (all wait in the queue, as goals end the
        # search when popped), else the most promising one left to expand.
        frontier = [n for n in queue if n.partial.steps]
        if not frontier:
            return []
        best = min([n for n in frontier if n.partial.finished] or frontier)
        self.log_round(ctx, rounds + 1, [best.partial], note=f"stopped: {why}")
        return await self._answer(ctx, best, goal=False, expansions=expansions)

    async def _answer(
        self, ctx: NodeContext, node: _Node, goal: bool, expansions: int
    ) -> list[Candidate]:
        ranked = await self.finish(ctx, [node.partial])
        found = {"f": node.f, "g": node.g, "goal": goal, "expansions": expansions}
        return [c.model_copy(update={"metadata": {**c.metadata, **found}}) for c in ranked]
