"""Partial solutions and their exact extension by one step: what step-level search stands on.

A `Partial` carries the token ids of its prompt and of every step it took, so extending it
sends those ids through the completions API unchanged: no text is ever re-tokenised at a step
boundary (its_hub's chat continuation is not token-exact). Siblings of one parent go out as
one request with `n`, so the server prefills their shared prefix once.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field

from itc.backends.base import BackendError, GenerationRequest
from itc.runtime.budget import BudgetExhausted
from itc.runtime.context import NodeContext
from itc.types import Message


class StepConfig(BaseModel):
    """How one step is sampled and when a solution is finished."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    delimiter: str = Field(default="\n\n", min_length=1, description="What ends a step.")
    max_tokens: int = Field(default=128, ge=1, description="Most tokens one step may take.")
    max_steps: int = Field(default=12, ge=1, description="A solution stops after this many.")
    answer_marker: str | None = Field(
        default="answer is",
        description="Text that finishes a solution once something is stated after it.",
    )
    temperature: float = Field(default=0.7, ge=0.0, description="Sampling temperature.")
    seed: int | None = Field(default=0, description="Base seed (null: unseeded).")


def _next_partial_id() -> str:
    return uuid.uuid4().hex[:10]


class Partial(BaseModel):
    """A solution in progress: the prompt, the steps so far in text and token ids."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(default_factory=_next_partial_id)
    parent: str | None = None
    """The id of the partial this one extends by a step."""
    messages: tuple[Message, ...]
    prompt_ids: tuple[int, ...] | None = None
    """The chat rendered to ids, known once the first step came back."""
    steps: tuple[str, ...] = ()
    step_ids: tuple[tuple[int, ...], ...] = ()
    step_logprobs: tuple[float | None, ...] = ()
    """Each step's mean token logprob, when logprobs were asked for."""
    rewards: tuple[float, ...] = ()
    """A process reward per step scored so far (a step scorer fills them in)."""
    finished: bool = False
    finish_reason: str | None = None
    """"eos", "answer" or "max_steps"; None while it goes on."""

    @property
    def ids(self) -> tuple[int, ...]:
        """Prompt plus steps, exactly as the model saw and produced them."""
        assert self.prompt_ids is not None, "a root partial has no ids before its first step"
        return self.prompt_ids + tuple(i for step in self.step_ids for i in step)

    @property
    def text(self) -> str:
        return "".join(self.steps)

    @property
    def completion_tokens(self) -> int:
        return sum(len(step) for step in self.step_ids)

    def prefix(self, depth: int) -> Partial:
        """The same solution cut back to its first `depth` steps (unfinished unless whole)."""
        if depth >= len(self.steps):
            return self
        return self.model_copy(
            update={
                "steps": self.steps[:depth],
                "step_ids": self.step_ids[:depth],
                "step_logprobs": self.step_logprobs[:depth],
                "rewards": self.rewards[:depth],
                "finished": False,
                "finish_reason": None,
            }
        )


def _step_request(
    ctx: NodeContext, parent: Partial, index: int, n: int, config: StepConfig, logprobs: bool
) -> GenerationRequest:
    # Duplicated parents (after resampling) must not draw the same continuations: the seed
    # depends on the parent's place in the batch and its depth as well as the rollout.
    seed = None
    if config.seed is not None:
        seed = ctx.seed_for(config.seed + 7_919 * len(parent.steps) + 104_729 * index)
    common = {
        "n": n,
        "max_tokens": config.max_tokens,
        "temperature": config.temperature,
        "seed": seed,
        "stop": (config.delimiter,),
        "include_stop_str_in_output": True,
        "logprobs": logprobs,
    }
    if parent.prompt_ids is None:
        return GenerationRequest(messages=parent.messages, **common)
    return GenerationRequest(prompt_ids=parent.ids, **common)


async def extend(
    ctx: NodeContext,
    parents: Sequence[Partial],
    n: int | Sequence[int],
    config: StepConfig,
    *,
    logprobs: bool = False,
) -> list[list[Partial]]:
    """Each unfinished parent's `n` children (or `n[i]` for parent i), one step longer;
    finished parents and parents asked for 0 get none.

    All parents' requests go out at once. A parent whose request the budget refuses gets no
    children; when every request is refused, the refusal is raised.
    """
    counts = [n] * len(parents) if isinstance(n, int) else list(n)
    if len(counts) != len(parents):
        raise ValueError(f"{len(counts)} child counts for {len(parents)} parents")
    live = [(i, p) for i, p in enumerate(parents) if not p.finished and counts[i] > 0]
    requests = [_step_request(ctx, p, i, counts[i], config, logprobs) for i, p in live]
    outcomes = await asyncio.gather(
        *(ctx.generate(r) for r in requests), return_exceptions=True
    )
    children: list[list[Partial]] = [[] for _ in parents]
    refusals = [o for o in outcomes if isinstance(o, BudgetExhausted)]
    for (index, parent), outcome in zip(live, outcomes, strict=True):
        if isinstance(outcome, BudgetExhausted):
            continue
        if isinstance(outcome, BaseException):
            raise outcome
        prompt_ids = parent.prompt_ids if parent.prompt_ids is not None else outcome.prompt_ids
        if prompt_ids is None:
            raise BackendError("the backend returned no prompt ids: steps cannot extend exactly")
        for choice in outcome.choices:
            if choice.token_ids is None:
                raise BackendError("the backend returned no token ids for a step")
            steps = (*parent.steps, choice.text)
            children[index].append(
                Partial(
                    parent=parent.id,
                    messages=parent.messages,
                    prompt_ids=prompt_ids,
                    steps=steps,
                    step_ids=(*parent.step_ids, choice.token_ids),
                    step_logprobs=(*parent.step_logprobs, _mean(choice.token_logprobs)),
                    rewards=parent.rewards,
                    finished=(reason := _finish(choice.finish_reason, choice.stop_reason,
                                                "".join(steps), len(steps), config)) is not None,
                    finish_reason=reason,
                )
            )
    if live and len(refusals) == len(live):
        raise refusals[0]
    return children


def _finish(
    finish_reason: str | None, stop_reason: str | int | None, text: str, depth: int,
    config: StepConfig,
) -> str | None:
    if finish_reason == "stop" and stop_reason is None:
        return "eos"
    if config.answer_marker is not None and _states_answer(text, config.answer_marker):
        return "answer"
    if depth >= config.max_steps:
        return "max_steps"
    return None


def _states_answer(text: str, marker: str) -> bool:
    """The marker is there and something is stated after it ("The answer is:" alone, with the
    number in the next paragraph, is not yet an answer)."""
    at = text.lower().rfind(marker.lower())
    return at >= 0 and any(c.isalnum() for c in text[at + len(marker) :])


def _mean(values: Sequence[float] | None) -> float | None:
    return sum(values) / len(values) if values else None
