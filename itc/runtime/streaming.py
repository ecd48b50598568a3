"""Consuming a generation while it streams.

`NodeContext.stream(request)` wraps `NodeContext.generate(request, on_text=...)`, so the call
is admitted, charged and traced like any other; its text arrives as `TextDelta`s through an
async iterator, so a node can act on the first lines of an answer (start a plan's tool
calls) before the last ones exist. The call runs as one task the stream owns: the iteration
awaits it, and leaving the block early cancels it, so it never outlives the block.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from itc.backends.base import GenerationRequest, GenerationResult, TextDelta

Generate = Callable[..., Awaitable[GenerationResult]]
"""`generate(request, on_text=callback)`: `NodeContext.generate`."""


class GenerationStream:
    """`async with ctx.stream(request) as stream: async for delta in stream: ...`.

    The deltas of each choice add up to its final text. A backend that cannot stream (a
    replay from the response cache) hands the whole text over at the end instead; a delta
    whose `attempt` is higher than the ones before starts its choice over (the backend
    retried a failed attempt, or the final text disagrees with what was streamed). A failed
    call raises from the iteration; `result` is the call's result once the iteration ended.
    """

    def __init__(self, generate: Generate, request: GenerationRequest) -> None:
        self._generate = generate
        self.request = request
        self._queue: asyncio.Queue[TextDelta | None] = asyncio.Queue()
        self._task: asyncio.Task[GenerationResult] | None = None
        self._sent: dict[int, str] = {}
        self._attempt = 0
        self._tail: list[TextDelta] = []
        self._result: GenerationResult | None = None
        self._ended = False

    async def __aenter__(self) -> GenerationStream:
        if self._task is not None:
            raise RuntimeError("a generation stream can be entered once")
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: Any) -> None:
        task = self._task
        assert task is not None
        if not task.done():
            task.cancel()  # the consumer left early: stop the call (charged what it made)
            await asyncio.wait([task])
        if not task.cancelled():
            task.exception()  # read here, so a failure the consumer walked away from is quiet

    async def _run(self) -> GenerationResult:
        try:
            return await self._generate(self.request, on_text=self._queue.put_nowait)
        finally:
            self._queue.put_nowait(None)

    def __aiter__(self) -> GenerationStream:
        return self

    async def __anext__(self) -> TextDelta:
        if self._task is None:
            raise RuntimeError("iterate a generation stream inside `async with`")
        while not self._tail:
            if self._ended:
                raise StopAsyncIteration
            delta = await self._queue.get()
            if delta is not None:
                if delta.attempt != self._attempt:
                    self._attempt, self._sent = delta.attempt, {}
                self._sent[delta.index] = self._sent.get(delta.index, "") + delta.text
                return delta
            self._ended = True
            self._result = await self._task  # a failed call raises here
            self._tail = self._unsent(self._result)
        return self._tail.pop(0)

    def _unsent(self, result: GenerationResult) -> list[TextDelta]:
        """What the final text holds beyond what streamed: all of it for a backend that did
        not stream, nothing for one that did; a text that disagrees starts over."""
        attempt = max(self._attempt, 1)
        missing = []
        for choice in result.choices:
            sent = self._sent.get(choice.index, "")
            if choice.text.startswith(sent):
                if len(choice.text) > len(sent):
                    missing.append(TextDelta(choice.index, choice.text[len(sent) :], attempt))
            else:
                missing.append(TextDelta(choice.index, choice.text, attempt + 1))
        return missing

    @property
    def result(self) -> GenerationResult:
        """The whole call's result (its usage, finish reasons), once the iteration ended."""
        if self._result is None:
            raise RuntimeError("the stream has not ended yet")
        return self._result
