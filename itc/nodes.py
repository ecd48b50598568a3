"""The one node contract every strategy follows, and the other parts a pipeline is made of.

A strategy is a pydantic model (so it is config data: it validates, dumps to YAML/JSON and
loads back) with one async method, `run(ctx, inputs) -> candidates`, best first. `inputs`
are the candidates of the node's parents in the pipeline graph; a nested strategy (an
`inner` field) is run by its parent through `ctx.child(...)`. Strategies never see HTTP:
all they can do is ask `ctx.generate`. Scorers turn candidates into scores; an `Answer` says
how a final answer is read from a solution, keyed for votes and graded against a gold answer.
"""

from __future__ import annotations

import math
import string
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializeAsAny,
    SerializerFunctionWrapHandler,
    model_serializer,
    model_validator,
)

from itc.runtime.context import Grader, NodeContext
from itc.runtime.steps import Partial
from itc.types import Candidate, Message, Problem


class Component(BaseModel):
    """Base of every config-as-data part that is chosen by its `type` name."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: str
    kind: ClassVar[str] = "component"
    always_written: ClassVar[tuple[str, ...]] = ("type",)
    """Fields a minimal dump keeps even at their default value."""


PARENT = "from"
"""The metadata key of a graph input naming the parent node that passed it in."""


class Strategy(Component):
    """A node: `run(ctx, inputs)` returns candidates, best first.

    Graph `inputs` arrive as one list, parent by parent in `inputs` order, each candidate
    marked by the planner with the parent that passed it (`metadata["from"]`). A node that
    combines several parents (a fuser over answers and their critiques) takes the list apart
    again with `by_parent`; every other node reads it flat, as before.
    """

    kind: ClassVar[str] = "strategy"

    inputs: tuple[str, ...] = ()
    """Names of parent nodes in a pipeline graph (top-level nodes only)."""

    def by_parent(self, inputs: Sequence[Candidate]) -> dict[str, list[Candidate]]:
        """The inputs grouped by the parent that passed them, in `inputs` order (a parent
        that passed nothing has an empty group). Candidates with no mark, given to a node run
        directly rather than by the planner, form the group ""."""
        groups: dict[str, list[Candidate]] = {name: [] for name in self.inputs}
        for candidate in inputs:
            groups.setdefault(str(candidate.metadata.get(PARENT, "")), []).append(candidate)
        return groups

    async def run(self, ctx: NodeContext, inputs: list[Candidate]) -> list[Candidate]:
        raise NotImplementedError

    def max_outputs(self) -> int | None:
        """Upper bound on how many candidates one run returns, if known (for early stops)."""
        return None

    def worst_case(self, inputs: int | None = 0) -> CostBound | None:
        """The most one run may spend on a problem, known before any call (None: unbounded
        or unknown); `inputs` bounds how many candidates its graph inputs bring."""
        return None

    def wants_input_logprobs(self) -> bool:
        """Whether this node reads the token logprobs of its graph inputs (so the planner
        asks the nodes feeding it to request them)."""
        return False


class Aggregator(Strategy):
    """A strategy over candidates: its graph `inputs` plus what its `inner` strategy proposes.

    Given `inputs` and no `inner`, it aggregates the inputs alone (a default sampler would add
    candidates nobody asked for); with neither there is nothing to aggregate, which is an error
    at load time rather than an empty answer at run time.
    """

    inner: StrategyNode | None = None
    always_written: ClassVar[tuple[str, ...]] = ("type", "inner")

    @model_validator(mode="before")
    @classmethod
    def _inputs_replace_the_default_inner(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and data.get("inputs") and "inner" not in data:
            return {**data, "inner": None}
        return data

    @model_validator(mode="after")
    def _has_candidates(self) -> Aggregator:
        if self.inner is None and not self.inputs:
            raise ValueError("needs an `inner` strategy or graph `inputs`: nothing to aggregate")
        return self


class CostBound(BaseModel):
    """An upper bound on what a node may spend on one problem, known before any call: what
    `Budget.completion_tokens`, `calls` and `reward_calls` limit. Prompt tokens are left out
    (they depend on the problem and on what was generated before; the budgets a search sets
    bind generated tokens). Each request counts once: a backend's retries of a failed
    attempt add calls the runtime's hard budget still binds."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    completion_tokens: int = Field(default=0, ge=0, description="Generated tokens.")
    calls: int = Field(default=0, ge=0, description="Requests, reward-model ones included.")
    reward_calls: int = Field(default=0, ge=0, description="Requests to a reward model.")

    def __add__(self, other: CostBound) -> CostBound:
        return CostBound(
            completion_tokens=self.completion_tokens + other.completion_tokens,
            calls=self.calls + other.calls,
            reward_calls=self.reward_calls + other.reward_calls,
        )

    def __mul__(self, times: int) -> CostBound:
        return CostBound(
            completion_tokens=self.completion_tokens * times,
            calls=self.calls * times,
            reward_calls=self.reward_calls * times,
        )


