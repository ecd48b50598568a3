"""The one interface between the planner and any LLM server."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

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
    """Everything one LLM call may ask for. Exactly one input: a raw `prompt` (text), chat
    `messages` (the server's chat template renders them) or `prompt_ids` (token ids, sent as
    they are: token-exact prefixes with no tokenizer round trip).

    The request is the response cache's key, minus `stream` (how the answer travels does not
    change what it is).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    prompt: str | None = None
    messages: tuple[Message, ...] | None = None
    prompt_ids: tuple[int, ...] | None = None
    """A prompt already in token ids (e.g. a result's `prompt_ids` plus a choice's
    `token_ids`): its count is `len(prompt_ids)`, known without asking the server."""
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
    model: str | None = None
    """Which of the runtime's named generators answers (`Runtime.backends`: a second model
    for an ensemble, say); None is the run's own server. The backend that gets the request
    sends its own served model name: this only routes."""
    stream: bool = False
    """Stream the answer token by token, so that a call cut mid-way is charged what the
    server had produced. A call not streamed that is cut is charged its whole reservation
    (the server does not say what it spent). Streaming costs the server's API process work
    per token, which competes with the model on small machines: ask for it only for calls a
    parent may cancel (`NodeContext.streams` does it for whole subtrees)."""

    @model_validator(mode="after")
    def _one_input(self) -> GenerationRequest:
        given = [x for x in (self.prompt, self.messages, self.prompt_ids) if x is not None]
        if len(given) != 1:
            raise ValueError(
                "a request needs exactly one of 'prompt', 'messages' or 'prompt_ids'"
            )
        if self.continue_final_message and (
            self.messages is None or self.messages[-1].role != "assistant"
        ):
            raise ValueError("continue_final_message needs messages ending with an assistant turn")
        return self

    @property
    def scores_only(self) -> bool:
        """True for requests that read logprobs of given text rather than sample."""
        return self.echo or self.prompt_logprobs is not None


def prompt_token_bound(request: GenerationRequest) -> int:
    """At least the prompt's token count for any byte-level or byte-fallback tokenizer and
    chat template: a token covers at least one byte, plus room for the template's own
    tokens. Exact for a prompt in ids. Free to compute, so it stands in for a count wherever
    the exact number changes nothing."""
    if request.prompt_ids is not None:
        return len(request.prompt_ids)
    if request.prompt is not None:
        return len(request.prompt.encode()) + 16
    assert request.messages is not None
    return sum(len(m.content.encode()) + 16 for m in request.messages) + 64


class Choice(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    index: int
    text: str
    completion_tokens: int
    finish_reason: str | None = None
    stop_reason: str | int | None = None
    token_logprobs: tuple[float, ...] | None = None
    """Each sampled token's logprob; None unless the request asked for logprobs."""
    top_logprobs: tuple[dict[str, float], ...] | None = None
    token_ids: tuple[int, ...] | None = None
    """The sampled token ids, when the backend knows them: appended to the result's
    `prompt_ids` they continue this sample exactly, with no re-tokenisation of its text."""


class GenerationResult(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    choices: tuple[Choice, ...]
    prompt_tokens: int
    completion_tokens: int
    prompt_logprobs: tuple[dict[str, float] | None, ...] | None = None
    prompt_ids: tuple[int, ...] | None = None
    """The prompt as the model saw it, in token ids (a chat after its template), when known."""
    latency: float = 0.0


PoolingTask = Literal["token_classify", "classify"]


class PoolingRequest(BaseModel):
    """One input to a pooling server (a reward model, `--runner pooling`): it answers rows of
    class probabilities instead of text. `token_classify` (vLLM's `/pooling`) gives one row
    per token the server keeps (a PRM keeps its step-tag tokens); `classify` (`/classify`) one
    row for the whole input. Exactly one input: a raw `prompt` or chat `messages` (rendered
    by the server's chat template, with no generation prompt)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    task: PoolingTask = "token_classify"
    prompt: str | None = None
    messages: tuple[Message, ...] | None = None

    @model_validator(mode="after")
    def _one_input(self) -> PoolingRequest:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("a pooling request needs exactly one of 'prompt' or 'messages'")
        return self


class PoolingResult(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    rows: tuple[tuple[float, ...], ...]
    """Class probabilities: one row per kept token (token_classify) or one row (classify)."""
    prompt_tokens: int
    latency: float = 0.0


@dataclass(frozen=True)
class TextDelta:
    """A piece of text one choice produced while its call streams. `attempt` counts the
    backend's attempts at the call: a delta of a later attempt than the ones before starts
    that choice's text over (the earlier attempt failed and was retried)."""

    index: int
    text: str
    attempt: int = 1


@dataclass
class StreamProgress:
    """Tokens the server has produced so far for one call, kept up to date while it streams.

    The planner reads it when a call is cancelled or fails midway, so that what the server
    spent is charged even though no final `usage` arrived; while `unmetered` (an attempt not
    streamed is out) it charges the attempt's whole `max_tokens` instead.
    """

    prompt_tokens: int = 0
    completion_tokens: int = 0
    attempts: int = 0
    unmetered: bool = False
    """An attempt is at the server whose tokens are not counted as they come (it is not
    streamed): if the call is cut now, it may have spent all its `max_tokens`."""
    events: list[str] = field(default_factory=list)
    before_retry: Callable[[], None] | None = None
    """Called before each retry: a retry is a new call, so the caller admits it against its
    budget here (and raises to refuse it)."""
    prefilled: asyncio.Event = field(default_factory=asyncio.Event)
    """Set once the server has produced a first token, i.e. the prompt is in its KV cache."""
    on_text: Callable[[TextDelta], None] | None = None
    """Given each piece of text as it streams (`NodeContext.stream`); backends that cannot
    stream never call it, and the stream then hands over the whole text at the end."""

    def emit(self, index: int, text: str) -> None:
        """Pass a streamed piece of choice `index` to whoever listens (a backend calls it)."""
        if self.on_text is not None and text:
            self.on_text(TextDelta(index=index, text=text, attempt=self.attempts))


class BackendError(RuntimeError):
    """The server refused or failed a request; the message quotes the server."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ContextLengthError(BackendError):
    """The prompt plus requested tokens do not fit the model's context."""


@runtime_checkable
class Backend(Protocol):
    model: str

    async def generate(
        self, request: GenerationRequest, progress: StreamProgress | None = None
    ) -> GenerationResult: ...

    async def count_prompt_tokens(self, request: GenerationRequest) -> int:
        """The prompt's length as the server will count it; `len(request.prompt_ids)` when
        the request carries ids. Called inside the runtime's in-flight limit, just before
        `generate` with the same request."""
        ...

    async def max_model_len(self) -> int | None:
        """The model's context length, or None when the server does not say (then requests
        are not clipped to it client-side and the server's own check applies)."""
        ...

    async def pool(
        self, request: PoolingRequest, progress: StreamProgress | None = None
    ) -> PoolingResult:
        """Class probabilities from a pooling model (a reward model's server); `progress`
        counts attempts and admits retries as for `generate`."""
        ...

    async def aclose(self) -> None: ...

