"""Shared fixtures. The vLLM server is started at most once per test session."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest


@dataclass(frozen=True)
class ServerInfo:
    base_url: str  # http://host:port, without /v1
    model: str  # served model name, as requests must name it
    log_path: Path | None = None  # the managed server's log; None for $ITC_BASE_URL


@pytest.fixture(scope="session")
def vllm_server() -> Iterator[ServerInfo]:
    """A running vLLM server: ``$ITC_BASE_URL`` if set, else a managed local one.

    Sync on purpose: the server process outlives any one event loop, and pytest-asyncio gives
    tests their own loops.
    """
    base_url = os.environ.get("ITC_BASE_URL", "").rstrip("/")
    if base_url:
        base_url = base_url.removesuffix("/v1")
        model = os.environ.get("ITC_MODEL") or _first_model(base_url)
        yield ServerInfo(base_url, model)
        return

    from itc.backends.local.server import ManagedServer

    server = ManagedServer("smollm2-135m")
    try:
        asyncio.run(server.start())
        yield ServerInfo(server.base_url, server.served_model_name, server.log_path)
    finally:
        server.stop()


@pytest.fixture
async def backend(vllm_server: ServerInfo):  # type: ignore[no-untyped-def]
    """A `VLLMBackend` on the test session's real server, closed after the test."""
    from itc.backends.vllm import VLLMBackend

    backend = VLLMBackend(vllm_server.base_url, vllm_server.model)
    await backend.resolve_model()
    yield backend
    await backend.aclose()


def _first_model(base_url: str) -> str:
    response = httpx.get(f"{base_url}/v1/models", timeout=10.0)
    response.raise_for_status()
    return response.json()["data"][0]["id"]
