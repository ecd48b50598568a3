"""A deterministic in-process backend for fast tests of algorithm logic.

It answers from a script (a function of the request and the sample index), counts one
token per whitespace-separated word (each distinct word gets a token id, so requests can
carry `prompt_ids` and choices return `token_ids` as with vLLM), and produces its answer
word by word so that cancellation, budget clipping and streaming (`NodeContext.stream`)
behave as they do against a real server.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from itc.backends.base import (
    BackendError,
    Choice,
    GenerationRequest,
    GenerationResult,
    PoolingRequest,
    PoolingResult,
    StreamProgress,
)

Script = Callable[[GenerationRequest, int], str]
PoolScript = Callable[[PoolingRequest], list[list[float]]]
"""Scripted rewards: the rows a pooling server would answer for a request."""


def prompt_text(request: GenerationRequest, vocabulary: list[str] | None = None) -> str:
    """The request's prompt as text (ids are read back through `vocabulary`)."""
    if request.prompt is not None:
        return request.prompt
    if request.prompt_ids is not None:
        words = vocabulary or []
        return " ".join(words[i] if 0 <= i < len(words) else f"<{i}>" for i in request.prompt_ids)
    assert request.messages is not None
    return "\n".join(m.content for m in request.messages)


@dataclass
class ScriptedBackend:
    script: Script
    model: str = "scripted"
    context_length: int = 4096
    seconds_per_token: float = 0.0
    logprob: float = -0.1
    meter_unstreamed: bool = True
    """Count tokens as they come even for calls that are not streamed, as if every call
    streamed (what algorithm tests want). False mimics a real server: a call not streamed
    reports nothing until it is done, so a cut one is charged its whole reservation."""
    exact_text: bool = False
    """Keep the script's whitespace (newlines too) in the answer; by default its words are
    joined by single spaces. Each word still counts as one token."""
    token_delay: Callable[[int, str], float] | None = None
    """Extra seconds to wait before the token at a position (its text given), on top of
    `seconds_per_token`: holds a stream back at a chosen point (a plan's last line, say)."""
    pool_script: PoolScript | None = None
    """Answers `pool` calls (a reward model's rows); without it `pool` fails."""
    requests: list[GenerationRequest] = field(default_factory=list)
    pooled: list[PoolingRequest] = field(default_factory=list)
    cancelled: int = 0
    counted: int = 0
    """How many times a prompt was counted (a tokenizer round trip, for a real server)."""
    vocabulary: list[str] = field(default_factory=list)
    _ids: dict[str, int] = field(default_factory=dict, repr=False)

    def encode(self, text: str) -> tuple[int, ...]:
        """One id per word, assigned on first sight."""
        ids = []
        for word in text.split():
            if word not in self._ids:
                self._ids[word] = len(self.vocabulary)
                self.vocabulary.append(word)
            ids.append(self._ids[word])
        return tuple(ids)

    async def count_prompt_tokens(self, request: GenerationRequest) -> int:
        if request.prompt_ids is not None:
            return len(request.prompt_ids)
        self.counted += 1
        return len(prompt_text(request).split())

    async def max_model_len(self) -> int:
        return self.context_length

    async def aclose(self) -> None:
        return None

    async def generate(
        self, request: GenerationRequest, progress: StreamProgress | None = None
    ) -> GenerationResult:
        progress = progress if progress is not None else StreamProgress()
        progress.attempts += 1
        self.requests.append(request)
        prompt_ids = request.prompt_ids or self.encode(prompt_text(request, self.vocabulary))
        live = request.stream or self.meter_unstreamed
        progress.prompt_tokens = len(prompt_ids)
        progress.unmetered = not live
        progress.prefilled.set()
        logprobs = request.logprobs or request.top_logprobs > 0
        choices = []
        try:
            for index in range(request.n):
                words = self._tokens(self.script(request, index))
                stop_reason = None
                stops = {stop.strip(): stop for stop in request.stop}
                for at, word in enumerate(words[: request.max_tokens]):
                    if word.strip() in stops:  # a stop string is matched as a whole word
                        stop_reason = stops[word.strip()]
                        words = words[: at + int(request.include_stop_str_in_output)]
                        break
                finish = "length" if len(words) > request.max_tokens else "stop"
                words = words[: request.max_tokens]
                for at, word in enumerate(words):
                    delay = self.seconds_per_token
                    if self.token_delay is not None:
                        delay += self.token_delay(at, word)
                    if delay:
                        await asyncio.sleep(delay)
                    if live:
                        progress.completion_tokens += 1
                    progress.emit(index, self._piece(at, word))
                choices.append(
                    Choice(
                        index=index,
                        text=self._joined(words),
                        completion_tokens=len(words),
                        finish_reason=finish,
                        stop_reason=stop_reason,
                        token_logprobs=tuple(self.logprob for _ in words) if logprobs else None,
                        top_logprobs=({"Yes": -0.2, "No": -1.7},) if request.top_logprobs else None,
                        token_ids=self.encode(self._joined(words)),
                    )
                )
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        completion_tokens = sum(c.completion_tokens for c in choices)
        if not live:
            progress.unmetered = False
            progress.completion_tokens += completion_tokens
        return GenerationResult(
            choices=tuple(choices),
            prompt_tokens=len(prompt_ids),
            completion_tokens=completion_tokens,
            prompt_ids=prompt_ids,
        )

    def _tokens(self, text: str) -> list[str]:
        """The answer's tokens: its words, each with the whitespace after it if it is kept."""
        return re.findall(r"\s*\S+\s*", text) if self.exact_text else text.split()

    def _piece(self, at: int, token: str) -> str:
        """The text a token adds to the answer as it streams."""
        return token if self.exact_text or at == 0 else " " + token

    def _joined(self, tokens: list[str]) -> str:
        return "".join(tokens) if self.exact_text else " ".join(tokens)

    async def pool(
        self, request: PoolingRequest, progress: StreamProgress | None = None
    ) -> PoolingResult:
        if progress is not None:
            progress.attempts += 1
        self.pooled.append(request)
        if self.pool_script is None:
            raise BackendError("this scripted backend has no pool_script for reward calls")
        text = request.prompt or "\n".join(m.content for m in request.messages or ())
        rows = tuple(tuple(row) for row in self.pool_script(request))
        return PoolingResult(rows=rows, prompt_tokens=len(text.split()))
