"""RPC (Zhou et al., 2025, "Bridging Internal Probability and Self-Consistency"): a vote
weighted by the model's own path probabilities, after pruning the paths it is least sure of.

Perplexity consistency sums exp(mean token logprob) over the unique completions of each
answer, so the vote converges with fewer samples than counting; reasoning pruning first drops
paths that a two-component Weibull mixture places in the low-confidence mode, so a crowd of
unlikely paths cannot outweigh a few likely ones.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import Field

from itc.nodes import Aggregator, AnswerNode, CostBound, StrategyNode
from itc.runtime.budget import BudgetExhausted
from itc.runtime.context import NodeContext
from itc.strategies.generate import Generate
from itc.types import Candidate
from itc.verifiers.answers import MathAnswer

MIN_PATHS = 4
"""Fewer paths than this say nothing about two modes: pruning is skipped."""
MAX_SHAPE = 1_000.0
"""Caps a component's shape: a mode of (near) identical values would otherwise grow without
bound, as a mixture's likelihood does around a single point."""
_FLOOR = 1e-300


@dataclass(frozen=True)
class Weibull:
    shape: float
    scale: float

    def log_pdf(self, x: float) -> float:
        z = math.log(max(x, _FLOOR)) - math.log(self.scale)
        # exp is capped: far in the tail the density is nil either way, and stays finite.
        tail = math.exp(min(self.shape * z, 700.0))
        return math.log(self.shape / self.scale) + (self.shape - 1) * z - tail

    @property
    def mean(self) -> float:
        return self.scale * math.exp(math.lgamma(1 + 1 / self.shape))


@dataclass(frozen=True)
class WeibullMixture:
    """Two Weibull modes: `low` and `high` (by mean), `weight` the share of `high`."""

    low: Weibull
    high: Weibull
    weight: float

    def posterior_high(self, x: float) -> float:
        """P(x came from the high-confidence mode)."""
        a = math.log(self.weight) + self.high.log_pdf(x)
        b = math.log1p(-self.weight) + self.low.log_pdf(x)
        return 1 / (1 + math.exp(min(b - a, 700.0)))


def _tilted_moments(k: float, logs: Sequence[float], weights: Sequence[float]) -> tuple[
    float, float, float
]:
    """Mean and variance of log x under weights w * x**k, and log(sum w * x**k), in log space
    (tiny weights on large values must neither overflow nor vanish)."""
    terms = [(math.log(w) + k * lx, lx) for w, lx in zip(weights, logs, strict=True) if w > 0]
    top = max(a for a, _ in terms)
    total = first = second = 0.0
    for a, lx in terms:
        e = math.exp(a - top)
        total += e
        first += e * lx
        second += e * lx * lx
    mean = first / total
    return mean, max(second / total - mean * mean, 0.0), top + math.log(total)


def fit_weibull(
    values: Sequence[float], weights: Sequence[float], shape: float = 1.0
) -> Weibull:
    """Weighted maximum likelihood: the shape solves the profile equation
    E_k[log x] - 1/k - mean(log x) = 0 (increasing in k) by Newton steps kept inside a
    bisection bracket; the scale then has a closed form. `shape` is a warm start."""
    logs = [math.log(max(x, _FLOOR)) for x in values]
    mass = sum(weights)
    plain = sum(w * lx for w, lx in zip(weights, logs, strict=True)) / mass
    lo, hi = 1e-3, MAX_SHAPE
    k = min(max(shape, lo), hi)
    for _ in range(100):
        mean, variance, _ = _tilted_moments(k, logs, weights)
        g = mean - 1 / k - plain
        if abs(g) < 1e-12:
            break
        lo, hi = (k, hi) if g < 0 else (lo, k)
        if hi / lo - 1 < 1e-12:
            break
        step = k - g / (variance + 1 / (k * k))
        k = step if lo < step < hi else math.sqrt(lo * hi)
    log_sum = _tilted_moments(k, logs, weights)[2]
    return Weibull(shape=k, scale=math.exp((log_sum - math.log(mass)) / k))


