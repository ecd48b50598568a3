"""Particle filtering over reasoning steps (Puri et al., 2025): the model proposes each next
step, a process reward weighs the particles, and resampling moves the budget to the
promising ones."""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Sequence
from typing import Literal

from pydantic import Field

from itc.nodes import CostBound
from itc.runtime.context import NodeContext
from itc.runtime.steps import Partial
from itc.strategies.stepwise import StepSearch
from itc.types import Candidate


def weights_from_rewards(rewards: Sequence[float], temperature: float) -> list[float]:
    """softmax(logit(r) / T): resampling odds proportional to (r / (1 - r)) ** (1 / T)."""
    logits = []
    for r in rewards:
        r = min(max(r, 1e-6), 1 - 1e-6)
        logits.append(math.log(r / (1 - r)) / temperature)
    top = max(logits)
    exps = [math.exp(x - top) for x in logits]
    total = sum(exps)
    return [e / total for e in exps]


def effective_sample_size(weights: Sequence[float]) -> float:
    """1 / sum(w^2) of normalised weights: N when uniform, 1 when one particle holds all."""
    total = sum(weights)
    return 1.0 / sum((w / total) ** 2 for w in weights)


def multinomial(weights: Sequence[float], count: int, rng: random.Random) -> list[int]:
    """`count` ancestor indices drawn independently in proportion to `weights`."""
    return rng.choices(range(len(weights)), weights=weights, k=count)


def systematic(weights: Sequence[float], count: int, rng: random.Random) -> list[int]:
    """`count` ancestors from one uniform offset and evenly spaced pointers: each index gets
    floor or ceil of count x its weight copies, so resampling adds less noise than
    multinomial draws."""
    total = sum(weights)
    start = rng.random() / count
    chosen, cumulative, index = [], weights[0] / total, 0
    for k in range(count):
        pointer = start + k / count
        while pointer > cumulative and index < len(weights) - 1:
            index += 1
            cumulative += weights[index] / total
        chosen.append(index)
    return chosen


