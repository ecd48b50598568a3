"""An LLM judge that reads its verdict from logprobs instead of parsing free text."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from typing import ClassVar, Literal

from pydantic import Field, field_validator

from itc.backends.base import GenerationRequest, GenerationResult, StructuredOutputs
from itc.nodes import CostBound, Scorer, StepScorer, check_template
from itc.runtime.context import NodeContext
from itc.runtime.steps import Partial
from itc.types import Candidate, Message

DEFAULT_TEMPLATE = (
    "Question:\n{question}\n\nProposed solution:\n{solution}\n\n"
    "Is the proposed solution correct? Answer Yes or No."
)


def p_yes(top_logprobs: dict[str, float], yes: str = "yes", no: str = "no") -> float:
    """P(yes) / (P(yes) + P(no)) over the first token's alternatives.

    Spelling variants (" Yes", "YES") are pooled. A verdict missing from the top list is
    bounded by the smallest probability shown, so one-sided evidence stays one-sided.
    """
    mass = {yes: 0.0, no: 0.0}
    for token, logprob in top_logprobs.items():
        word = token.strip().lower()
        if word in mass:
            mass[word] += math.exp(logprob)
    if mass[yes] == mass[no] == 0.0:
        return 0.5
    floor = math.exp(min(top_logprobs.values())) if top_logprobs else 0.0
    p, q = mass[yes] or floor, mass[no] or floor
    return p / (p + q)


def _verdict_request(messages: Sequence[Message], top_logprobs: int) -> GenerationRequest:
    """One greedy token constrained to Yes or No, with `top_logprobs` alternatives."""
    return GenerationRequest(
        messages=tuple(messages),
        max_tokens=1,
        temperature=0.0,
        top_logprobs=top_logprobs,
        structured_outputs=StructuredOutputs(choice=("Yes", "No")),
    )


def _judge_messages(prompt: str, system: str | None) -> list[Message]:
    """The prompt as a user turn, after the system message if there is one (not empty)."""
    user = Message(role="user", content=prompt)
    return [Message(role="system", content=system), user] if system else [user]


def _verdict(result: GenerationResult) -> float:
    """P(yes) read from a verdict's first token (0.5 when it came without alternatives)."""
    tops = result.choices[0].top_logprobs
    return p_yes(tops[0]) if tops else 0.5


async def _verdicts(ctx: NodeContext, requests: list[GenerationRequest]) -> list[float]:
    """P(yes) of each verdict request, all sent together."""
    return [_verdict(r) for r in await asyncio.gather(*(ctx.generate(q) for q in requests))]


def _verdicts_cost(count: int | None) -> CostBound | None:
    """The worst case of `count` verdicts: one reward call and one token each."""
    if count is None:
        return None
    return CostBound(completion_tokens=count, calls=count, reward_calls=count)


class LLMJudge(Scorer):
    """Asks the served model whether each candidate is correct: one token, read as P(Yes).

    The question comes first in the prompt so all judgements of one problem share a prefix
    that the server's prefix cache reuses; they are sent together.
    """

    type: Literal["llm_judge"] = "llm_judge"
    calls_a_model: ClassVar[bool] = True
    template: str = Field(
        default=DEFAULT_TEMPLATE, description="The question to the judge: {question}, {solution}."
    )
    system: str | None = Field(default=None, description="A system message for the judge.")
    top_logprobs: int = Field(
        default=20, ge=2, le=20, description="Alternatives read for the Yes/No verdict."
    )
    max_solution_chars: int = Field(
        default=6000, ge=100, description="Only the end of a longer solution is shown."
    )

    @field_validator("template")
    @classmethod
    def _question_and_solution(cls, template: str) -> str:
        return check_template(template, {"question", "solution"})

    def request(self, ctx: NodeContext, candidate: Candidate) -> GenerationRequest:
        prompt = self.template.format(
            question=ctx.problem.question, solution=candidate.text[-self.max_solution_chars :]
        )
        return _verdict_request(_judge_messages(prompt, self.system), self.top_logprobs)

    async def score(self, ctx: NodeContext, candidates: list[Candidate]) -> list[float]:
        return await _verdicts(ctx, [self.request(ctx, c) for c in candidates])

    def worst_case(self, candidates: int | None) -> CostBound | None:
        return _verdicts_cost(candidates)


