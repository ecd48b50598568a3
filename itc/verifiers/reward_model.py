"""Reward models served by vLLM's pooling runner, on a backend of their own.

A process reward model (`/pooling`, token classification) answers one [p_negative,
p_positive] row per step-tag token; an outcome reward model (`/classify`) one row for the
whole solution. Both are reached through `NodeContext.pool`, so every call is a metered
reward call on the runtime's named backend, apart from the generator.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable, Sequence
from typing import ClassVar, Literal, TypeVar

from pydantic import Field, field_validator

from itc.backends.base import BackendError, PoolingRequest, PoolingResult, PoolingTask
from itc.nodes import CostBound, Scorer, StepScorer, check_template
from itc.runtime.context import NodeContext
from itc.runtime.steps import Partial
from itc.types import Candidate, Message

T = TypeVar("T")

MATH_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."
"""The system message Qwen2.5-Math's reward models were trained with."""


_STEP_HINT = (
    " (one per step tag): the server must keep only step-tag tokens, as a PRM such as "
    "Qwen2.5-Math-PRM does by itself; serve another model with `--pooler-config "
    '\'{"task": "token_classify", "tok_pooling_type": "STEP", "step_tag_id": ID}\'` '
    "(`itc serve --runner pooling --step-tag-id ID`), and make `step_tag` that one token"
)


def _render(
    ctx: NodeContext, task: PoolingTask, solution: str, system: str | None, template: str | None
) -> PoolingRequest:
    """The question and a solution as a chat (system, the question as the user, the solution
    as the assistant) for the server's chat template, or as a raw text `template`."""
    question = ctx.problem.question
    if template is not None:
        return PoolingRequest(
            task=task, prompt=template.format(question=question, solution=solution)
        )
    messages = [
        Message(role="user", content=question),
        Message(role="assistant", content=solution),
    ]
    if system:
        messages.insert(0, Message(role="system", content=system))
    return PoolingRequest(task=task, messages=tuple(messages))


def _positives(
    result: PoolingResult, expected: int, positive: int, backend: str, endpoint: str
) -> list[float]:
    """The positive-class probability of each row, checked against the rows expected."""
    if len(result.rows) != expected:
        hint = _STEP_HINT if endpoint == "/pooling" else ""
        raise BackendError(
            f"backend {backend!r}: {endpoint} answered {len(result.rows)} rows where "
            f"{expected} were expected{hint}"
        )
    if result.rows and not 0 <= positive < len(result.rows[0]):
        raise BackendError(
            f"backend {backend!r}: {endpoint} rows have {len(result.rows[0])} classes; "
            f"there is no positive label at index {positive}"
        )
    return [row[positive] for row in result.rows]


