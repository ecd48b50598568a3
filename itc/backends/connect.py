"""Where the LLM comes from: a server the user names, or the embedded local default."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from rich.console import Console

from itc.backends.local.server import ManagedServer
from itc.backends.vllm import VLLMBackend

DEFAULT_MODEL = "smollm2-135m"


@asynccontextmanager
async def connect(
    base_url: str | None = None,
    model: str | None = None,
    console: Console | None = None,
    *,
    api_key: str | None = None,
    max_model_len: int | None = None,
) -> AsyncIterator[VLLMBackend]:
    """A backend for `base_url` (vLLM or any OpenAI-compatible server; `.../v1` accepted), or
    for a managed local vLLM server when none is given.

    `api_key` is sent as a bearer token; `max_model_len` stands in for a server that does not
    report its context length. The managed server is always stopped on the way out, Ctrl-C
    included.
    """
    if base_url is not None:
        backend = VLLMBackend(base_url, model, api_key=api_key, max_model_len=max_model_len)
        try:
            await backend.resolve_model()
            yield backend
        finally:
            await backend.aclose()
        return
    server = ManagedServer(model or DEFAULT_MODEL, console=console)
    try:
        await server.start()
        backend = VLLMBackend(server.base_url, server.served_model_name)
        try:
            await backend.resolve_model()
            yield backend
        finally:
            await backend.aclose()
    finally:
        server.stop()
