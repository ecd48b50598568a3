"""A deterministic in-process backend for fast tests of algorithm logic.

It answers from a script (a function of the request and the sample index), counts one
token per whitespace-separated word, and streams word by word so that cancellation and
budget clipping behave as they do against a real server.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from itc.backends.base import Choice, GenerationRequest, GenerationResult, StreamProgress

Script = Callable[[GenerationRequest, int], str]


def prompt_text(request: GenerationRequest) -> str:
    if request.prompt is not None:
        return request.prompt
    assert request.messages is not None
    return "\n".join(m.content for m in request.messages)


@dataclass
class ScriptedBackend:
    script: Script
    model: str = "scripted"
    context_length: int = 4096
    seconds_per_token: float = 0.0
    logprob: float = -0.1
    requests: list[GenerationRequest] = field(default_factory=list)
    cancelled: int = 0

    async def count_prompt_tokens(self, request: GenerationRequest) -> int:
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
        prompt_tokens = await self.count_prompt_tokens(request)
        progress.prompt_tokens = prompt_tokens
        progress.prefilled.set()
        choices = []
        try:
            for index in range(request.n):
                words = self.script(request, index).split()
                finish = "length" if len(words) > request.max_tokens else "stop"
                words = words[: request.max_tokens]
                for _ in words:
                    if self.seconds_per_token:
                        await asyncio.sleep(self.seconds_per_token)
                    progress.completion_tokens += 1
                choices.append(
                    Choice(
                        index=index,
                        text=" ".join(words),
                        completion_tokens=len(words),
                        finish_reason=finish,
                        token_logprobs=tuple(self.logprob for _ in words),
                        top_logprobs=({"Yes": -0.2, "No": -1.7},) if request.top_logprobs else None,
                    )
                )
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        return GenerationResult(
            choices=tuple(choices),
            prompt_tokens=prompt_tokens,
            completion_tokens=sum(c.completion_tokens for c in choices),
        )