def total(*bounds: CostBound | None) -> CostBound | None:
    """The sum of the bounds, or None when any of them is unbounded."""
    if any(b is None for b in bounds):
        return None
    return sum((b for b in bounds if b is not None), CostBound())


def check_template(template: str, allowed: Iterable[str]) -> str:
    """A `str.format` template using only the allowed placeholders, checked at load time."""
    allowed = set(allowed)
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as error:
        raise ValueError(f"not a valid template: {error}") from None
    unknown = sorted(n for n in names if n.split(".")[0].split("[")[0] not in allowed)
    if unknown or "" in names:
        shown = ", ".join("{" + n + "}" for n in unknown or [""])
        known = ", ".join("{" + a + "}" for a in sorted(allowed))
        raise ValueError(f"unknown placeholder {shown}; the template may use {known}")
    return template


class Scorer(Component):
    """Turns candidates into scores in [0, 1], higher is better."""

    kind: ClassVar[str] = "scorer"
    needs_token_logprobs: ClassVar[bool] = False
    """Whether scores are read from the candidates' token logprobs (requested only then)."""
    calls_a_model: ClassVar[bool] = False
    """Its calls go to a reward model (a judge, a PRM), counted against
    `Budget.reward_calls` as well as `calls`."""

    def context(self, ctx: NodeContext) -> NodeContext:
        """The context its calls are made in: named after it, marked as reward calls."""
        return ctx.child(f"scorer:{self.type}", reward=self.calls_a_model)

    async def score(self, ctx: NodeContext, candidates: list[Candidate]) -> list[float]:
        raise NotImplementedError

    def worst_case(self, candidates: int | None) -> CostBound | None:
        """The most scoring `candidates` candidates may spend (None: how many is unknown, or
        the cost is); a free scorer costs nothing however many there are."""
        return None


Aggregate = Literal["min", "mean", "last", "product"]


def fold(rewards: Sequence[float], aggregate: Aggregate) -> float:
    """Step rewards folded into one prefix score."""
    if not rewards:
        return 0.5
    if aggregate == "min":
        return min(rewards)
    if aggregate == "mean":
        return sum(rewards) / len(rewards)
    if aggregate == "last":
        return rewards[-1]
    return math.prod(rewards)