def fit_weibull_mixture(
    values: Sequence[float], iterations: int = 300, tolerance: float = 1e-9
) -> WeibullMixture | None:
    """Two-component Weibull mixture by EM; None when the values are too few or all equal.

    It starts from the upper half in the high mode (softly, so neither mode starts empty).
    """
    if len(values) < 2 or max(values) - min(values) <= 1e-12 * max(values):
        return None
    median = sorted(values)[len(values) // 2]
    high_share = [0.9 if x > median else 0.5 if x == median else 0.1 for x in values]
    low = high = Weibull(1.0, 1.0)
    weight, previous = 0.5, -math.inf
    for _ in range(iterations):
        weight = sum(high_share) / len(values)
        if not 1e-9 < weight < 1 - 1e-9:
            break  # one mode took every value: the fit before this step stands
        low = fit_weibull(values, [1 - r for r in high_share], low.shape)
        high = fit_weibull(values, high_share, high.shape)
        likelihood, high_share = 0.0, []
        for x in values:
            a = math.log(weight) + high.log_pdf(x)
            b = math.log1p(-weight) + low.log_pdf(x)
            top = max(a, b)
            likelihood += top + math.log(math.exp(a - top) + math.exp(b - top))
            high_share.append(math.exp(a - top) / (math.exp(a - top) + math.exp(b - top)))
        if abs(likelihood - previous) <= tolerance * (1 + abs(likelihood)):
            break
        previous = likelihood
    weight = min(max(weight, 1e-9), 1 - 1e-9)
    if high.mean < low.mean:
        return WeibullMixture(low=high, high=low, weight=1 - weight)
    return WeibullMixture(low=low, high=high, weight=weight)


def reasoning_pruning(confidences: Sequence[float]) -> tuple[list[bool], list[float] | None]:
    """Which paths to keep, and each one's P(high mode) (None when pruning was skipped).

    A path goes when it more likely belongs to the low mode and is below the mean confidence;
    so the most confident path always stays.
    """
    keep = [True] * len(confidences)
    if len(confidences) < MIN_PATHS:
        return keep, None
    mixture = fit_weibull_mixture(confidences)
    if mixture is None:
        return keep, None
    mean = sum(confidences) / len(confidences)
    posteriors = [mixture.posterior_high(c) for c in confidences]
    return [p >= 0.5 or c >= mean for p, c in zip(posteriors, confidences, strict=True)], posteriors


class RPC(Aggregator):
    """Reasoning-pruning perplexity consistency over its inputs plus what `inner` samples.

    Each path's confidence is exp(mean token logprob) (a path with no logprobs gets the mean
    of the others). With `prune`, low-mode paths are dropped first (skipped for fewer than 4
    paths or equal confidences). Each answer then gets the summed confidence of its unique
    completions (a text sampled twice counts once); answers are ranked by it, each carrying
    its normalised share as the `confidence` score, a calibrated probability of being right.
    """

    type: Literal["rpc"] = "rpc"
    inner: StrategyNode | None = Field(
        default=Generate(n=8), description="Samples the paths (none: use `inputs` only)."
    )
    answer: AnswerNode = Field(default=MathAnswer(), description="How answers are grouped.")
    prune: bool = Field(default=True, description="Drop low-confidence paths before the vote.")

    def wants_input_logprobs(self) -> bool:
        return True

    def worst_case(self, inputs: int | None = 0) -> CostBound | None:
        return CostBound() if self.inner is None else self.inner.worst_case()

    async def run(self, ctx: NodeContext, inputs: list[Candidate]) -> list[Candidate]:
        paths = list(inputs)
        if self.inner is not None:
            try:
                paths += await self.inner.run(ctx.child("inner", wants_logprobs=True), [])
            except BudgetExhausted:
                if not paths:
                    raise
        if not paths:
            return []
        confidences = path_confidences(paths)
        keep, posteriors = [True] * len(paths), None
        if self.prune:
            keep, posteriors = reasoning_pruning(confidences)
        scored = [
            c.model_copy(update={"answer": self.answer.read(c)}).with_score("path_confidence", conf)
            for c, conf in zip(paths, confidences, strict=True)
        ]
        if posteriors is not None:
            scored = [c.with_score("p_high", p) for c, p in zip(scored, posteriors, strict=True)]
        every = list(zip(scored, confidences, strict=True))
        kept = [path for path, k in zip(every, keep, strict=True) if k]
        ranked = await self._perplexity_consistency(ctx, kept)
        if not ranked and len(kept) < len(every):
            # Every path that stated an answer was pruned: better all paths than none.
            ranked = await self._perplexity_consistency(ctx, every)
        ctx.log_candidates(scored, kept=[c.id for c in ranked[:1]])
        return ranked

    async def _perplexity_consistency(
        self, ctx: NodeContext, paths: list[tuple[Candidate, float]]
    ) -> list[Candidate]:
        seen: set[str] = set()
        totals: dict[str, float] = {}
        members: dict[str, list[tuple[Candidate, float]]] = {}
        for candidate, confidence in paths:
            answer = candidate.answer
            key = None if answer is None else await self.answer.key(answer, ctx.grader)
            if key is None:
                continue
            members.setdefault(key, []).append((candidate, confidence))
            if candidate.text not in seen:  # the same completion twice is one path
                seen.add(candidate.text)
                totals[key] = totals.get(key, 0.0) + confidence
        total = sum(totals.values()) or 1.0
        order = {key: i for i, key in enumerate(members)}
        ranked = []
        for key in sorted(members, key=lambda k: (-totals.get(k, 0.0), order[k])):
            best, _ = max(members[key], key=lambda m: m[1])
            ranked.append(
                best.with_score("confidence", totals.get(key, 0.0) / total).model_copy(
                    update={"lineage": tuple(c.id for c, _ in members[key])}
                )
            )
        return ranked


def path_confidences(paths: Sequence[Candidate]) -> list[float]:
    """exp(mean token logprob) of each path; paths without logprobs get the others' mean."""
    known = [math.exp(c.mean_logprob) for c in paths if c.mean_logprob is not None]
    fallback = sum(known) / len(known) if known else 1.0
    return [fallback if c.mean_logprob is None else math.exp(c.mean_logprob) for c in paths]
