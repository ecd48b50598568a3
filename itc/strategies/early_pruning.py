"""Early pruning (Manvi et al., 2024, "Adaptive Inference-Time Compute"): start every sample,
judge the starts, and spend the rest of the budget finishing only the promising ones."""

from __future__ import annotations

import asyncio
import math
from typing import Literal

from pydantic import Field, field_validator, model_validator

from itc.backends.base import BackendError, Choice, GenerationRequest, GenerationResult
from itc.nodes import AnswerNode, CostBound, ScorerNode, Strategy, check_template, total
from itc.runtime.budget import BudgetExhausted
from itc.runtime.context import NodeContext
from itc.strategies.generate import Generate, sampled
from itc.strategies.self_consistency import Tally, cast_votes
from itc.types import Candidate
from itc.verifiers.answers import MathAnswer
from itc.verifiers.judge import PartialProbe


class EarlyPruning(Strategy):
    """N samples start as one request for `prefix_tokens` each; the unfinished starts are
    scored (by default a one-token self-evaluation probe) and only the best `keep` fraction
    is continued, each from its exact token ids (no re-tokenisation), all at once. Samples
    that finished within their prefix are complete and compete as they are; the rest are
    dropped. The probe runs only when there is a choice to make (more open starts than
    continuations).

    `select: vote` answers by majority over the final answers; `select: best` scores the
    finished solutions with the same scorer and ranks them by it. A continuation the budget
    refuses leaves its prefix, which competes only when no other solution is left.
    """

    type: Literal["early_pruning"] = "early_pruning"
    samples: int = Field(default=8, ge=1, le=256, description="Samples started (N).")
    prefix_tokens: int = Field(default=64, ge=1, description="Tokens each start may take.")
    keep: float = Field(
        default=0.25, gt=0.0, le=1.0, description="Share of the N samples continued (at least 1)."
    )
    max_tokens: int = Field(default=512, ge=2, description="Most tokens per sample, in total.")
    temperature: float = Field(default=0.7, ge=0.0, description="Sampling temperature.")
    seed: int | None = Field(
        default=0, description="Base seed; each rollout gets its own (null: unseeded, uncached)."
    )
    system: str | None = Field(default=None, description="A system message put first.")
    template: str = Field(
        default="{question}", description="The user message; {question} is the problem's text."
    )
    scorer: ScorerNode = Field(
        default=PartialProbe(), description="Scores the starts (and the finals, for `best`)."
    )
    select: Literal["vote", "best"] = Field(
        default="vote", description="Majority over final answers, or the best-scored solution."
    )
    answer: AnswerNode = Field(default=MathAnswer(), description="How answers are grouped.")

    @field_validator("template")
    @classmethod
    def _question_only(cls, template: str) -> str:
        return check_template(template, {"question"})

    @model_validator(mode="after")
    def _room_to_continue(self) -> EarlyPruning:
        if self.prefix_tokens >= self.max_tokens:
            raise ValueError("prefix_tokens must be below max_tokens, or nothing is continued")
        return self

    def max_outputs(self) -> int:
        return self.samples

    def worst_case(self, inputs: int | None = 0) -> CostBound | None:
        # A continued sample takes at most `max_tokens` in all, start included.
        rest = self.continued * (self.max_tokens - self.prefix_tokens)
        sampling = CostBound(
            completion_tokens=self.samples * self.prefix_tokens + rest, calls=1 + self.continued
        )
        # Probes score the open starts (when more than are continued); `best` then scores
        # the finished starts and the continued ones: samples + continued in all, at most.
        scored = self.samples + self.continued if self.select == "best" else self.samples
        return total(sampling, self.scorer.worst_case(scored))

    @property
    def continued(self) -> int:
        """How many starts are continued: ceil(keep x N), at least one."""
        return max(1, math.ceil(self.keep * self.samples - 1e-9))

    async def run(self, ctx: NodeContext, inputs: list[Candidate]) -> list[Candidate]:
        logprobs = ctx.wants_logprobs or self.scorer.needs_token_logprobs
        first = await ctx.generate(self._starts.request(ctx, logprobs=logprobs))
        starts = sampled(ctx, first)
        open_ = {s.id: (i, c) for i, (s, c) in enumerate(zip(starts, first.choices, strict=True))
                 if c.finish_reason == "length"}  # cut at the prefix length: not finished
        done = [s for s in starts if s.id not in open_]
        chosen = await self._choose(ctx, [s for s in starts if s.id in open_])
        ctx.log_candidates([s for s in starts if s.id in open_], kept=[c.id for c in chosen])
        continued = await self._continue(
            ctx, first, [(c, *open_[c.id]) for c in chosen], logprobs
        )
        return await self._select(ctx, done + continued)

    @property
    def _starts(self) -> Generate:
        """The first round as a plain sampler: N samples of at most `prefix_tokens` each."""
        return Generate(
            n=self.samples,
            temperature=self.temperature,
            max_tokens=self.prefix_tokens,
            seed=self.seed,
            system=self.system,
            template=self.template,
        )

    async def _choose(self, ctx: NodeContext, starts: list[Candidate]) -> list[Candidate]:
        """The best `continued` open starts by score (all of them when they are that few)."""
        if len(starts) <= self.continued:
            return starts
        try:
            probing = ctx.child(f"prune:{self.scorer.type}", reward=self.scorer.calls_a_model)
            scores = await self.scorer.score(probing, starts)
        except BudgetExhausted:
            return starts[: self.continued]  # unscored: the first ones, as sampled
        scored = [c.with_score("prefix_score", s) for c, s in zip(starts, scores, strict=True)]
        ranked = sorted(scored, key=lambda c: c.scores["prefix_score"], reverse=True)
        return ranked[: self.continued]

    async def _continue(
        self,
        ctx: NodeContext,
        first: GenerationResult,
        chosen: list[tuple[Candidate, int, Choice]],
        logprobs: bool,
    ) -> list[Candidate]:
        """Each chosen start continued from its exact ids; a refused one stays a prefix."""
        if first.prompt_ids is None and chosen:
            raise BackendError("the backend returned no prompt ids to continue from")
        requests = []
        for _, index, choice in chosen:
            # Each continuation its own seed: one shared seed would correlate their draws.
            seed = None if self.seed is None else self.seed + 7_919 * (index + 1)
            if choice.token_ids is None:
                raise BackendError("the backend returned no token ids to continue from")
            requests.append(
                GenerationRequest(
                    prompt_ids=(*(first.prompt_ids or ()), *choice.token_ids),
                    max_tokens=self.max_tokens - len(choice.token_ids),
                    temperature=self.temperature,
                    seed=ctx.seed_for(seed),
                    logprobs=logprobs,
                )
            )
        outcomes = await asyncio.gather(
            *(ctx.generate(r) for r in requests), return_exceptions=True
        )
        finals = []
        for (start, _, _), outcome in zip(chosen, outcomes, strict=True):
            if isinstance(outcome, BudgetExhausted):
                finals.append(
                    start.model_copy(update={"metadata": {**start.metadata, "cut": str(outcome)}})
                )
                continue
            if isinstance(outcome, BaseException):
                raise outcome
            rest = outcome.choices[0]
            joined = None
            if start.token_logprobs is not None and rest.token_logprobs is not None:
                joined = start.token_logprobs + rest.token_logprobs
            finals.append(
                Candidate(
                    text=start.text + rest.text,
                    node=start.node,
                    prompt_tokens=start.prompt_tokens,
                    completion_tokens=start.completion_tokens + rest.completion_tokens,
                    token_logprobs=joined,
                    finish_reason=rest.finish_reason,
                    stop_reason=rest.stop_reason,
                    scores=start.scores,
                    lineage=(start.id,),
                    metadata={**start.metadata, "continued": True},
                )
            )
        return finals

    async def _select(self, ctx: NodeContext, pool: list[Candidate]) -> list[Candidate]:
        # A start whose continuation was refused is a fragment: it competes only if nothing
        # more whole is left (its "answer" would be whatever number it stopped on).
        pool = [c for c in pool if "cut" not in c.metadata] or pool
        if self.select == "best":
            ranked = await self._best(ctx, pool)
            ctx.log_candidates(ranked, kept=[c.id for c in ranked[:1]])
            return ranked
        tally = Tally()
        await cast_votes(ctx, tally, pool, self.answer)
        standings = tally.standings()
        if not standings:
            return pool  # no answer to vote on: the solutions as they are
        total = sum(votes for _, votes in standings)
        ranked = []
        for key, votes in standings:
            members = tally.members[key]
            best = max(members, key=lambda c: c.scores.get("prefix_score", 0.0))
            ranked.append(
                best.with_score("vote_share", votes / total).model_copy(
                    update={"lineage": tuple(c.id for c in members)}
                )
            )
        ctx.log_candidates(tally.voters, kept=[c.id for c in ranked[:1]])
        return ranked

    async def _best(self, ctx: NodeContext, pool: list[Candidate]) -> list[Candidate]:
        name = self.scorer.type
        try:
            ranking = ctx.child(f"rank:{name}", reward=self.scorer.calls_a_model)
            scores = await self.scorer.score(ranking, pool)
        except BudgetExhausted:
            # The solutions are paid for: rank them by their start's score where there is one.
            return sorted(pool, key=lambda c: c.scores.get("prefix_score", 0.0), reverse=True)
        scored = [c.with_score(name, s) for c, s in zip(pool, scores, strict=True)]
        return sorted(scored, key=lambda c: c.scores[name], reverse=True)