class StepScorer(Scorer):
    """A process reward: scores the latest step of partial solutions (its_hub's tiny PRM
    interface, `score(prompt, steps)`, over a batch).

    Step-level searches call `score_partials` each round; only steps not scored before are
    scored, so a round costs one reward per new step. Used as a plain scorer (best-of-N,
    vote weights) a whole solution is split at `delimiter` and its step rewards are folded
    by `aggregate`.
    """

    aggregate: Aggregate = Field(default="min", description="How step rewards fold into one.")
    delimiter: str = Field(
        default="\n\n", min_length=1, description="Splits a whole solution into steps."
    )
    async def score_steps(self, ctx: NodeContext, prefixes: list[Partial]) -> list[float]:
        """The reward in [0, 1] of each prefix's last step, given the steps before it."""
        raise NotImplementedError

    def worst_case_steps(self, steps: int) -> CostBound | None:
        """The most rewarding `steps` new steps may spend (None: unknown)."""
        return None

    def worst_case(self, candidates: int | None) -> CostBound | None:
        # A whole solution's steps are not counted before it is written: bounded only when
        # rewarding a step is free.
        free = self.worst_case_steps(1)
        return free if free == CostBound() else None

    def prefix_score(self, partial: Partial) -> float:
        return fold(partial.rewards, self.aggregate)

    async def score_partials(self, ctx: NodeContext, partials: list[Partial]) -> list[Partial]:
        """The partials with every step rewarded (steps scored before keep their reward)."""
        wanted = [
            (i, depth)
            for i, p in enumerate(partials)
            for depth in range(len(p.rewards) + 1, len(p.steps) + 1)
        ]
        if not wanted:
            return list(partials)
        scoring = ctx.child(f"reward:{self.type}", reward=self.calls_a_model)
        rewards = await self.score_steps(scoring, [partials[i].prefix(d) for i, d in wanted])
        found: dict[int, list[float]] = {}
        for (i, _), reward in zip(wanted, rewards, strict=True):
            found.setdefault(i, []).append(min(1.0, max(0.0, reward)))
        return [
            p.model_copy(update={"rewards": (*p.rewards, *found[i])}) if i in found else p
            for i, p in enumerate(partials)
        ]

    async def score(self, ctx: NodeContext, candidates: list[Candidate]) -> list[float]:
        messages = (Message(role="user", content=ctx.problem.question),)
        partials = [
            Partial(
                messages=messages,
                steps=tuple(s for s in c.text.split(self.delimiter) if s.strip()) or (c.text,),
            )
            for c in candidates
        ]
        scored = await self.score_partials(ctx, partials)
        return [self.prefix_score(p) for p in scored]


class Answer(Component):
    """How final answers are read, compared and graded: one kind per answer shape.

    The planner uses `extract` for a pipeline's answer, a vote groups candidates by `key`, and
    the benchmark runner grades with `is_correct`, so all three agree. A kind with default
    settings is written as its bare name (`answer: math`) in configs.
    """

    kind: ClassVar[str] = "answer"

    def extract(self, text: str) -> str | None:
        """The final answer stated in `text`, or None when it states none."""
        raise NotImplementedError

    async def key(self, answer: str, grader: Grader | None = None) -> str | None:
        """Equal keys mean equivalent answers."""
        raise NotImplementedError

    async def is_correct(
        self, problem: Problem, answer: str | None, text: str | None, grader: Grader | None = None
    ) -> bool | None:
        """Whether the answer (or, for kinds that need it, the whole text) solves `problem`;
        None when the problem has no gold answer to compare with."""
        raise NotImplementedError

    def read(self, candidate: Candidate) -> str | None:
        """The candidate's answer: the one a node already read, else extracted from its text."""
        return candidate.answer if candidate.answer is not None else self.extract(candidate.text)

    @model_serializer(mode="wrap")
    def _short_form(self, handler: SerializerFunctionWrapHandler) -> Any:
        defaults = all(
            getattr(self, name) == field.get_default(call_default_factory=True)
            for name, field in type(self).model_fields.items()
        )
        return self.type if defaults else handler(self)


def from_parent(candidate: Candidate, parent: str) -> Candidate:
    """The candidate marked as passed in by the graph node `parent` (see `Strategy`)."""
    return candidate.model_copy(update={"metadata": {**candidate.metadata, PARENT: parent}})


StrategyNode = SerializeAsAny[Strategy]
ScorerNode = SerializeAsAny[Scorer]
StepScorerNode = SerializeAsAny[StepScorer]
AnswerNode = SerializeAsAny[Answer]
