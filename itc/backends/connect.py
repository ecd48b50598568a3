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
) -> AsyncIterator[VLLMBackend]:
    """A backend for `base_url`, or for a managed local vLLM server when none is given.

    The managed server is always stopped on the way out, Ctrl-C included.
    """
    if base_url is not None:
        backend = VLLMBackend(base_url, model)
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
