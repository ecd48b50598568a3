"""A vLLM OpenAI-compatible server over one shared `httpx.AsyncClient`.

The hot path, measured on a 2-core box (benchmarks/hot_path.py): a prompt that must be
counted exactly is rendered to token ids once (`/tokenize`, which also gives the count) and
kept in a bounded LRU; the call then goes to `/v1/completions` with those ids, so the server
does not render or tokenise it again. A chat sent uncounted goes to the chat API and its ids
are remembered from the reply; a request that already carries ids needs no round trip.
Calls answer in one response unless the request asks to stream (only calls that may be
cancelled need to: streaming, per-token usage and logprobs cost the API process work per
token that competes with the model). Logprobs are asked for only when the
request wants them. Every sampled choice comes back with its token ids.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from typing import Any, TypeVar

import httpx

from itc.backends.base import (
    BackendError,
    Choice,
    ContextLengthError,
    GenerationRequest,
    GenerationResult,
    PoolingRequest,
    PoolingResult,
    StreamProgress,
    prompt_token_bound,
)

_T = TypeVar("_T")

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
NOT_STARTED_STATUSES = frozenset({408, 429, 503})
"""Retried statuses that mean the server did not work on the request (timed out waiting,
rate-limited, overloaded); after the others the work it did is unknown."""


class VLLMBackend:
    """Talks to one vLLM server. Retries transient failures with exponential backoff."""

    def __init__(
        self,
        base_url: str,
        model: str | None = None,
        *,
        request_timeout: float = 600.0,
        max_retries: int = 4,
        backoff_base: float = 0.5,
        api_key: str | None = None,
        client: httpx.AsyncClient | None = None,
        render_cache_size: int = 1024,
        max_model_len: int | None = None,
    ) -> None:
        """`base_url` is the server's root (a trailing `/v1` is accepted too).
        `render_cache_size` bounds how many rendered prompts (token ids) are kept, least
        recently used dropped first. `max_model_len` overrides (or stands in for) the context
        length the server reports."""
        self.base_url = _server_root(base_url)
        self.model = model or ""
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = client or httpx.AsyncClient(
            base_url=self.base_url,
            timeout=httpx.Timeout(request_timeout, connect=10.0),
            headers=headers,
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=64),
        )
        self._jitter = random.Random()
        self._rendered = RenderCache(render_cache_size)
        self._rendering: dict[Hashable, asyncio.Task[tuple[int, ...]]] = {}
        self._max_model_len: int | None = max_model_len
        self._max_model_len_given = max_model_len is not None
        self._tokenize_missing = False
        self._resolved = False

    # -- lifecycle and server facts -------------------------------------------------------

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> VLLMBackend:
        await self.resolve_model()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def health(self) -> bool:
        try:
            response = await self._client.get("/health", timeout=5.0)
        except httpx.TransportError:
            return False
        return response.status_code == 200

    async def list_models(self) -> list[dict[str, Any]]:
        data = await self._request_json("GET", "/v1/models")
        models = data.get("data")
        if not isinstance(models, list) or not models:
            raise BackendError(f"{self.base_url}/v1/models returned no models: {data!r:.300}")
        return models

    async def resolve_model(self) -> str:
        """Use the server's first model when none was named; check a named one exists."""
        models = await self.list_models()
        ids = [m.get("id") for m in models]
        if not self.model:
            self.model = ids[0]
        elif self.model not in ids:
            raise BackendError(
                f"model {self.model!r} is not served at {self.base_url}; it serves {ids}"
            )
        entry = next(m for m in models if m.get("id") == self.model)
        if not self._max_model_len_given:
            self._max_model_len = entry.get("max_model_len")
        self._resolved = True
        return self.model

    async def max_model_len(self) -> int | None:
        if self._max_model_len is None and not self._resolved:
            await self.resolve_model()
        return self._max_model_len

    async def metrics(self) -> dict[str, float]:
        """Prometheus counters summed over labels, e.g. `vllm:prefix_cache_hits_total`."""
        response = await self._send("GET", "/metrics")
        totals: dict[str, float] = {}
        for line in response.text.splitlines():
            if not line or line.startswith("#"):
                continue
            name_and_labels, _, value = line.rpartition(" ")
            name = name_and_labels.split("{", 1)[0]
            try:
                totals[name] = totals.get(name, 0.0) + float(value)
            except ValueError:
                continue
        return totals

    async def count_prompt_tokens(self, request: GenerationRequest) -> int:
        """Prompt length as the server will count it (its own tokenizer and chat template):
        `len(prompt_ids)`, or the length of the prompt rendered once and remembered.

        A server without `/tokenize` (not vLLM) gets a safe upper bound instead: byte-level
        tokenizers spend at least one byte per token, plus room for the chat template's own
        tokens. Budgets stay hard (the reservation covers the real count), only looser.
        """
        if request.prompt_ids is not None:
            return len(request.prompt_ids)
        if not self._tokenize_missing:
            try:
                return len(await self.render(request))
            except BackendError as error:
                if error.status not in (404, 405, 501):
                    raise
                self._tokenize_missing = True
        return prompt_token_bound(request)

    async def render(self, request: GenerationRequest) -> tuple[int, ...]:
        """The request's prompt in token ids, as the server's `/tokenize` renders it.

        Kept in the LRU, so the `generate` that follows sends the ids without asking again;
        concurrent requests for the same prompt share one round trip.
        """
        if request.prompt_ids is not None:
            return request.prompt_ids
        key = _render_key(request)
        ids = self._rendered.get(key)
        if ids is not None:
            return ids
        task = self._rendering.get(key)
        if task is None:
            task = asyncio.create_task(self._render_now(key, request))
            self._rendering[key] = task
            task.add_done_callback(lambda done: self._render_done(key, done))
        # Shielded: one waiter being cancelled must not cancel the others' round trip.
        return await asyncio.shield(task)

    async def _render_now(self, key: Hashable, request: GenerationRequest) -> tuple[int, ...]:
        body: dict[str, Any] = {"model": self.model}
        if request.prompt is not None:
            body["prompt"] = request.prompt
        else:
            body["messages"] = _wire_messages(request)
            body["add_generation_prompt"] = not request.continue_final_message
            body["continue_final_message"] = request.continue_final_message
        data = await self._request_json("POST", "/tokenize", body)
        ids = tuple(int(t) for t in data["tokens"])
        if len(ids) != int(data.get("count", len(ids))):
            raise BackendError(f"/tokenize returned {len(ids)} ids but a count of {data['count']}")
        self._rendered.put(key, ids)
        return ids

    def _render_done(self, key: Hashable, task: asyncio.Task[tuple[int, ...]]) -> None:
        if self._rendering.get(key) is task:
            del self._rendering[key]
        if not task.cancelled():
            task.exception()  # retrieved here, so a failure nobody awaited is not logged

    async def tokenize(self, text: str) -> list[int]:
        data = await self._request_json(
            "POST", "/tokenize", {"model": self.model, "prompt": text, "add_special_tokens": False}
        )
        return list(data["tokens"])

    # -- generation ------------------------------------------------------------------------

    async def generate(
        self, request: GenerationRequest, progress: StreamProgress | None = None
    ) -> GenerationResult:
        progress = progress if progress is not None else StreamProgress()
        ids = request.prompt_ids if request.scores_only else self._known_ids(request)
        path, body = self._wire(request, ids)
        send = self._stream if body.get("stream") else self._post
        started = time.perf_counter()
        result = await self._attempts(path, progress, lambda: send(path, body, request, progress))
        update: dict[str, Any] = {"latency": time.perf_counter() - started}
        if ids is not None:
            update["prompt_ids"] = ids
        elif result.prompt_ids is not None and not request.scores_only:
            # The server rendered it: remember, so counting it later needs no round trip.
            self._rendered.put(_render_key(request), result.prompt_ids)
        return result.model_copy(update=update)

    def _known_ids(self, request: GenerationRequest) -> tuple[int, ...] | None:
        """The prompt's ids if known without a round trip (carried, or rendered earlier)."""
        if request.prompt_ids is not None:
            return request.prompt_ids
        return self._rendered.get(_render_key(request))

    def _wire(
        self, request: GenerationRequest, ids: tuple[int, ...] | None
    ) -> tuple[str, dict[str, Any]]:
        """The endpoint and JSON body for a request; `ids` (when known) replace its prompt."""
        body: dict[str, Any] = {
            "model": self.model,
            "n": request.n,
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "top_p": request.top_p,
            "include_stop_str_in_output": request.include_stop_str_in_output,
        }
        if request.seed is not None:
            body["seed"] = request.seed
        if request.stop:
            body["stop"] = list(request.stop)
        if request.prompt_logprobs is not None:
            body["prompt_logprobs"] = request.prompt_logprobs
        if request.echo:
            body["echo"] = True
        if request.structured_outputs is not None:
            body["structured_outputs"] = request.structured_outputs.to_wire()
        if not request.scores_only:
            # Echoed prompts are detokenised only without it; sampled choices want their ids.
            body["return_token_ids"] = True
        wants_logprobs = request.logprobs or request.top_logprobs > 0
        if ids is not None or request.prompt is not None:
            path = "/v1/completions"
            body["prompt"] = list(ids) if ids is not None else request.prompt
            if wants_logprobs:
                body["logprobs"] = request.top_logprobs
        else:
            path = "/v1/chat/completions"
            body["messages"] = _wire_messages(request)
            body["continue_final_message"] = request.continue_final_message
            body["add_generation_prompt"] = not request.continue_final_message
            if wants_logprobs:
                body["logprobs"] = True
                body["top_logprobs"] = request.top_logprobs
        if request.stream and not request.scores_only:
            body["stream"] = True
            # Chunks carry token ids, which count what was produced; the chat API may hide
            # them (reasoning parsers), so there the usage comes with every chunk as well.
            body["stream_options"] = {"include_usage": True}
            if path == "/v1/chat/completions":
                body["stream_options"]["continuous_usage_stats"] = True
        return path, body

    async def _post(
        self,
        path: str,
        body: dict[str, Any],
        request: GenerationRequest,
        progress: StreamProgress,
    ) -> GenerationResult:
        """One attempt as a single response. Until it arrives the server's spending is not
        known, so the attempt is `unmetered`; a failed attempt is charged its worst case."""
        progress.unmetered = True
        try:
            response = await self._send("POST", path, body, retry=False)
            data = response.json()
        except BackendError:
            progress.unmetered = False  # refused with a client error: nothing was generated
            raise
        except (_Retryable, ValueError) as error:
            progress.unmetered = False
            if getattr(error, "status", None) not in NOT_STARTED_STATUSES:
                # The answer was lost on the way: the server may have produced all of it.
                progress.completion_tokens += request.n * request.max_tokens
                progress.events.append(
                    f"attempt {progress.attempts} charged its worst case "
                    f"({request.n}x{request.max_tokens} tokens): {error}"
                )
            if isinstance(error, ValueError):
                raise BackendError(f"{path} returned non-JSON: {response.text[:300]!r}") from error
            raise
        progress.unmetered = False
        result = _parse_full(data, request)
        progress.prompt_tokens = result.prompt_tokens
        progress.completion_tokens += result.completion_tokens
        progress.prefilled.set()
        return result

    async def _stream(
        self,
        path: str,
        body: dict[str, Any],
        request: GenerationRequest,
        progress: StreamProgress,
    ) -> GenerationResult:
        """One attempt as a stream. Each chunk carries its token ids, so what was produced is
        known at every moment (no per-chunk usage needed); the final chunk carries the usage."""
        builders = [_ChoiceBuilder(i, request) for i in range(request.n)]
        prompt_tokens = completion_tokens = 0
        prompt_ids: tuple[int, ...] | None = None
        final_usage = False
        charged_before = progress.completion_tokens
        chat = path.endswith("/chat/completions")
        async for chunk in self._sse(path, body):
            if prompt_ids is None and chunk.get("prompt_token_ids"):
                prompt_ids = tuple(chunk["prompt_token_ids"])
            for raw in chunk.get("choices") or []:
                if prompt_ids is None and raw.get("prompt_token_ids"):
                    prompt_ids = tuple(raw["prompt_token_ids"])
                builder = builders[raw["index"]]
                builder.add(raw, chat=chat)
                progress.emit(builder.index, builder.parts[-1])
                progress.prefilled.set()
            usage = chunk.get("usage")
            if usage:
                prompt_tokens = int(usage.get("prompt_tokens") or 0)
                completion_tokens = int(usage.get("completion_tokens") or 0)
                final_usage = final_usage or not chunk.get("choices")
            elif prompt_ids is not None:
                prompt_tokens = len(prompt_ids)
            progress.prompt_tokens = prompt_tokens
            progress.completion_tokens = charged_before + max(
                completion_tokens, sum(b.tokens for b in builders)
            )
        progress.prefilled.set()
        if not final_usage:
            raise _Retryable(f"stream from {path} ended without a final usage chunk")
        progress.completion_tokens = charged_before + completion_tokens
        return GenerationResult(
            choices=tuple(b.build(completion_tokens, request.n) for b in builders),
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            prompt_ids=prompt_ids,
        )

    async def _sse(self, path: str, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        try:
            async with self._client.stream("POST", path, json=body) as response:
                if response.status_code >= 400:
                    await response.aread()
                    _raise_for_status(response)
                async for line in response.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    payload = line[5:].strip()
                    if payload == "[DONE]":
                        return
                    try:
                        chunk = json.loads(payload)
                    except ValueError:
                        raise BackendError(
                            f"{path}: the server sent a malformed stream chunk: {payload[:200]!r}"
                        ) from None
                    if not isinstance(chunk, dict):
                        raise BackendError(f"{path}: unexpected stream chunk {payload[:200]!r}")
                    if "error" in chunk:
                        raise BackendError(f"{path}: server error mid-stream: {chunk['error']}")
                    yield chunk
        except httpx.UnsupportedProtocol as error:
            raise BackendError(f"{path}: {error}") from None
        except httpx.TransportError as error:
            raise _Retryable(f"{type(error).__name__}: {error}") from error

    # -- pooling (reward models) -------------------------------------------------------------

    async def pool(
        self, request: PoolingRequest, progress: StreamProgress | None = None
    ) -> PoolingResult:
        """Class probabilities from a server started with `--runner pooling`: `/pooling` with
        task token_classify (a PRM: one row per step tag) or `/classify` (an outcome model).
        vLLM 0.32 serves one pooling task per server; asked for the other it says so."""
        progress = progress if progress is not None else StreamProgress()
        path = "/classify" if request.task == "classify" else "/pooling"
        body: dict[str, Any] = {"model": self.model}
        if request.task == "token_classify":
            body["task"] = "token_classify"
        if request.messages is not None:
            body["messages"] = [{"role": m.role, "content": m.content} for m in request.messages]
        else:
            body["input"] = request.prompt
        started = time.perf_counter()
        response = await self._attempts(
            path, progress, lambda: self._send("POST", path, body, retry=False)
        )
        result = _pooling_result(path, response)
        return result.model_copy(update={"latency": time.perf_counter() - started})

    # -- plain HTTP with retries -------------------------------------------------------------

    async def _attempts(
        self, path: str, progress: StreamProgress, attempt: Callable[[], Awaitable[_T]]
    ) -> _T:
        """`attempt()` until it does not fail transiently, at most `max_retries` + 1 times.
        The caller admits each retry (`progress.before_retry`, which may refuse it); each
        transient failure is noted in `progress.events` and followed by a backoff."""
        for number in range(self.max_retries + 1):
            if number and progress.before_retry is not None:
                progress.before_retry()  # the caller admits the retry, or refuses it
            progress.attempts = number + 1
            try:
                return await attempt()
            except _Retryable as error:
                progress.events.append(str(error))
                if number == self.max_retries:
                    raise BackendError(
                        f"{path} failed after {number + 1} attempts: {error}"
                    ) from error
                await asyncio.sleep(self._backoff(number, error))
        raise AssertionError("unreachable")

    async def _request_json(
        self, method: str, path: str, body: dict[str, Any] | None = None, *, retry: bool = True
    ) -> dict[str, Any]:
        response = await self._send(method, path, body, retry=retry)
        try:
            return response.json()
        except ValueError as error:
            raise BackendError(f"{path} returned non-JSON: {response.text[:300]!r}") from error

    async def _send(
        self, method: str, path: str, body: dict[str, Any] | None = None, *, retry: bool = True
    ) -> httpx.Response:
        attempts = self.max_retries + 1 if retry else 1
        for attempt in range(attempts):
            try:
                response = await self._client.request(method, path, json=body)
                _raise_for_status(response)
                return response
            except httpx.UnsupportedProtocol as error:  # permanent: retrying cannot help
                raise BackendError(f"{method} {self.base_url}{path}: {error}") from None
            except httpx.TransportError as error:
                failure: Exception = _Retryable(f"{type(error).__name__}: {error}")
            except _Retryable as error:
                failure = error
            if attempt == attempts - 1:
                if retry:
                    raise BackendError(
                        f"{method} {path} failed after {attempts} attempts: {failure}"
                    )
                raise failure
            await asyncio.sleep(self._backoff(attempt, failure))
        raise AssertionError("unreachable")

    def _backoff(self, attempt: int, failure: Exception | None = None) -> float:
        """Exponential backoff with jitter, but never sooner than the server's Retry-After."""
        delay = self.backoff_base * 2**attempt
        delay += self._jitter.uniform(0, delay)
        return max(delay, getattr(failure, "retry_after", None) or 0.0)


class _Retryable(Exception):
    """A transient failure: connection trouble, 429 or 5xx (`status`, when the server
    answered)."""

    def __init__(
        self, message: str, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


def _retry_after(response: httpx.Response) -> float | None:
    """Seconds from a Retry-After header in its seconds form (the date form is rare)."""
    try:
        return max(0.0, float(response.headers.get("retry-after", "")))
    except ValueError:
        return None


def _raise_for_status(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    message = _server_message(response)
    where = f"{response.request.method} {response.request.url.path}"
    if response.status_code in RETRY_STATUSES:
        raise _Retryable(
            f"{where} -> HTTP {response.status_code}: {message}",
            status=response.status_code,
            retry_after=_retry_after(response),
        )
    error_type = ContextLengthError if "context length" in message.lower() else BackendError
    raise error_type(f"{where} -> HTTP {response.status_code}: {message}", response.status_code)


def _server_message(response: httpx.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        return response.text[:500]
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict) and "message" in error:
            return str(error["message"])
        for key in ("message", "detail", "error"):
            if key in data:
                return str(data[key])
    return str(data)[:500]


def _pooling_result(path: str, response: httpx.Response) -> PoolingResult:
    """The rows of a `/pooling` (`data[0].data`) or `/classify` (`data[0].probs`) answer for
    one input; an answer of another shape is one error naming the endpoint and what it sent."""
    field = "probs" if path == "/classify" else "data"
    try:
        data = response.json()
        raw = data["data"][0][field]
        if isinstance(raw, list) and raw and not isinstance(raw[0], list):
            raw = [raw]  # one pooled vector: a single row
        rows = tuple(tuple(float(x) for x in row) for row in raw)
        prompt_tokens = int((data.get("usage") or {}).get("prompt_tokens") or 0)
    except (ValueError, KeyError, IndexError, TypeError, AttributeError) as error:
        raise BackendError(
            f"POST {path}: expected data[0].{field} as rows of probabilities "
            f"({type(error).__name__}: {error}); the server sent {response.text[:300]!r}"
        ) from None
    if any(len(row) != len(rows[0]) or not row for row in rows):
        raise BackendError(f"POST {path}: rows of unequal or zero width: {response.text[:300]!r}")
    return PoolingResult(rows=rows, prompt_tokens=prompt_tokens)


def _wire_messages(request: GenerationRequest) -> list[dict[str, str]]:
    assert request.messages is not None
    return [{"role": m.role, "content": m.content} for m in request.messages]


def _server_root(base_url: str) -> str:
    """The server root of `base_url` (`http://host:8000/v1` works too), checked up front so a
    typo fails once and clearly instead of on every retry."""
    root = base_url.strip().rstrip("/").removesuffix("/v1")
    try:
        url = httpx.URL(root)
    except httpx.InvalidURL as error:
        raise BackendError(f"base URL {base_url!r} is not valid: {error}") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise BackendError(f"base URL {base_url!r}: expected http(s)://host[:port]")
    if url.port is not None and not 0 < url.port < 65536:
        raise BackendError(f"base URL {base_url!r} is not valid: port {url.port} out of range")
    return root


class RenderCache:
    """Rendered prompts (token ids) by what was rendered, bounded: least recently used out."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("the render cache needs room for at least one prompt")
        self.size = size
        self._ids: OrderedDict[Hashable, tuple[int, ...]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._ids)

    def get(self, key: Hashable) -> tuple[int, ...] | None:
        ids = self._ids.get(key)
        if ids is not None:
            self._ids.move_to_end(key)
        return ids

    def put(self, key: Hashable, ids: tuple[int, ...]) -> None:
        self._ids[key] = ids
        self._ids.move_to_end(key)
        while len(self._ids) > self.size:
            self._ids.popitem(last=False)


def _render_key(request: GenerationRequest) -> Hashable:
    """What a rendering depends on (messages are frozen, hence hashable)."""
    if request.prompt is not None:
        return ("prompt", request.prompt)
    return ("chat", request.messages, request.continue_final_message)


class _ChoiceBuilder:
    """Accumulates one choice's text, token ids and logprobs (streamed or whole)."""

    def __init__(self, index: int, request: GenerationRequest) -> None:
        self.index = index
        self.top_k = request.top_logprobs
        self.parts: list[str] = []
        self.ids: list[int] = []
        self.logprobs: list[float] = []
        self.tops: list[dict[str, float]] = []
        self.saw_ids = self.saw_logprobs = False
        self.finish_reason: str | None = None
        self.stop_reason: str | int | None = None

    @property
    def tokens(self) -> int:
        return len(self.ids) if self.saw_ids else len(self.logprobs)

    def add(self, raw: dict[str, Any], *, chat: bool) -> None:
        if chat:
            message = raw.get("delta") or raw.get("message") or {}
            self.parts.append(message.get("content") or "")
            logprobs = raw.get("logprobs")
            if logprobs is not None:
                self.saw_logprobs = True
                for entry in logprobs.get("content") or []:
                    self.logprobs.append(_finite(entry.get("logprob")))
                    self.tops.append({
                        t["token"]: _finite(t["logprob"]) for t in entry.get("top_logprobs") or []
                    })
        else:
            self.parts.append(raw.get("text") or "")
            logprobs = raw.get("logprobs")
            if logprobs is not None:
                self.saw_logprobs = True
                self.logprobs.extend(_finite(x) for x in logprobs.get("token_logprobs") or [])
                for top in logprobs.get("top_logprobs") or []:
                    # The completions API adds the sampled token to the top k; the chat API
                    # (and this backend, for both) keeps the server's first k entries only.
                    entries = list((top or {}).items())[: self.top_k]
                    self.tops.append({k: _finite(v) for k, v in entries})
        if raw.get("token_ids") is not None:
            self.saw_ids = True
            self.ids.extend(int(t) for t in raw["token_ids"])
        if raw.get("finish_reason"):
            self.finish_reason = raw["finish_reason"]
            self.stop_reason = raw.get("stop_reason")

    def build(self, usage_tokens: int, n: int) -> Choice:
        tokens = self.tokens
        if not self.saw_ids and not self.saw_logprobs and n == 1:
            tokens = usage_tokens  # a server that returns neither: the usage is this choice's
        return Choice(
            index=self.index,
            text="".join(self.parts),
            completion_tokens=tokens,
            finish_reason=self.finish_reason,
            stop_reason=self.stop_reason,
            token_logprobs=tuple(self.logprobs) if self.saw_logprobs else None,
            top_logprobs=tuple(self.tops) if any(self.tops) else None,
            token_ids=tuple(self.ids) if self.saw_ids else None,
        )


def _finite(value: Any) -> float:
    """vLLM reports -inf logprobs as a large negative number or null; keep them finite."""
    if value is None:
        return -1e4
    return max(float(value), -1e4)


def _parse_full(data: dict[str, Any], request: GenerationRequest) -> GenerationResult:
    usage = data.get("usage") or {}
    completion_tokens = int(usage.get("completion_tokens") or 0)
    choices = []
    chat = "message" in ((data.get("choices") or [{}])[0])
    prompt_ids = data.get("prompt_token_ids")
    for raw in data.get("choices") or []:
        builder = _ChoiceBuilder(raw["index"], request)
        builder.add(raw, chat=chat)
        builder.finish_reason = raw.get("finish_reason")
        builder.stop_reason = raw.get("stop_reason")
        choices.append(builder.build(completion_tokens, request.n))
        prompt_ids = prompt_ids or raw.get("prompt_token_ids")
    prompt_logprobs = None
    if data.get("prompt_logprobs") is not None or (
        data.get("choices") and data["choices"][0].get("prompt_logprobs") is not None
    ):
        raw_prompt = data.get("prompt_logprobs") or data["choices"][0].get("prompt_logprobs")
        prompt_logprobs = tuple(
            None if entry is None else {
                str(v.get("decoded_token", k)): _finite(v.get("logprob")) for k, v in entry.items()
            }
            for entry in raw_prompt
        )
    return GenerationResult(
        choices=tuple(choices),
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        completion_tokens=completion_tokens,
        prompt_logprobs=prompt_logprobs,
        prompt_ids=tuple(prompt_ids) if prompt_ids else None,
    )
