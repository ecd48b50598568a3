"""A Python tool: runs a snippet in a fresh subprocess and answers with what it printed.

It reuses the code grader's sandbox (`itc.verifiers.code.run_program`): `python -I` in a
temporary directory, a minimal environment, memory, CPU and file-size limits, and a wall-clock
limit that kills the whole process group. That is isolation against accidents (loops, memory
hogs), not a security boundary: the code runs as the caller's user.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Annotated

from pydantic import Field

from itc.runtime.tools import Tool, tool
from itc.verifiers.code import run_program


class PythonError(RuntimeError):
    """The snippet failed, timed out or ran out of memory (the message says which)."""


def python_tool(
    name: str = "python",
    *,
    time_limit: float = 5.0,
    memory_mb: int = 256,
    max_output_chars: int = 4000,
    concurrency: int = 2,
    latency: float = 0.0,
) -> Tool:
    """The runner as a tool; at most `concurrency` snippets of this tool run at once (each
    is a process)."""
    slots = asyncio.Semaphore(concurrency)

    @tool(name=name)
    async def python(
        code: Annotated[str, Field(description="a program; print() what you want back")],
    ) -> str:
        """Runs Python code in a sandboxed subprocess and returns what it printed."""
        async with slots:
            result = await run_program(
                code, timeout=time_limit, memory_mb=memory_mb, stdout_bytes=4 * max_output_chars
            )
        output = result.output[:max_output_chars]
        if not result.passed:
            detail = f" ({result.detail.strip()[-500:]})" if result.detail.strip() else ""
            printed = f"; it printed: {output[-1000:]}" if output else ""
            raise PythonError(f"{result.reason}{detail}{printed}")
        return output

    return replace(python, latency=latency)
