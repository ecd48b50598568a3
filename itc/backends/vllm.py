"""A vLLM OpenAI-compatible server over one shared `httpx.AsyncClient`.

Sampling requests stream (with usage in every chunk) so that a call cancelled midway still
reports what the server spent; scoring requests (echo / prompt_logprobs) do not stream.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx

from itc.backends.base import (
    BackendError,
    Choice,
    ContextLengthError,
    GenerationRequest,
    GenerationResult,
    StreamProgress,
)

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


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
    ) -> None:
        self.base_url = base_url.rstrip("/")
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
        self._token_counts: dict[str, int] = {}
        self._max_model_len: int | None = None

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
        self._max_model_len = entry.get("max_model_len")
        return self.model

    async def max_model_len(self) -> int:
        if self._max_model_len is None:
            await self.resolve_model()
        if self._max_model_len is None:
            raise BackendError(f"{self.base_url}/v1/models does not report max_model_len")
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
        """Prompt length as the server will count it (its own tokenizer and chat template)."""
        body: dict[str, Any] = {"model": self.model}
        if request.prompt is not None:
            body["prompt"] = request.prompt
        else:
            body["messages"] = _wire_messages(request)
            body["add_generation_prompt"] = not request.continue_final_message
            body["continue_final_message"] = request.continue_final_message
        key = json.dumps(body, sort_keys=True)
        if key not in self._token_counts:
            data = await self._request_json("POST", "/tokenize", body)
            self._token_counts[key] = int(data["count"])
        return self._token_counts[key]

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
        path = "/v1/completions" if request.prompt is not None else "/v1/chat/completions"
        body = self._body(request)
        started = time.perf_counter()
        for attempt in range(self.max_retries + 1):
            progress.attempts = attempt + 1
            try:
                if request.scores_only:
                    data = await self._request_json("POST", path, body, retry=False)
                    result = _parse_full(data, request)
                else:
                    result = await self._stream(path, body, request, progress)
                return result.model_copy(update={"latency": time.perf_counter() - started})
            except _Retryable as error:
                progress.events.append(str(error))
                if attempt == self.max_retries:
                    raise BackendError(
                        f"{path} failed after {attempt + 1} attempts: {error}"
                    ) from error
                await asyncio.sleep(self._backoff(attempt))
        raise AssertionError("unreachable")

    def _body(self, request: GenerationRequest) -> dict[str, Any]:
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
        if request.prompt is not None:
            body["prompt"] = request.prompt
            body["logprobs"] = request.top_logprobs
        else:
            body["messages"] = _wire_messages(request)
            body["logprobs"] = True
            body["top_logprobs"] = request.top_logprobs
            body["continue_final_message"] = request.continue_final_message
            body["add_generation_prompt"] = not request.continue_final_message
        if not request.scores_only:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True, "continuous_usage_stats": True}
        return body

    async def _stream(
        self,
        path: str,
        body: dict[str, Any],
        request: GenerationRequest,
        progress: StreamProgress,
    ) -> GenerationResult:
        builders = [_ChoiceBuilder(i) for i in range(request.n)]
        prompt_tokens = completion_tokens = 0
        final_usage = False
        charged_before = progress.completion_tokens
        async for chunk in self._sse(path, body):
            for raw in chunk.get("choices") or []:
                builder = builders[raw["index"]]
                builder.add(raw, chat=request.messages is not None)
                progress.prefilled.set()
            usage = chunk.get("usage")
            if usage:
                prompt_tokens = int(usage.get("prompt_tokens") or 0)
                completion_tokens = int(usage.get("completion_tokens") or 0)
                final_usage = final_usage or not chunk.get("choices")
            progress.prompt_tokens = prompt_tokens
            progress.completion_tokens = charged_before + max(
                completion_tokens, sum(b.tokens for b in builders)
            )
        progress.prefilled.set()
        if not final_usage:
            raise _Retryable(f"stream from {path} ended without a final usage chunk")
        progress.completion_tokens = charged_before + completion_tokens
        return GenerationResult(
            choices=tuple(b.build() for b in builders),
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
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
                    chunk = json.loads(payload)
                    if "error" in chunk:
                        raise BackendError(f"{path}: server error mid-stream: {chunk['error']}")
                    yield chunk
        except httpx.TransportError as error:
            raise _Retryable(f"{type(error).__name__}: {error}") from error

    # -- plain HTTP with retries -------------------------------------------------------------

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
            await asyncio.sleep(self._backoff(attempt))
        raise AssertionError("unreachable")

    def _backoff(self, attempt: int) -> float:
        delay = self.backoff_base * 2**attempt
        return delay + self._jitter.uniform(0, delay)


class _Retryable(Exception):
    """A transient failure: connection trouble, 429 or 5xx."""


def _raise_for_status(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    message = _server_message(response)
    where = f"{response.request.method} {response.request.url.path}"
    if response.status_code in RETRY_STATUSES:
        raise _Retryable(f"{where} -> HTTP {response.status_code}: {message}")
    error_type = ContextLengthError if "context length" in message.lower() else BackendError
    raise error_type(f"{where} -> HTTP {response.status_code}: {message}")


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


def _wire_messages(request: GenerationRequest) -> list[dict[str, str]]:
    assert request.messages is not None
    return [{"role": m.role, "content": m.content} for m in request.messages]


class _ChoiceBuilder:
    """Accumulates one choice's streamed text and logprobs."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.parts: list[str] = []
        self.logprobs: list[float] = []
        self.tops: list[dict[str, float]] = []
        self.finish_reason: str | None = None
        self.stop_reason: str | int | None = None

    @property
    def tokens(self) -> int:
        return len(self.logprobs)

    def add(self, raw: dict[str, Any], *, chat: bool) -> None:
        if chat:
            self.parts.append((raw.get("delta") or {}).get("content") or "")
            entries = (raw.get("logprobs") or {}).get("content") or []
            for entry in entries:
                self.logprobs.append(_finite(entry.get("logprob")))
                self.tops.append(
                    {t["token"]: _finite(t["logprob"]) for t in entry.get("top_logprobs") or []}
                )
        else:
            self.parts.append(raw.get("text") or "")
            logprobs = raw.get("logprobs") or {}
            self.logprobs.extend(_finite(x) for x in logprobs.get("token_logprobs") or [])
            for top in logprobs.get("top_logprobs") or []:
                self.tops.append({k: _finite(v) for k, v in (top or {}).items()})
        if raw.get("finish_reason"):
            self.finish_reason = raw["finish_reason"]
            self.stop_reason = raw.get("stop_reason")

    def build(self) -> Choice:
        return Choice(
            index=self.index,
            text="".join(self.parts),
            completion_tokens=len(self.logprobs),
            finish_reason=self.finish_reason,
            stop_reason=self.stop_reason,
            token_logprobs=tuple(self.logprobs),
            top_logprobs=tuple(self.tops) if any(self.tops) else None,
        )


def _finite(value: Any) -> float:
    """vLLM reports -inf logprobs as a large negative number or null; keep them finite."""
    if value is None:
        return -1e4
    return max(float(value), -1e4)


def _parse_full(data: dict[str, Any], request: GenerationRequest) -> GenerationResult:
    usage = data.get("usage") or {}
    choices = []
    for raw in data.get("choices") or []:
        builder = _ChoiceBuilder(raw["index"])
        if request.messages is not None:
            builder.parts.append((raw.get("message") or {}).get("content") or "")
            for entry in (raw.get("logprobs") or {}).get("content") or []:
                builder.logprobs.append(_finite(entry.get("logprob")))
        else:
            builder.add(raw, chat=False)
        builder.finish_reason = raw.get("finish_reason")
        builder.stop_reason = raw.get("stop_reason")
        choices.append(builder.build())
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
        completion_tokens=int(usage.get("completion_tokens") or 0),
        prompt_logprobs=prompt_logprobs,
    )
