"""Sampling: the leaf of every pipeline."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from itc.backends.base import GenerationRequest, GenerationResult
from itc.nodes import CostBound, Strategy, check_template
from itc.runtime.context import NodeContext
from itc.types import Candidate, Message, Problem


def render_messages(
    problem: Problem, template: str = "{question}", system: str | None = None
) -> tuple[Message, ...]:
    """The chat a generator sends: the problem's own chat, or its prompt in a template."""
    if problem.messages is not None:
        messages = problem.messages
    else:
        messages = (Message(role="user", content=template.format(question=problem.question)),)
    if system is not None and messages[0].role != "system":
        messages = (Message(role="system", content=system), *messages)
    return messages


def sampled(ctx: NodeContext, result: GenerationResult) -> list[Candidate]:
    """A sampling call's choices as candidates of the node at `ctx`."""
    return [
        Candidate(
            text=choice.text,
            node=ctx.path,
            prompt_tokens=result.prompt_tokens,
            completion_tokens=choice.completion_tokens,
            token_logprobs=choice.token_logprobs,
            finish_reason=choice.finish_reason,
            stop_reason=choice.stop_reason,
            metadata={"rollout": ctx.rollout, "index": choice.index},
        )
        for choice in result.choices
    ]


class Generate(Strategy):
    """`n` samples in one request, so the server prefills the shared prompt once."""

    type: Literal["generate"] = "generate"
    n: int = Field(default=1, ge=1, le=256, description="Samples, sent as one request.")
    temperature: float = Field(default=0.7, ge=0.0, description="Sampling temperature.")
    top_p: float = Field(default=1.0, gt=0.0, le=1.0, description="Nucleus sampling mass.")
    max_tokens: int = Field(default=512, ge=1, description="Most tokens one sample may generate.")
    seed: int | None = Field(
        default=0, description="Base seed; each rollout gets its own (null: unseeded, uncached)."
    )
    stop: tuple[str, ...] = Field(default=(), description="Strings that end a sample.")
    system: str | None = Field(default=None, description="A system message put first.")
    template: str = Field(
        default="{question}", description="The user message; {question} is the problem's text."
    )
    top_logprobs: int = Field(
        default=0, ge=0, le=20, description="Alternatives per token to return with logprobs."
    )
    model: str | None = Field(
        default=None,
        description="A named generator of the run (e.g. `itc bench --model-url NAME=URL`) "
        "instead of its own server: an ensemble over several models.",
    )

    @field_validator("template")
    @classmethod
    def _question_only(cls, template: str) -> str:
        return check_template(template, {"question"})

    def max_outputs(self) -> int:
        return self.n

    def worst_case(self, inputs: int | None = 0) -> CostBound:
        return CostBound(completion_tokens=self.n * self.max_tokens, calls=1)

    def request(self, ctx: NodeContext, logprobs: bool = False) -> GenerationRequest:
        """The one request for all `n` samples; `logprobs` asks for token logprobs even when
        nothing in this node or above it needs them."""
        return GenerationRequest(
            messages=render_messages(ctx.problem, self.template, self.system),
            n=self.n,
            temperature=self.temperature,
            top_p=self.top_p,
            max_tokens=self.max_tokens,
            seed=ctx.seed_for(self.seed),
            stop=self.stop,
            logprobs=logprobs or ctx.wants_logprobs or self.top_logprobs > 0,
            top_logprobs=self.top_logprobs,
            model=self.model,
        )

    async def run(self, ctx: NodeContext, inputs: list[Candidate]) -> list[Candidate]:
        return sampled(ctx, await ctx.generate(self.request(ctx)))