class ParticleFiltering(StepSearch):
    """N particles grow a step at a time; each round they are weighed by
    softmax(logit(reward) / temperature) of their current prefix score and resampled, so
    steps go to the particles the reward favours. Finished particles stay in the pool
    (they may be copied) and are never extended; copies of one particle are extended by one
    request with n = copies, so the server prefills their shared prefix once.

    Resampling happens when the effective sample size falls under `ess_threshold` x N (1.0,
    the default, resamples whenever the weights are not uniform). `iterations` > 1 runs
    particle Gibbs: each later iteration keeps one reference particle, drawn from the
    previous iteration's weights, that resampling never drops. With no reward model the
    default reward is the steps' own certainty (exp of their mean token logprob).

    The answer is a vote weighted by the final weights (or the heaviest particle); the
    winner's `answer_weights` metadata holds each answer's weight, whose weight on the gold
    answer is the expected accuracy of the weighted set.
    """

    type: Literal["particle_filtering"] = "particle_filtering"
    particles: int = Field(default=8, ge=1, le=256, description="Particles (N).")
    temperature: float = Field(
        default=1.0, gt=0.0, description="Softmax temperature on the rewards' logits."
    )
    resampling: Literal["systematic", "multinomial"] = Field(
        default="systematic", description="How ancestors are drawn."
    )
    ess_threshold: float = Field(
        default=1.0, gt=0.0, le=1.0, description="Resample when ESS < this x N."
    )
    iterations: int = Field(default=1, ge=1, le=16, description="Particle Gibbs iterations.")
    seed: int = Field(default=0, description="Seed of the resampling draws.")

    def max_outputs(self) -> int | None:
        return None

    def wants_input_logprobs(self) -> bool:
        return False

    def worst_case(self, inputs: int | None = 0) -> CostBound | None:
        # A round steps every particle (the first all in one request) but a later
        # iteration's reference; a particle has at most `max_steps` steps, so a pass has at
        # most that many rounds.
        rounds, n, later = self.step.max_steps, self.particles, self.iterations - 1
        steps = rounds * (n + later * (n - 1))
        return self.searched(steps, 1 + (rounds - 1) * n + later * (1 + (rounds - 1) * (n - 1)))

    async def run(self, ctx: NodeContext, inputs: list[Candidate]) -> list[Candidate]:
        rng = random.Random(ctx.seed_for(self.seed))
        reference: Partial | None = None
        particles: list[Partial] = []
        weights: list[float] = []
        for iteration in range(self.iterations):
            run_ctx = ctx if self.iterations == 1 else ctx.child(f"iteration:{iteration}")
            found = await self._filter(run_ctx, rng, reference)
            if found is None:
                break  # the budget ran out before this iteration had a step: keep the last
            particles, weights = found
            drawn = multinomial(weights, 1, rng)[0]
            reference = particles[drawn]
        if not particles:
            return []
        ranked = await self.finish(ctx, particles, weights)
        answer_weights: dict[str, float] = {}
        for particle, weight in zip(particles, weights, strict=True):
            answer = self.answer.extract(particle.text)
            if answer is not None:
                answer_weights[answer] = answer_weights.get(answer, 0.0) + weight
        if ranked:
            winner = ranked[0]
            ranked[0] = winner.model_copy(
                update={"metadata": {**winner.metadata, "answer_weights": answer_weights}}
            )
        return ranked

    async def _filter(
        self, ctx: NodeContext, rng: random.Random, reference: Partial | None
    ) -> tuple[list[Partial], list[float]] | None:
        """One filtering pass; the final particles and weights, or None if no step fit."""
        particles = [self.root(ctx)] * self.particles
        weights = [1.0 / self.particles] * self.particles
        stalled: set[str] = set()  # particles whose extension the budget refused
        depth = 0
        while True:
            grown = await self._step(ctx, particles, stalled, reference is not None)
            if grown is None:
                if reference is not None and depth:
                    particles[0] = reference  # its remaining steps cost nothing
                break
            particles, depth = grown, depth + 1
            if reference is not None:
                particles[0] = reference.prefix(depth)
            particles = await self.rewarded(ctx, particles)
            weights = weights_from_rewards([self.score(p) for p in particles], self.temperature)
            done = all(p.finished or p.id in stalled for p in particles)
            ess = effective_sample_size(weights)
            if done or ess >= self.ess_threshold * self.particles:
                note = "all finished" if done else f"kept: ESS {ess:.2f}"
                self.log_round(ctx, depth, particles, weights, note=note)
                if done:
                    break
                continue
            draw = systematic if self.resampling == "systematic" else multinomial
            ancestors = draw(weights, self.particles, rng)
            if reference is not None:
                ancestors[0] = 0  # the reference particle is never dropped
            copies = Counter(ancestors)
            self.log_round(
                ctx, depth, particles, weights, [copies.get(i, 0) for i in range(len(particles))],
                note=f"resampled: ESS {ess:.2f}",
            )
            particles = [particles[i] for i in ancestors]
            # After resampling every particle counts the same.
            weights = [1.0 / self.particles] * self.particles
        if depth == 0:
            return None
        return particles, weights

    async def _step(
        self, ctx: NodeContext, particles: list[Partial], stalled: set[str], reference: bool
    ) -> list[Partial] | None:
        """Every live particle one step longer (copies of one particle share a request);
        None when nothing could grow."""
        slots: dict[str, list[int]] = {}
        for index, particle in enumerate(particles):
            if index == 0 and reference:
                continue  # the reference's next step is already known
            if not particle.finished and particle.id not in stalled:
                slots.setdefault(particle.id, []).append(index)
        if not slots:
            return None
        parents = [particles[indices[0]] for indices in slots.values()]
        children = await self.grow(ctx, parents, [len(i) for i in slots.values()])
        if children is None:
            return None
        grown = list(particles)
        for parent, indices, kids in zip(parents, slots.values(), children, strict=True):
            if not kids:
                stalled.add(parent.id)
                continue
            for index, kid in zip(indices, kids, strict=False):
                grown[index] = kid
        return grown
