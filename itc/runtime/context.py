"""The handle a strategy gets: the only way it can reach an LLM (or a tool).

Every call goes through `NodeContext.generate`, which waits for a slot under the run's global
in-flight limit, counts the prompt (inside that slot), admits the call against the problem's
hard budget, sends it, charges what the server reports (or, for a call cut short, what it
streamed, or its whole reservation when it was not streamed), and records a trace event.
Tool calls go through `NodeContext.call_tool`: admitted, charged and traced the same way.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from itc.backends.base import (
    Backend,
    BackendError,
    GenerationRequest,
    GenerationResult,
    PoolingRequest,
    PoolingResult,
    StreamProgress,
    TextDelta,
    prompt_token_bound,
)
from itc.runtime.budget import BudgetExhausted, Ledger, Reservation
from itc.runtime.streaming import GenerationStream
from itc.runtime.tools import ToolArgumentError, ToolRegistry, ToolResult
from itc.runtime.trace import CallEvent, CandidateLog, SampleLog, Trace
from itc.types import Candidate, Problem, Usage

T = TypeVar("T")
logger = logging.getLogger(__name__)


class Grader(Protocol):
    """Answer equivalence a node may use (votes group by `canonical_key`). The runtime only
    sees this protocol; `itc.verifiers.math.MathGrader` is the math-verify implementation."""

    async def canonical_key(self, answer: str) -> str | None: ...

    async def is_equivalent(self, gold: str, predicted: str) -> bool: ...


@dataclass
class Runtime:
    """What one run shares across all its problems: the server, the in-flight limit, the
    grader (a math-verify process pool, say). Owned by the planner; nothing here is global.

    With no grader, answers are compared by their cheap exact forms (numbers normalised,
    text trimmed); give one for symbolic equivalence.
    """

    backend: Backend
    max_in_flight: int = 32
    grader: Grader | None = None
    backends: dict[str, Backend] = field(default_factory=dict)
    """Other servers by name: a reward model ("prm") reached through `NodeContext.pool`, or
    another generator a request names in its `model` (an ensemble over several models)."""

    log_samples: bool = False
    """Keep every call's prompt and sampled texts, and every candidate a node ranked or voted
    on, in the traces (lm-evaluation-harness's `--log_samples`): bigger traces, full record."""

    warm_prefixes: bool = False
    """Off by default: benchmarks/prefix_warming.py measured no gain on vLLM 0.32, whose
    scheduler already prefills identical prompts in flight once."""

    tools: ToolRegistry = field(default_factory=ToolRegistry)
    """What `NodeContext.call_tool` may call, by name."""

    def __post_init__(self) -> None:
        self.slots = asyncio.Semaphore(self.max_in_flight)
        self._context_limits: dict[str | None, int | None] = {}
        self._prefilling: dict[object, asyncio.Event] = {}

    def with_tools(self, tools: ToolRegistry) -> Runtime:
        """This runtime with other tools: the same servers, in-flight limit and caches
        (a pipeline that names its own tools still shares the run's slots)."""
        other = copy.copy(self)
        other.tools = tools
        return other

    @asynccontextmanager
    async def prefix_turn(
        self, request: GenerationRequest, progress: StreamProgress
    ) -> AsyncIterator[None]:
        """Fork/join prefix warming, with no extra call: a request whose exact prompt is
        already being prefilled by a sibling waits until that sibling's first token (its
        prompt is then in the KV cache) so the server reuses it instead of prefilling twice.
        """
        if not self.warm_prefixes:
            yield
            return
        key = (request.prompt, request.messages, request.prompt_ids)
        leader = self._prefilling.get(key)
        if leader is not None:
            await leader.wait()
            yield
            return
        self._prefilling[key] = progress.prefilled
        try:
            yield
        finally:
            progress.prefilled.set()
            if self._prefilling.get(key) is progress.prefilled:
                del self._prefilling[key]

    def generator(self, model: str | None) -> Backend:
        """The server a generation request goes to: its named `model`, else the run's own."""
        if model is None:
            return self.backend
        try:
            return self.backends[model]
        except KeyError:
            raise BackendError(
                f"a request names model {model!r} but the run has no backend of that name "
                f"(it has {sorted(self.backends) or 'none'}; give one with --model-url "
                f"{model}=URL)"
            ) from None

    async def context_limit(self, model: str | None = None) -> int | None:
        if self._context_limits.get(model) is None:
            self._context_limits[model] = await self.generator(model).max_model_len()
        return self._context_limits[model]


@dataclass
class NodeContext:
    problem: Problem
    runtime: Runtime
    ledger: Ledger
    trace: Trace
    path: str = ""
    rollout: int = 0
    wants_logprobs: bool = False
    """Set by a parent whose scorer reads token logprobs, so samplers below ask for them."""
    streams: bool = False
    """Set by a parent that may cancel the calls below mid-way (an early stop): they stream,
    so a cancelled call is charged what it produced rather than its whole reservation."""
    reward: bool = False
    """Set for a reward model's calls (a judge, a PRM): they count against
    `Budget.reward_calls` as well as `calls`."""

    def child(
        self,
        name: str,
        rollout: int | None = None,
        wants_logprobs: bool | None = None,
        streams: bool | None = None,
        reward: bool | None = None,
    ) -> NodeContext:
        """A context for a nested node; `rollout` tells repeated runs apart (seeds, cache)."""
        path = f"{self.path}/{name}" if self.path else name
        return NodeContext(
            self.problem,
            self.runtime,
            self.ledger,
            self.trace,
            path,
            self.rollout if rollout is None else rollout,
            self.wants_logprobs if wants_logprobs is None else wants_logprobs,
            self.streams if streams is None else streams,
            self.reward if reward is None else reward,
        )

    @property
    def grader(self) -> Grader | None:
        return self.runtime.grader

    def seed_for(self, seed: int | None) -> int | None:
        """Distinct, reproducible seeds for repeated rollouts of the same node."""
        return None if seed is None else (seed + 1_000_003 * self.rollout) % 2**31

    async def generate(
        self, request: GenerationRequest, on_text: Callable[[TextDelta], None] | None = None
    ) -> GenerationResult:
        """Count, admit, send and charge one call.

        A prompt that must be counted exactly is counted inside the in-flight limit: for the
        vLLM backend counting renders it to token ids once (the call then sends those ids),
        so a burst of new prompts cannot flood the server with tokenizer round trips.
        With `on_text` the call streams and each piece of text is handed to it as it comes
        (`stream` wraps this as an async iterator).
        """
        wants_stream = self.streams or self.runtime.warm_prefixes or on_text is not None
        if not request.stream and wants_stream:
            # Cancellable calls stream for exact partial charges; warming needs first tokens.
            request = request.model_copy(update={"stream": True})
        progress = StreamProgress(on_text=on_text)
        async with self.runtime.prefix_turn(request, progress):
            while True:
                async with self.runtime.slots:
                    admitted = await self._admit(request)
                    if not isinstance(admitted, asyncio.Event):
                        return await self._send(*admitted, progress)
                # Only this problem's calls in flight stand in the way: wait for one to settle
                # (outside the in-flight limit, so other problems go on), then ask again.
                await self._within_deadline(admitted.wait())

    def stream(self, request: GenerationRequest) -> GenerationStream:
        """The call as it streams: `async with ctx.stream(request) as s: async for delta in
        s: ...`, then `s.result`. Admitted, charged and traced exactly as `generate`; leaving
        the block early cancels the call (charged what it produced)."""
        return GenerationStream(self.generate, request)

    async def _admit(
        self, request: GenerationRequest
    ) -> tuple[GenerationRequest, Reservation] | asyncio.Event:
        """Reserve the call's worst case against an exact prompt count, clipping max_tokens;
        or an event to wait on when only other calls' reservations keep it from fitting."""
        try:
            limit = await self.runtime.context_limit(request.model)
            prompt_tokens = await self._prompt_tokens(request, limit)
            room = request.max_tokens if limit is None else limit - prompt_tokens
            if room < (1 if request.max_tokens else 0):
                raise BudgetExhausted(
                    "context", f"prompt of {prompt_tokens} tokens fills the context"
                )
            reservation = self.ledger.admit(
                prompt_tokens=prompt_tokens,
                n=request.n,
                max_tokens=min(request.max_tokens, room),
                reward=self.reward,
            )
        except BudgetExhausted as refusal:
            self._record_refusal(refusal, n=request.n)
            raise
        if isinstance(reservation, asyncio.Event):
            return reservation
        if reservation.max_tokens != request.max_tokens:
            request = request.model_copy(update={"max_tokens": reservation.max_tokens})
        return request, reservation

    async def _prompt_tokens(self, request: GenerationRequest, limit: int | None) -> int:
        """The prompt's exact count when something depends on it (a token budget, or a prompt
        that may not leave room in the `limit` of the context); else a free upper bound, which
        saves the count's round trip (the server's own usage is charged when the call
        settles)."""
        bound = prompt_token_bound(request)
        fits = limit is None or bound + request.max_tokens <= limit
        if self.ledger.budget.tokens is None and fits:
            return bound
        server = self.runtime.generator(request.model)
        return await self._within_deadline(server.count_prompt_tokens(request))

    async def _send(
        self, request: GenerationRequest, reservation: Reservation, progress: StreamProgress
    ) -> GenerationResult:
        """Send an admitted call and settle its reservation with what it spent."""
        started = time.monotonic()
        event = CallEvent(
            node=self.path,
            status="clipped" if reservation.clipped else "ok",
            limit=reservation.limit,
            n=request.n,
            max_tokens=request.max_tokens,
            started=started - self.ledger.started,
            reward=self.reward,
            model=request.model,
        )
        spent = Usage()
        retries: list[Reservation] = []

        def admit_retry() -> None:
            try:
                retries.append(
                    self.ledger.reserve(
                        prompt_tokens=reservation.prompt_tokens,
                        n=request.n,
                        max_tokens=request.max_tokens,
                        reward=self.reward,
                    )
                )
            except BudgetExhausted as refusal:
                event.limit = refusal.limit
                raise BudgetExhausted(refusal.limit, f"retry refused: {refusal}") from None

        progress.before_retry = admit_retry
        try:
            server = self.runtime.generator(request.model)
            result = await self._within_deadline(server.generate(request, progress))
        except BaseException as failure:
            # The server may have worked on it: charge what it streamed, plus the prompt; an
            # attempt cut while not streamed may have produced everything it was allowed.
            sent = progress.attempts > 0
            completion = progress.completion_tokens
            note = ""
            if progress.unmetered:
                completion += request.n * request.max_tokens
                note = (
                    f"not streamed, so charged its whole reservation "
                    f"({request.n}x{request.max_tokens} completion tokens); "
                )
            spent = Usage(
                prompt_tokens=max(progress.prompt_tokens, reservation.prompt_tokens if sent else 0),
                completion_tokens=completion,
                calls=progress.attempts,
                reward_calls=progress.attempts if self.reward else 0,
            )
            event.status = "cancelled" if isinstance(failure, asyncio.CancelledError) else "error"
            event.detail = (note + f"{type(failure).__name__}: {failure}")[:500]
            raise
        else:
            # Attempts the backend retried may have spent tokens too (`progress` counts them).
            spent = Usage(
                prompt_tokens=result.prompt_tokens,
                completion_tokens=max(result.completion_tokens, progress.completion_tokens),
                calls=progress.attempts,  # each HTTP attempt is a call
                reward_calls=progress.attempts if self.reward else 0,
            )
            event.finish_reasons = [c.finish_reason for c in result.choices]
            if self.runtime.log_samples:
                event.prompt = _shown_prompt(request)
                event.samples = [
                    SampleLog(
                        text=c.text,
                        completion_tokens=c.completion_tokens,
                        finish_reason=c.finish_reason,
                    )
                    for c in result.choices
                ]
            if progress.attempts > 1:
                event.detail = "; ".join(progress.events)[:500]
            return result
        finally:
            spent.wall_time = time.monotonic() - started
            event.prompt_tokens = spent.prompt_tokens
            event.completion_tokens = spent.completion_tokens
            event.latency = spent.wall_time
            for retry in retries:
                self.ledger.settle(retry, Usage())
            self.ledger.settle(reservation, spent.model_copy(update={"wall_time": 0.0}))
            self.trace.record(event)
            logger.debug(
                "%s %s %s: n=%d, %d prompt + %d generated tokens, %.2fs%s",
                self.problem.id,
                self.path,
                event.status,
                event.n,
                event.prompt_tokens,
                event.completion_tokens,
                event.latency,
                f" ({event.detail})" if event.detail else "",
            )

    async def pool(self, backend: str, request: PoolingRequest) -> PoolingResult:
        """One metered call to the runtime's named `backend` (a reward model's server).

        It is a reward call wherever it is made: it counts against `Budget.reward_calls` and
        `Budget.calls` (each HTTP attempt, as for `generate`), and is refused with
        BudgetExhausted when either is spent. The reward model's prompt tokens are recorded
        in the trace event but not charged to `Budget.tokens` or `Usage`: they are another
        model's tokens, and the generator's token budget stays the generator's (bound the
        reward model's work with `reward_calls`).
        """
        server = self.runtime.backends.get(backend)
        if server is None:
            known = ", ".join(sorted(self.runtime.backends)) or "none"
            raise BackendError(f"no backend named {backend!r} in this runtime (it has: {known})")
        while True:
            async with self.runtime.slots:
                admitted = self._admit_reward_call(request)
                if not isinstance(admitted, asyncio.Event):
                    return await self._send_pooling(server, request, admitted)
            await self._within_deadline(admitted.wait())

    def _admit_reward_call(self, request: PoolingRequest) -> Reservation | asyncio.Event:
        try:
            return self.ledger.admit(prompt_tokens=0, n=1, max_tokens=0, reward=True)
        except BudgetExhausted as refusal:
            self._record_refusal(refusal, reward=True, about=request.task)
            raise

    def _record_refusal(
        self,
        refusal: BudgetExhausted,
        n: int = 1,
        reward: bool = False,
        about: str = "",
        tool: str | None = None,
    ) -> None:
        """Put a call the budget refused in the trace (`about` leads its detail; `tool`
        names the tool of a refused tool call)."""
        detail = f"{about}: {refusal}" if about else str(refusal)
        self.trace.record(
            CallEvent(
                node=self.path,
                status="refused",
                n=n,
                limit=refusal.limit,
                reward=reward,
                detail=detail,
                kind="llm" if tool is None else "tool",
                tool=tool,
            )
        )

    async def _send_pooling(
        self, server: Backend, request: PoolingRequest, reservation: Reservation
    ) -> PoolingResult:
        started = time.monotonic()
        event = CallEvent(
            node=self.path, status="ok", started=started - self.ledger.started, reward=True
        )
        progress = StreamProgress()
        retries: list[Reservation] = []

        def admit_retry() -> None:
            try:
                retries.append(self.ledger.reserve(prompt_tokens=0, n=1, max_tokens=0, reward=True))
            except BudgetExhausted as refusal:
                event.limit = refusal.limit
                raise BudgetExhausted(refusal.limit, f"retry refused: {refusal}") from None

        progress.before_retry = admit_retry
        try:
            result = await self._within_deadline(server.pool(request, progress))
            event.prompt_tokens = result.prompt_tokens
            if progress.attempts > 1:
                event.detail = "; ".join(progress.events)[:500]
            return result
        except BaseException as failure:
            event.status = "cancelled" if isinstance(failure, asyncio.CancelledError) else "error"
            event.detail = f"{request.task}: {type(failure).__name__}: {failure}"[:500]
            raise
        finally:
            event.latency = time.monotonic() - started
            for retry in retries:
                self.ledger.settle(retry, Usage())
            attempts = progress.attempts
            self.ledger.settle(reservation, Usage(calls=attempts, reward_calls=attempts))
            self.trace.record(event)

    async def call_tool(
        self, name: str, arguments: Mapping[str, Any] | Sequence[Any]
    ) -> ToolResult:
        """Call a tool of the runtime: validate the arguments, admit the call against
        `Budget.tool_calls` (BudgetExhausted when it is spent, as for LLM calls), run it
        within the problem's deadline, trace it.

        An unknown tool, bad arguments, a tool that raises or times out all give
        `ToolResult(ok=False)`: an observation the caller can act on (such calls are traced;
        only calls that ran are charged). Only BudgetExhausted and cancellation propagate.
        """
        started = time.monotonic()
        event = CallEvent(
            node=self.path,
            status="error",
            kind="tool",
            tool=name,
            started=started - self.ledger.started,
        )
        try:
            tool = self.runtime.tools[name]
            bound = tool.bind(arguments)
        except (KeyError, ToolArgumentError) as error:
            event.detail = str(error)[:500]
            self.trace.record(event)
            return ToolResult(tool=name, ok=False, error=str(error))
        event.arguments = bound.model_dump(mode="json")
        try:
            self.ledger.admit_tool_call()
        except BudgetExhausted as refusal:
            self._record_refusal(refusal, tool=name)
            raise
        try:
            result = await self._within_deadline(tool.run(bound))
        except BaseException as failure:
            event.status = "cancelled"
            event.limit = failure.limit if isinstance(failure, BudgetExhausted) else None
            event.detail = f"{type(failure).__name__}: {failure}"[:500]
            raise
        else:
            event.status = "ok" if result.ok else "error"
            event.detail = None if result.error is None else result.error[:500]
            if self.runtime.log_samples:
                event.output = result.value
            return result
        finally:
            event.latency = time.monotonic() - started
            self.trace.record(event)

    def log_candidates(self, candidates: Iterable[Candidate], kept: Iterable[str]) -> None:
        """Record what this node ranked or voted on (ids in `kept` went on), when samples are
        logged, so a trace keeps the losers as well as the winners."""
        if not self.runtime.log_samples:
            return
        winners = set(kept)
        for c in candidates:
            self.trace.candidates.append(
                CandidateLog(
                    node=self.path,
                    id=c.id,
                    answer=c.answer,
                    scores=c.scores,
                    kept=c.id in winners,
                    text=c.text,
                )
            )

    async def _within_deadline(self, call: Awaitable[T]) -> T:
        left = self.ledger.time_left()
        if left is None:
            return await call
        try:
            async with asyncio.timeout(left):
                return await call
        except TimeoutError as timeout:
            raise BudgetExhausted("wall_time", "the call was cut at the deadline") from timeout


def _shown_prompt(request: GenerationRequest) -> str | list[dict[str, str]] | None:
    if request.messages is not None:
        return [{"role": m.role, "content": m.content} for m in request.messages]
    return request.prompt  # None for a prompt given as token ids