class ProcessRewardModel(StepScorer):
    """A process reward model (Qwen2.5-Math-PRM style) on the runtime's backend `backend`.

    A prefix is rendered as the question and its steps, each step followed by `step_tag`;
    the server answers a row per tag and a step's reward is its row's positive probability.
    The model is causal, so the rows of a longer prefix are the rewards of its shorter
    prefixes too: prefixes of one partial scored together cost one call. With
    `whole_prefix` the prefix is scored as one step ("model aggregation": the PRM as an
    outcome model on the partial answer, which particle filtering's authors found to scale
    best).
    """

    type: Literal["prm"] = "prm"
    backend: str = Field(default="prm", description="The runtime backend serving the PRM.")
    step_tag: str = Field(
        default="<extra_0>", min_length=1, description="The token that follows each step."
    )
    system: str | None = Field(default=MATH_SYSTEM, description="System message of the chat.")
    template: str | None = Field(
        default=None,
        description="A raw text prompt with {question} and {solution} (the tagged steps); "
        "null: a chat rendered by the server's chat template.",
    )
    whole_prefix: bool = Field(
        default=False, description="Score the whole prefix as one step (model aggregation)."
    )
    positive: int = Field(default=1, ge=0, description="Index of the positive class in a row.")
    calls_a_model: ClassVar[bool] = True

    @field_validator("template")
    @classmethod
    def _question_and_solution(cls, template: str | None) -> str | None:
        return None if template is None else check_template(template, {"question", "solution"})

    def tagged(self, steps: Sequence[str]) -> str:
        """The steps as the PRM reads them: each stripped and followed by the step tag."""
        clean = [s.replace(self.step_tag, "").strip() for s in steps]
        if self.whole_prefix:
            return "\n\n".join(clean) + self.step_tag
        return "".join(s + self.step_tag for s in clean)

    async def score_steps(self, ctx: NodeContext, prefixes: list[Partial]) -> list[float]:
        if self.whole_prefix:
            return [rows[-1] for rows in await _settled(self._rewards(ctx, p) for p in prefixes)]
        # The model is causal: a prefix's rows are also the rewards of its shorter prefixes.
        longest: dict[str, Partial] = {}
        for p in prefixes:
            if len(p.steps) >= len(longest.get(p.id, p).steps):
                longest[p.id] = p
        sources = [
            longest[p.id] if longest[p.id].steps[: len(p.steps)] == p.steps else p for p in prefixes
        ]
        calls = {(s.id, s.steps): s for s in sources}
        rows = await _settled(self._rewards(ctx, s) for s in calls.values())
        found = dict(zip(calls, rows, strict=True))
        return [
            found[s.id, s.steps][len(p.steps) - 1] for p, s in zip(prefixes, sources, strict=True)
        ]

    async def _rewards(self, ctx: NodeContext, prefix: Partial) -> list[float]:
        """The reward of each step of `prefix` (one, for the whole prefix)."""
        solution = self.tagged(prefix.steps)
        request = _render(ctx, "token_classify", solution, self.system, self.template)
        result = await ctx.pool(self.backend, request)
        expected = 1 if self.whole_prefix else len(prefix.steps)
        return _positives(result, expected, self.positive, self.backend, "/pooling")

    def worst_case_steps(self, steps: int) -> CostBound | None:
        # At most one pooling call per step (a partial's steps scored together share one);
        # the reward model generates nothing.
        return CostBound(calls=steps, reward_calls=steps)


class OutcomeRewardModel(Scorer):
    """An outcome reward model on the runtime's backend `backend`, through `/classify`: a
    solution's score is the probability of the positive label for the question and it."""

    type: Literal["orm"] = "orm"
    backend: str = Field(default="orm", description="The runtime backend serving the ORM.")
    system: str | None = Field(default=MATH_SYSTEM, description="System message of the chat.")
    template: str | None = Field(
        default=None,
        description="A raw text prompt with {question} and {solution}; null: a chat "
        "rendered by the server's chat template.",
    )
    positive: int = Field(default=1, ge=0, description="Index of the positive label.")
    max_solution_chars: int = Field(
        default=8000, ge=100, description="Only the end of a longer solution is shown."
    )
    calls_a_model: ClassVar[bool] = True

    @field_validator("template")
    @classmethod
    def _question_and_solution(cls, template: str | None) -> str | None:
        return None if template is None else check_template(template, {"question", "solution"})

    async def score(self, ctx: NodeContext, candidates: list[Candidate]) -> list[float]:
        async def classify(candidate: Candidate) -> float:
            solution = candidate.text[-self.max_solution_chars :]
            request = _render(ctx, "classify", solution, self.system, self.template)
            result = await ctx.pool(self.backend, request)
            return _positives(result, 1, self.positive, self.backend, "/classify")[0]

        return await _settled(classify(c) for c in candidates)

    def worst_case(self, candidates: int | None) -> CostBound | None:
        return None if candidates is None else CostBound(calls=candidates, reward_calls=candidates)


async def _settled(calls: Iterable[Awaitable[T]]) -> list[T]:
    """All results, or the first failure once every call has settled (a budget refusal of
    one leaves no other call running unattended)."""
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    results: list[T] = []
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome
        results.append(outcome)
    return results
