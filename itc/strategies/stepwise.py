"""What every step-level search shares: the root prompt, one step for a batch of partials,
process rewards, the final pick among solutions, and a trace of each round.

The search algorithms (particle filtering, A*, beam search, DVTS) differ only in which
partials they extend and how many children each gets; everything that touches the runtime
is here, so each algorithm file reads as its algorithm.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Literal

from pydantic import Field, field_validator

from itc.nodes import AnswerNode, CostBound, StepScorerNode, Strategy, check_template, total
from itc.runtime.budget import BudgetExhausted
from itc.runtime.context import NodeContext
from itc.runtime.steps import Partial, StepConfig, extend
from itc.runtime.trace import PartialLog, SearchRound
from itc.strategies.generate import render_messages
from itc.types import Candidate
from itc.verifiers.answers import MathAnswer
from itc.verifiers.self_certainty import StepCertainty

DEFAULT_TEMPLATE = "{question}\nSolve it step by step, then finish with: The answer is <number>."


class StepSearch(Strategy):
    """Base of step-level searches: a solution grows one step (a paragraph, by default) at a
    time, each step scored by a process reward (`reward`), and the search decides which
    partial solutions grow. Budgets bind every call: a search stops where the budget does
    and answers from what it has."""

    step: StepConfig = Field(default=StepConfig(), description="What a step is; when to stop.")
    reward: StepScorerNode = Field(
        default=StepCertainty(), description="Process reward scoring each new step."
    )
    answer: AnswerNode = Field(default=MathAnswer(), description="How final answers are read.")
    select: Literal["vote", "best"] = Field(
        default="vote",
        description="Final pick: a vote weighted by the solutions' scores, or the best one.",
    )
    template: str = Field(default=DEFAULT_TEMPLATE, description="The user message.")
    system: str | None = Field(default=None, description="A system message put first.")

    @field_validator("template")
    @classmethod
    def _question_only(cls, template: str) -> str:
        return check_template(template, {"question"})

    def searched(self, steps: int, calls: int) -> CostBound | None:
        """The worst case of a search that samples at most `steps` steps in `calls`
        requests, each step rewarded once."""
        sampling = CostBound(completion_tokens=steps * self.step.max_tokens, calls=calls)
        return total(sampling, self.reward.worst_case_steps(steps))

    def root(self, ctx: NodeContext) -> Partial:
        return Partial(messages=render_messages(ctx.problem, self.template, self.system))

    async def grow(
        self, ctx: NodeContext, parents: Sequence[Partial], n: int | Sequence[int]
    ) -> list[list[Partial]] | None:
        """Children of each parent, one step longer; None once the budget refuses them all."""
        try:
            return await extend(
                ctx.child("step"),
                parents,
                n,
                self.step,
                logprobs=self.reward.needs_token_logprobs or ctx.wants_logprobs,
            )
        except BudgetExhausted:
            return None

    async def rewarded(self, ctx: NodeContext, partials: list[Partial]) -> list[Partial]:
        """The partials with their new steps rewarded (each distinct partial scored once);
        unchanged when the budget refuses the reward model."""
        unique = list({p.id: p for p in partials}.values())
        try:
            scored = {p.id: p for p in await self.reward.score_partials(ctx, unique)}
        except BudgetExhausted:
            return partials
        return [scored[p.id] for p in partials]

    def score(self, partial: Partial) -> float:
        """A partial's prefix score: its step rewards folded by the reward's aggregate."""
        return self.reward.prefix_score(partial)

    async def finish(
        self, ctx: NodeContext, partials: Sequence[Partial], weights: Sequence[float] | None = None
    ) -> list[Candidate]:
        """The final candidates, best first: finished solutions when there are any, each
        weighted by `weights` (default: its score), picked by vote or by best weight."""
        if weights is None:
            weights = [self.score(p) for p in partials]
        pool = [(p, w) for p, w in zip(partials, weights, strict=True) if p.finished]
        pool = pool or list(zip(partials, weights, strict=True))
        weight_of: dict[str, float] = defaultdict(float)
        unique: dict[str, Partial] = {}
        for partial, weight in pool:
            weight_of[partial.id] += weight
            unique[partial.id] = partial
        candidates = [
            self._candidate(ctx, p, weight_of[p.id]) for p in unique.values()
        ]
        if self.select == "best":
            candidates.sort(key=lambda c: c.scores["weight"], reverse=True)
            ctx.log_candidates(candidates, kept=[c.id for c in candidates[:1]])
            return candidates
        return await self._vote(ctx, candidates)

    def _candidate(self, ctx: NodeContext, partial: Partial, weight: float) -> Candidate:
        return Candidate(
            text=partial.text,
            node=ctx.path,
            completion_tokens=partial.completion_tokens,
            finish_reason=partial.finish_reason,
            answer=self.answer.extract(partial.text),
            scores={"reward": self.score(partial), "weight": weight},
            metadata={"steps": len(partial.steps), "partial": partial.id},
        )

    async def _vote(self, ctx: NodeContext, candidates: list[Candidate]) -> list[Candidate]:
        totals: dict[str | None, float] = defaultdict(float)
        members: dict[str | None, list[Candidate]] = defaultdict(list)
        for candidate in candidates:
            answer = candidate.answer
            key = None if answer is None else await self.answer.key(answer, ctx.grader)
            totals[key] += candidate.scores["weight"]
            members[key].append(candidate)
        everything = sum(totals.values()) or 1.0
        # Answered groups first; ties go to the answer seen first (reproducible).
        order = sorted(totals, key=lambda k: (k is None, -totals[k]))
        ranked = []
        for key in order:
            best = max(members[key], key=lambda c: c.scores["weight"])
            ranked.append(
                best.with_score("vote_share", totals[key] / everything).model_copy(
                    update={"lineage": tuple(c.id for c in members[key])}
                )
            )
        ctx.log_candidates(candidates, kept=[c.id for c in ranked[:1]])
        return ranked

    def log_round(
        self,
        ctx: NodeContext,
        number: int,
        partials: Sequence[Partial],
        weights: Sequence[float] | None = None,
        copies: Sequence[int] | None = None,
        note: str | None = None,
    ) -> None:
        """Record a round in the trace: every distinct partial, its reward, weight and how
        many places it holds next round."""
        entries: dict[str, PartialLog] = {}
        for i, partial in enumerate(partials):
            entry = entries.get(partial.id)
            if entry is None:
                entries[partial.id] = PartialLog(
                    id=partial.id,
                    parent=partial.parent,
                    steps=len(partial.steps),
                    tokens=partial.completion_tokens,
                    reward=self.score(partial) if partial.rewards else None,
                    weight=None if weights is None else weights[i],
                    copies=1 if copies is None else copies[i],
                    finished=partial.finished,
                )
            else:
                # A duplicated partial (after resampling): one entry, its weights and places summed.
                if weights is not None and entry.weight is not None:
                    entry.weight += weights[i]
                entry.copies += 1 if copies is None else copies[i]
        ctx.trace.search.append(
            SearchRound(node=ctx.path, round=number, partials=list(entries.values()), note=note)
        )
