"""HTTP behaviour of the vLLM backend against scripted transports (no server needed)."""

from __future__ import annotations

import json

import httpx
import pytest

from itc.backends.base import BackendError, ContextLengthError, GenerationRequest, StreamProgress
from itc.backends.vllm import VLLMBackend
from itc.types import Message

REQUEST = GenerationRequest(
    messages=(Message(role="user", content="hi"),), n=2, max_tokens=3, stream=True, logprobs=True
)


def sse(*chunks: dict) -> bytes:
    body = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
    return body.encode()


def chat_chunk(index: int, text: str, finish: str | None = None) -> dict:
    return {
        "choices": [
            {
                "index": index,
                "delta": {"content": text},
                "logprobs": {"content": [{"token": text, "logprob": -0.5, "top_logprobs": []}]},
                "finish_reason": finish,
                "stop_reason": None,
            }
        ],
        "usage": {"prompt_tokens": 7, "completion_tokens": 1},
    }


def backend_with(handler) -> VLLMBackend:  # type: ignore[no-untyped-def]
    client = httpx.AsyncClient(transport=httpx.MockTransport(handler), base_url="http://test")
    return VLLMBackend("http://test", "m", client=client, backoff_base=0.001)


async def test_stream_assembles_choices_and_usage() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        assert body["stream"] and body["n"] == 2 and body["logprobs"] is True
        return httpx.Response(
            200,
            content=sse(
                chat_chunk(0, "Hel"),
                chat_chunk(1, "Yo"),
                chat_chunk(0, "lo", "stop"),
                chat_chunk(1, "!", "length"),
                {"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 4}},
            ),
        )

    result = await backend_with(handler).generate(REQUEST)
    assert [c.text for c in result.choices] == ["Hello", "Yo!"]
    assert [c.finish_reason for c in result.choices] == ["stop", "length"]
    assert result.prompt_tokens == 7 and result.completion_tokens == 4
    assert result.choices[0].token_logprobs == (-0.5, -0.5)


async def test_retries_5xx_and_429_then_succeeds() -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        if len(calls) == 1:
            return httpx.Response(503, json={"message": "overloaded"})
        if len(calls) == 2:
            return httpx.Response(429, json={"message": "slow down"})
        return httpx.Response(
            200,
            content=sse(
                chat_chunk(0, "a", "stop"),
                chat_chunk(1, "b", "stop"),
                {"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 2}},
            ),
        )

    progress = StreamProgress()
    result = await backend_with(handler).generate(REQUEST, progress)
    assert len(calls) == 3 and progress.attempts == 3
    assert "HTTP 503: overloaded" in progress.events[0]
    assert result.completion_tokens == 2


async def test_client_errors_are_not_retried_and_quote_the_server() -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(400, json={"error": {"message": "temperature must be >= 0"}})

    with pytest.raises(BackendError, match=r"HTTP 400: temperature must be >= 0"):
        await backend_with(handler).generate(REQUEST)
    assert len(calls) == 1


async def test_context_length_error_is_distinguished() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            400, json={"error": {"message": "This model's maximum context length is 2048"}}
        )

    with pytest.raises(ContextLengthError):
        await backend_with(handler).generate(REQUEST)


async def test_connection_errors_give_up_after_retries() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    backend = backend_with(handler)
    with pytest.raises(BackendError, match="failed after 5 attempts: ConnectError"):
        await backend.generate(REQUEST)


async def test_stream_without_final_usage_is_retried() -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        if len(calls) == 1:
            return httpx.Response(200, content=sse(chat_chunk(0, "par")))
        return httpx.Response(
            200,
            content=sse(
                chat_chunk(0, "a", "stop"),
                chat_chunk(1, "b", "stop"),
                {"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 2}},
            ),
        )

    progress = StreamProgress()
    await backend_with(handler).generate(REQUEST, progress)
    # The torn first attempt's token is still counted as spent.
    assert progress.completion_tokens == 3


async def test_metrics_and_models_parsing() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/metrics":
            return httpx.Response(
                200,
                text='# HELP x\nvllm:prefix_cache_hits_total{engine="0",model_name="m"} 12.0\n'
                'vllm:prefix_cache_hits_total{engine="1",model_name="m"} 3.0\n',
            )
        return httpx.Response(200, json={"data": [{"id": "m", "max_model_len": 2048}]})

    backend = backend_with(handler)
    assert (await backend.metrics())["vllm:prefix_cache_hits_total"] == 15.0
    assert await backend.max_model_len() == 2048
    backend.model = "other"
    with pytest.raises(BackendError, match="'other' is not served"):
        await backend.resolve_model()