PROBE = (
    "Stop here. Is the solution so far on the right track to answer the question correctly? "
    "Answer Yes or No."
)


class PartialProbe(Scorer):
    """Self-evaluation of a partial (or whole) answer: the solution goes back to the model as
    its own assistant turn, followed by one question; the first token is read as P(Yes).

    The chat begins with the problem (its own chat, or its question as a user turn, without
    the sampler's template), so all probes of one problem share that prefix in the server's
    cache; they are sent together.
    """

    type: Literal["partial_probe"] = "partial_probe"
    calls_a_model: ClassVar[bool] = True
    probe: str = Field(default=PROBE, min_length=1, description="Asked after the solution.")
    top_logprobs: int = Field(
        default=20, ge=2, le=20, description="Alternatives read for the Yes/No verdict."
    )
    max_solution_chars: int = Field(
        default=6000, ge=100, description="Only the end of a longer solution is shown."
    )

    def request(self, ctx: NodeContext, candidate: Candidate) -> GenerationRequest:
        problem = ctx.problem
        chat = problem.messages or (Message(role="user", content=problem.question),)
        solution = Message(role="assistant", content=candidate.text[-self.max_solution_chars :])
        probe = Message(role="user", content=self.probe)
        return _verdict_request((*chat, solution, probe), self.top_logprobs)

    async def score(self, ctx: NodeContext, candidates: list[Candidate]) -> list[float]:
        return await _verdicts(ctx, [self.request(ctx, c) for c in candidates])

    def worst_case(self, candidates: int | None) -> CostBound | None:
        return _verdicts_cost(candidates)


STEP_TEMPLATE = (
    "Question:\n{question}\n\nSteps so far:\n{previous}\n\nLatest step:\n{step}\n\n"
    "Is the latest step correct? Answer Yes or No."
)


class StepJudge(StepScorer):
    """A process reward from a judge model: P(Yes) that a prefix's latest step is correct,
    read from one constrained token's logprobs (no reward model needed).

    The question comes first so one problem's judgements share a cached prefix; all
    prefixes are judged at once. Its calls are reward calls (`Budget.reward_calls`).
    """

    type: Literal["step_judge"] = "step_judge"
    template: str = Field(
        default=STEP_TEMPLATE,
        description="The question to the judge: {question}, {previous} (earlier steps), {step}.",
    )
    system: str | None = Field(default=None, description="A system message for the judge.")
    top_logprobs: int = Field(
        default=20, ge=2, le=20, description="Alternatives read for the Yes/No verdict."
    )
    max_previous_chars: int = Field(
        default=4000, ge=100, description="Only the end of longer earlier steps is shown."
    )
    calls_a_model: ClassVar[bool] = True

    @field_validator("template")
    @classmethod
    def _placeholders(cls, template: str) -> str:
        return check_template(template, {"question", "previous", "step"})

    def step_request(self, ctx: NodeContext, prefix: Partial) -> GenerationRequest:
        *before, latest = prefix.steps or ("",)
        previous = "\n".join(s.strip() for s in before)[-self.max_previous_chars :]
        prompt = self.template.format(
            question=ctx.problem.question, previous=previous or "(none)", step=latest.strip()
        )
        return _verdict_request(_judge_messages(prompt, self.system), self.top_logprobs)

    async def score_steps(self, ctx: NodeContext, prefixes: list[Partial]) -> list[float]:
        outcomes = await asyncio.gather(
            *(ctx.generate(self.step_request(ctx, p)) for p in prefixes), return_exceptions=True
        )
        rewards: list[float] = []
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome  # after every call settled: a refusal leaves no call running
            rewards.append(_verdict(outcome))
        return rewards

    def worst_case_steps(self, steps: int) -> CostBound | None:
        return _verdicts_cost(steps)
