"""Core value types shared by every layer: problems, candidates, usage and budgets."""

from __future__ import annotations

import uuid
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    model_serializer,
    model_validator,
)

Role = Literal["system", "user", "assistant"]


class Message(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    role: Role
    content: str


class Problem(BaseModel):
    """One task to solve: a plain prompt or a chat, with an optional reference answer."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    prompt: str | None = None
    messages: tuple[Message, ...] | None = None
    answer: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _has_content(self) -> Problem:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("a problem needs exactly one of 'prompt' or 'messages'")
        return self

    @property
    def question(self) -> str:
        """The user's text, for prompts that quote the problem (judges, fusers)."""
        if self.prompt is not None:
            return self.prompt
        assert self.messages is not None
        return next((m.content for m in reversed(self.messages) if m.role == "user"), "")


def _next_candidate_id() -> str:
    return uuid.uuid4().hex[:12]


class Candidate(BaseModel):
    """A proposed solution with everything later nodes need to judge it.

    `lineage` lists the ids of the candidates this one was derived from (a fused answer,
    a continued step), so traces can be followed back through the graph.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    text: str
    id: str = Field(default_factory=_next_candidate_id)
    node: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    token_logprobs: tuple[float, ...] | None = None
    finish_reason: str | None = None
    stop_reason: str | int | None = None
    answer: str | None = None
    scores: dict[str, float] = Field(default_factory=dict)
    lineage: tuple[str, ...] = ()
    metadata: dict[str, Any] = Field(default_factory=dict)

    def with_score(self, name: str, value: float) -> Candidate:
        return self.model_copy(update={"scores": {**self.scores, name: value}})

    @property
    def mean_logprob(self) -> float | None:
        if not self.token_logprobs:
            return None
        return sum(self.token_logprobs) / len(self.token_logprobs)


class Usage(BaseModel):
    """What was spent. Token counts come from the server's own `usage` field."""

    model_config = ConfigDict(extra="forbid")

    prompt_tokens: int = 0
    completion_tokens: int = 0
    calls: int = 0
    reward_calls: int = 0
    """Calls to a reward model (a judge, a PRM): counted apart as well as among `calls`."""
    wall_time: float = 0.0
    tool_calls: int = 0
    """Calls to tools (`NodeContext.call_tool`): not LLM requests, so not among `calls`."""

    @model_serializer(mode="wrap")
    def _no_tools_unwritten(self, handler: SerializerFunctionWrapHandler) -> Any:
        # Written only when tools ran, so results of tool-free pipelines read as before.
        return omit_defaults(handler(self), self, ("tool_calls",))

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            calls=self.calls + other.calls,
            reward_calls=self.reward_calls + other.reward_calls,
            wall_time=self.wall_time + other.wall_time,
            tool_calls=self.tool_calls + other.tool_calls,
        )


class Budget(BaseModel):
    """Hard limits for one problem. `None` means unlimited.

    `tokens` caps prompt plus completion tokens; `completion_tokens` caps generated tokens
    only (prompt tokens served from the prefix cache are cheap, generated ones are not).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    tokens: int | None = Field(default=None, gt=0, description="Prompt plus generated tokens.")
    completion_tokens: int | None = Field(default=None, gt=0, description="Generated tokens.")
    calls: int | None = Field(default=None, gt=0, description="LLM requests.")
    reward_calls: int | None = Field(
        default=None, gt=0, description="Requests to a reward model (judge or PRM)."
    )
    wall_time: float | None = Field(default=None, gt=0, description="Seconds for the problem.")
    tool_calls: int | None = Field(
        default=None, gt=0, description="Tool calls (not LLM requests: apart from `calls`)."
    )

    @model_serializer(mode="wrap")
    def _unset_new_limits_unwritten(self, handler: SerializerFunctionWrapHandler) -> Any:
        # Written only when set, so configs from before these limits keep their fingerprints
        # (and their committed results still resume).
        return omit_defaults(handler(self), self, ("reward_calls", "tool_calls"))

    @property
    def unlimited(self) -> bool:
        return all(getattr(self, name) is None for name in type(self).model_fields)


def omit_defaults(data: Any, model: BaseModel, names: tuple[str, ...]) -> Any:
    """A model's dump without the named fields that hold their default: fields added later
    are written only when used, so what older versions wrote (and hashed) stays the same."""
    if isinstance(data, dict):
        fields = type(model).model_fields
        for name in names:
            if name in data and getattr(model, name) == fields[name].get_default():
                del data[name]
    return data
