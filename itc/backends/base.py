"""The one interface between the planner and any LLM server."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, model_validator

from itc.types import Message


class StructuredOutputs(BaseModel):
    """Constrained decoding; exactly one field is set (vLLM's `structured_outputs`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    choice: tuple[str, ...] | None = None
    regex: str | None = None
    json_schema: dict[str, Any] | None = Field(default=None, alias="json")
    grammar: str | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> StructuredOutputs:
        set_fields = [f for f in ("choice", "regex", "json_schema", "grammar") if getattr(self, f)]
        if len(set_fields) != 1:
            raise ValueError("structured_outputs needs exactly one of choice, regex, json, grammar")
        return self

    def to_wire(self) -> dict[str, Any]:
        if self.choice is not None:
            return {"choice": list(self.choice)}
        if self.regex is not None:
            return {"regex": self.regex}
        if self.json_schema is not None:
            return {"json": self.json_schema}
        return {"grammar": self.grammar}


class GenerationRequest(BaseModel):
    """Everything one LLM call may ask for. Either a raw `prompt` (completions API, for
    token-exact prefixes) or chat `messages` (chat API, the server renders the template)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    prompt: str | None = None
    messages: tuple[Message, ...] | None = None
    n: int = Field(default=1, ge=1)
    max_tokens: int = Field(default=256, ge=0)
    temperature: float = Field(default=1.0, ge=0.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    seed: int | None = None
    stop: tuple[str, ...] = ()
    include_stop_str_in_output: bool = False
    logprobs: bool = False
    """Return each sampled token's logprob (self-certainty needs them; most calls do not)."""
    top_logprobs: int = Field(default=0, ge=0, le=20)
    prompt_logprobs: int | None = Field(default=None, ge=0, le=20)
    echo: bool = False
    continue_final_message: bool = False
    structured_outputs: StructuredOutputs | None = None

    @model_validator(mode="after")
    def _one_input(self) -> GenerationRequest:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("a request needs exactly one of 'prompt' or 'messages'")
        if self.continue_final_message and (
            self.messages is None or self.messages[-1].role != "assistant"
        ):
            raise ValueError("continue_final_message needs messages ending with an assistant turn")
        return self

    @property
    def scores_only(self) -> bool:
        """True for requests that read logprobs of given text rather than sample."""
        return self.echo or self.prompt_logprobs is not None


class Choice(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    index: int
    text: str
    completion_tokens: int
    finish_reason: str | None = None
    stop_reason: str | int | None = None
    token_logprobs: tuple[float, ...] | None = None
    top_logprobs: tuple[dict[str, float], ...] | None = None


class GenerationResult(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    choices: tuple[Choice, ...]
    prompt_tokens: int
    completion_tokens: int
    prompt_logprobs: tuple[dict[str, float] | None, ...] | None = None
    latency: float = 0.0


@dataclass
class StreamProgress:
    """Tokens the server has produced so far for one call, kept up to date while it streams.

    The planner reads it when a call is cancelled or fails midway, so that what the server
    spent is charged even though no final `usage` arrived.
    """

    prompt_tokens: int = 0
    completion_tokens: int = 0
    attempts: int = 0
    events: list[str] = field(default_factory=list)
    prefilled: asyncio.Event = field(default_factory=asyncio.Event)
    """Set once the server has produced a first token, i.e. the prompt is in its KV cache."""


class BackendError(RuntimeError):
    """The server refused or failed a request; the message quotes the server."""


class ContextLengthError(BackendError):
    """The prompt plus requested tokens do not fit the model's context."""


@runtime_checkable
class Backend(Protocol):
    model: str

    async def generate(
        self, request: GenerationRequest, progress: StreamProgress | None = None
    ) -> GenerationResult: ...

    async def count_prompt_tokens(self, request: GenerationRequest) -> int: ...

    async def max_model_len(self) -> int: ...

    async def aclose(self) -> None: ...

