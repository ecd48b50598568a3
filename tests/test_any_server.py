"""itc works with any OpenAI-compatible server, and bad URLs or replies get one clear error."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from itc.backends.base import BackendError, GenerationRequest
from itc.backends.vllm import VLLMBackend, _Retryable
from itc.types import Message

ROOT = Path(__file__).resolve().parents[1]
KEY = "sk-test-123"


@pytest.fixture(scope="module")
def openai_like() -> Iterator[str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "openai_like_server.py"), str(port), KEY]
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                httpx.get(f"{url}/v1/models", timeout=0.5)
                break
            except httpx.TransportError:
                time.sleep(0.05)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=10)


def itc(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "itc.cli", *args], capture_output=True, text=True, cwd=ROOT,
        timeout=120,
    )


def test_a_pipeline_runs_on_a_server_without_tokenize_or_context_length(openai_like) -> None:  # type: ignore[no-untyped-def]
    done = itc(
        "run", str(ROOT / "examples/self_consistency.yaml"), "--problem", "What is 6 times 7?",
        "--base-url", f"{openai_like}/v1", "--api-key", KEY, "--budget-tokens", "2000",
        "--trace-json", "/dev/stdout",
    )
    assert done.returncode == 0, done.stderr
    assert "answer: 42" in done.stdout
    result = json.loads(done.stdout[done.stdout.index("{"):])
    assert result["usage"]["calls"] == 1 and result["usage"]["completion_tokens"] == 8 * 11
    assert result["usage"]["prompt_tokens"] + result["usage"]["completion_tokens"] <= 2000


def test_verbose_logs_every_call_as_it_finishes(openai_like) -> None:  # type: ignore[no-untyped-def]
    done = itc(
        "--verbose", "run", str(ROOT / "examples/greedy.yaml"), "--problem", "6 x 7?",
        "--base-url", openai_like, "--api-key", KEY,
    )
    assert done.returncode == 0, done.stderr
    log = " ".join(done.stderr.split())
    assert "cli main ok: n=1," in log and "generated tokens" in log


def test_bench_exits_1_when_problems_errored_and_counts_them_apart(openai_like, tmp_path) -> None:  # type: ignore[no-untyped-def]
    common = ("bench", str(ROOT / "examples/greedy.yaml"), "--dataset", "synthetic",
              "--count", "3", "--base-url", openai_like, "--api-key", KEY, "--no-report")
    broken = itc(*common, "--model", "broken-1", "--output-dir", str(tmp_path / "b"))
    assert broken.returncode == 1, broken.stderr
    assert "3 problem runs ended in an error" in " ".join(broken.stderr.split())
    summary = json.loads((tmp_path / "b" / "summary.json").read_text())[0]
    assert (summary["errors"], summary["correct"], summary["accuracy"]) == (3, 0, 0.0)
    fine = itc(*common, "--model", "echo-1", "--output-dir", str(tmp_path / "f"))
    assert fine.returncode == 0, fine.stderr


def test_a_wrong_key_is_one_clear_error(openai_like) -> None:  # type: ignore[no-untyped-def]
    done = itc("run", str(ROOT / "examples/greedy.yaml"), "--problem", "?",
               "--base-url", openai_like, "--api-key", "wrong")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "HTTP 401: invalid api key" in " ".join(done.stderr.split())


async def test_the_upper_bound_for_a_server_without_tokenize_covers_the_real_count(
    openai_like,  # type: ignore[no-untyped-def]
) -> None:
    backend = VLLMBackend(openai_like, api_key=KEY, max_model_len=4096)
    await backend.resolve_model()
    request = GenerationRequest(messages=(Message(role="user", content="What is 6 x 7?"),))
    bound = await backend.count_prompt_tokens(request)
    result = await backend.generate(request)
    assert result.prompt_tokens <= bound and await backend.max_model_len() == 4096
    await backend.aclose()


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("http://127.0.0.1:99999", "is not valid"),
        ("not-a-url", "expected http(s)://host[:port]"),
        ("ftp://host", "expected http(s)://host[:port]"),
    ],
)
def test_bad_base_urls_fail_at_once(url: str, fragment: str) -> None:
    with pytest.raises(BackendError) as error:
        VLLMBackend(url)
    assert fragment in str(error.value)
    done = itc("run", str(ROOT / "examples/greedy.yaml"), "--problem", "?", "--base-url", url)
    assert done.returncode == 2 and "Traceback" not in done.stderr and fragment in done.stderr


def test_a_trailing_v1_is_the_same_server() -> None:
    assert VLLMBackend("http://h:8000/v1/").base_url == "http://h:8000"


def test_retry_after_is_honoured() -> None:
    backend = VLLMBackend("http://h:1", backoff_base=0.01)
    busy = _Retryable("429", status=429, retry_after=3.0)
    assert backend._backoff(0, busy) >= 3.0
    assert backend._backoff(0, _Retryable("500", status=500)) < 1.0


async def test_retry_after_header_is_read_from_the_response() -> None:
    seen: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if len(seen) == 0:
            seen.append(time.monotonic())
            return httpx.Response(429, headers={"Retry-After": "0.3"}, json={"message": "slow"})
        seen.append(time.monotonic())
        return httpx.Response(200, json={"data": [{"id": "m"}]})

    client = httpx.AsyncClient(transport=httpx.MockTransport(handler), base_url="http://t")
    backend = VLLMBackend("http://t", client=client, backoff_base=0.001)
    await backend.list_models()
    assert seen[1] - seen[0] >= 0.3


async def test_a_malformed_stream_chunk_names_the_endpoint() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"data: {not json\n\n")

    client = httpx.AsyncClient(transport=httpx.MockTransport(handler), base_url="http://t")
    backend = VLLMBackend("http://t", "m", client=client, max_model_len=100)
    request = GenerationRequest(prompt_ids=(1, 2), stream=True)
    with pytest.raises(BackendError, match="/v1/completions: the server sent a malformed stream"):
        await backend.generate(request)
