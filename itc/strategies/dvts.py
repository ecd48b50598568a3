"""Diverse verifier tree search (as in search-and-learn): the N samples of a round are split
into N/M independent subtrees, each greedy on the process reward within itself, so one
strong early prefix cannot take over the whole width as it can in beam search."""

from __future__ import annotations

from typing import Literal

from itc.runtime.context import NodeContext
from itc.runtime.steps import Partial
from itc.strategies.beam_search import WidthAndExpansion, expansion, kept_per_round, top, width
from itc.types import Candidate


class DVTS(WidthAndExpansion):
    """N/M subtrees (`beams` N, `expand` M), each holding one leaf: every round each
    unfinished leaf gets M children and keeps only its best (by prefix score, ties to the
    first sampled). All subtrees' requests go out together, one per subtree with n = M; the
    first round samples the root N times in one request and deals the samples out M to a
    subtree. A subtree stops when its leaf finishes or the budget refuses its request; the
    search stops when every subtree has stopped or the budget refuses a whole round. The
    answer is a score-weighted vote (or the best score) over the subtrees' leaves.
    """

    type: Literal["dvts"] = "dvts"
    beams: int = width("Samples a round (N), all subtrees.")
    expand: int = expansion("Children per subtree a round (M); N/M subtrees.")

    async def run(self, ctx: NodeContext, inputs: list[Candidate]) -> list[Candidate]:
        leaves = [self.root(ctx)] * kept_per_round(self.beams, self.expand)
        stopped: set[int] = set()  # subtrees whose request the budget refused
        depth = 0
        while live := [i for i, p in enumerate(leaves) if not p.finished and i not in stopped]:
            groups = await self._children(ctx, [leaves[i] for i in live], depth)
            if groups is None:
                break
            depth += 1
            grown = await self.rewarded(ctx, [kid for kids in groups for kid in kids])
            score = {p.id: self.score(p) for p in grown}
            at = 0
            for subtree, kids in zip(live, groups, strict=True):
                scored = grown[at : at + len(kids)]
                at += len(kids)
                if not scored:
                    stopped.add(subtree)
                    continue
                leaves[subtree] = scored[top(scored, 1, score)[0]]
            best = {leaves[i].id for i in live if i not in stopped}
            self.log_round(
                ctx,
                depth,
                grown,
                weights=[1 / len(best) if p.id in best else 0.0 for p in grown],
                copies=[int(p.id in best) for p in grown],
                note=f"{len(best)} subtrees grew; {sum(p.finished for p in leaves)} finished",
            )
        if depth == 0:
            return []  # the budget refused even the first step
        return await self.finish(ctx, leaves)

    async def _children(
        self, ctx: NodeContext, leaves: list[Partial], depth: int
    ) -> list[list[Partial]] | None:
        """M children of each leaf; at the root, one request of n = N dealt out M apiece (the
        subtrees share the prompt, so the server prefills it once)."""
        if depth > 0:
            return await self.grow(ctx, leaves, self.expand)
        grown = await self.grow(ctx, leaves[:1], self.beams)
        if grown is None:
            return None
        [samples] = grown
        return [samples[k * self.expand : (k + 1) * self.expand] for k in range(len(leaves))]
