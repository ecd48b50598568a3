"""Grading code completions by running them against a task's tests (HumanEval).

The untrusted program runs in its own subprocess (``python -I``, a fresh temporary directory as
working directory and home, a minimal environment, no stdin, its own process group). A small
wrapper executed by the child sets the resource limits before running the program, so nothing
runs between fork and exec in the parent (``preexec_fn`` is unsafe with threads): address space
(``RLIMIT_AS``), CPU seconds, file size, and no core files. An outer wall-clock timeout kills the
whole process group, which also takes care of anything the program forked.

The wrapper reports how the program ended in a status file, so a program that calls
``sys.exit(0)`` or ``os._exit(0)`` before the tests run cannot pass. This is isolation against
accidents (infinite loops, memory hogs, stray files), not a security sandbox: the program runs
with the caller's user and network access.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from itc.types import Problem

__all__ = ["CodeResult", "build_program", "extract_code", "run_humaneval", "run_program"]

#: Largest file the program may write (its stderr file included), against runaway output.
_FILE_LIMIT = 16 * 1024 * 1024
_PYTHON_TAGS = frozenset({"python", "py", "python3"})

_FENCE = re.compile(
    r"^[ \t]*```[ \t]*([\w+-]*)[^\n]*\n(.*?)(?:^[ \t]*```[ \t]*$|\Z)", re.MULTILINE | re.DOTALL
)

# Runs inside the child with `python -I -c`: argv = status file, program, memory bytes,
# CPU seconds, file-size bytes. Limits are set here, in the child, before the program starts.
_WRAPPER = r"""
import json, linecache, os, resource, runpy, sys

status_path, program = sys.argv[1], sys.argv[2]
memory, cpu, fsize = (int(a) for a in sys.argv[3:6])
fd = os.open(status_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
MEMORY = b'{"outcome": "memory"}'


def limit(which, value):
    soft, hard = resource.getrlimit(which)
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    resource.setrlimit(which, (value, value if which != resource.RLIMIT_CPU else hard))


limit(resource.RLIMIT_CORE, 0)
limit(resource.RLIMIT_CPU, cpu)
limit(resource.RLIMIT_FSIZE, fsize)
limit(resource.RLIMIT_AS, memory)


def report(status):
    os.write(fd, json.dumps(status).encode())
    os.close(fd)


sys.argv = [program]
try:
    runpy.run_path(program, run_name="__main__")
except MemoryError:
    os.write(fd, MEMORY)
except SystemExit as exc:
    report({"outcome": "exit", "code": str(exc.code)})
except BaseException as exc:
    try:
        line = None
        tb = exc.__traceback__
        while tb is not None:
            if tb.tb_frame.f_code.co_filename == program:
                line = tb.tb_lineno
            tb = tb.tb_next
        source = linecache.getline(program, line).strip() if line else ""
        report({"outcome": "error", "type": type(exc).__name__, "message": str(exc)[:500],
                "line": line, "source": source[:300]})
    except MemoryError:
        os.write(fd, MEMORY)
else:
    report({"outcome": "passed"})
"""


@dataclass(frozen=True)
class CodeResult:
    """How a run ended: ``reason`` is "passed", "timed out", "memory limit" or "failed: ...";
    ``detail`` has the failing test line or the end of stderr, for debugging."""

    passed: bool
    reason: str
    elapsed: float = 0.0
    detail: str = ""
    output: str = ""
    """The start of what the program printed, when asked for (`run_program(stdout_bytes=)`)."""


def extract_code(text: str) -> str:
    """The code in a model's answer: the last ```python fenced block, else the last unlabelled
    fenced block, else the whole text. An unterminated final fence (the model ran out of tokens)
    runs to the end of the text."""
    blocks = [(m.group(1).lower(), m.group(2)) for m in _FENCE.finditer(text)]
    for wanted in (lambda tag: tag in _PYTHON_TAGS, lambda tag: tag == ""):
        chosen = [body for tag, body in blocks if wanted(tag)]
        if chosen:
            return chosen[-1].rstrip() + "\n"
    return text


def _defines(code: str, name: str) -> bool:
    pattern = rf"^(?:async[ \t]+)?def[ \t]+{re.escape(name)}[ \t]*\("
    return re.search(pattern, code, re.MULTILINE) is not None


def build_program(prompt: str, completion: str, entry_point: str, test: str) -> str:
    """The program to run: the solution, then the task's tests, then ``check(entry_point)``.

    A completion that defines ``entry_point`` at top level is a whole solution; it still follows
    the original prompt, whose imports and helper functions it may rely on, and whose stub
    (signature plus docstring, a valid function on its own) it replaces. Anything else is the
    function's body, appended to the prompt; a body with no indentation at all (some chat
    models strip it) is indented one level so it lands inside the function.
    """
    code = extract_code(completion)
    head = prompt if prompt.endswith("\n") else prompt + "\n"
    if _defines(code, entry_point):
        solution = f"{head}\n\n{code}"
    else:
        lines = code.splitlines()
        first = next((line for line in lines if line.strip()), "")
        if first and not first[0].isspace():
            code = "\n".join(f"    {line}" if line.strip() else line for line in lines)
        solution = head + code
    return f"{solution.rstrip()}\n\n\n{test.strip()}\n\n\ncheck({entry_point})\n"


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass  # the group is already gone


def _tail(path: Path, limit: int = 2000) -> str:
    try:
        data = path.read_bytes()[-limit:]
    except OSError:
        return ""
    return data.decode("utf-8", errors="replace").strip()


def _head(path: Path, limit: int) -> str:
    if limit <= 0:
        return ""
    try:
        with path.open("rb") as handle:
            data = handle.read(limit)
    except OSError:
        return ""
    return data.decode("utf-8", errors="replace")


def _classify(
    status: dict[str, object] | None, returncode: int, stderr: str
) -> tuple[bool, str, str]:
    """(passed, reason, detail) from the wrapper's report, or from how the process died."""
    if status is not None:
        outcome = status.get("outcome")
        if outcome == "passed" and returncode == 0:
            return True, "passed", ""
        if outcome == "memory":
            return False, "memory limit", stderr
        if outcome == "exit":
            return False, f"failed: exited before the tests finished (code {status['code']})", ""
        if outcome == "error":
            message = f": {status['message']}" if status.get("message") else ""
            where = f"line {status['line']}: {status['source']}" if status.get("line") else ""
            return False, f"failed: {status['type']}{message}", where
    if returncode == -signal.SIGXCPU:
        return False, "timed out", "CPU time limit"
    if returncode == -signal.SIGXFSZ:
        return False, "failed: file size limit", stderr
    if "MemoryError" in stderr or "Cannot allocate memory" in stderr or "bad_alloc" in stderr:
        return False, "memory limit", stderr
    how = f"signal {-returncode}" if returncode < 0 else f"exit code {returncode}"
    return False, f"failed: the process ended before the tests finished ({how})", stderr


# The timeout is the child's wall-clock limit (the process group is killed when it expires),
# not a way to abandon the await, so it stays a parameter rather than `asyncio.timeout`.
async def run_program(
    program: str,
    *,
    timeout: float = 10.0,  # noqa: ASYNC109
    memory_mb: int = 1024,
    stdout_bytes: int = 0,
) -> CodeResult:
    """Run a Python program under the limits described in the module docstring.

    It passes if it runs to the end without an exception. Callers bound concurrency themselves
    (each call is one process). The first `stdout_bytes` of what it prints are kept in the
    result's `output` (by default its output is discarded).
    """
    if timeout <= 0 or memory_mb <= 0:
        raise ValueError("timeout and memory_mb must be positive")
    with tempfile.TemporaryDirectory(prefix="itc-code-", ignore_cleanup_errors=True) as tmp:
        root = Path(tmp)
        program_path, status_path, stderr_path, stdout_path = (
            root / "program.py", root / "status.json", root / "stderr.txt", root / "stdout.txt"
        )
        program_path.write_text(program, encoding="utf-8")
        env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": tmp,
            "TMPDIR": tmp,
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "OMP_NUM_THREADS": "1",
            "OPENBLAS_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
        }
        args = (
            str(status_path), str(program_path), str(memory_mb * 1024 * 1024),
            str(math.ceil(timeout) + 1), str(_FILE_LIMIT),
        )
        started = time.monotonic()
        with stderr_path.open("wb") as stderr, stdout_path.open("wb") as stdout:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-I", "-c", _WRAPPER, *args,
                cwd=tmp, env=env, stdin=asyncio.subprocess.DEVNULL,
                stdout=stdout if stdout_bytes > 0 else asyncio.subprocess.DEVNULL,
                stderr=stderr, start_new_session=True,
            )
        timed_out = False
        try:
            await asyncio.wait_for(process.wait(), timeout)
        except TimeoutError:
            timed_out = True
        finally:
            # Always: on timeout, on cancellation, and after a normal exit (forked leftovers).
            _kill_group(process.pid)
            if process.returncode is None:
                await process.wait()
        elapsed = time.monotonic() - started
        output = _head(stdout_path, stdout_bytes)
        if timed_out:
            return CodeResult(False, "timed out", elapsed, f"wall clock over {timeout:g}s", output)
        try:
            status = json.loads(status_path.read_text(encoding="utf-8") or "null")
        except (OSError, ValueError):
            status = None
        returncode = process.returncode
        assert returncode is not None
        passed, reason, detail = _classify(status, returncode, _tail(stderr_path))
        return CodeResult(passed, reason, elapsed, detail, output)


async def run_humaneval(
    problem: Problem,
    completion: str,
    *,
    timeout: float = 10.0,  # noqa: ASYNC109 - the child's limit, as in run_program
    memory_mb: int = 1024,
) -> CodeResult:
    """Whether ``completion`` solves a HumanEval-style problem (see :func:`build_program`).

    The problem's metadata must hold ``entry_point`` and ``test``; the original ``prompt``
    defaults to ``problem.prompt``.
    """
    metadata = problem.metadata
    missing = [key for key in ("entry_point", "test") if not metadata.get(key)]
    if missing:
        raise ValueError(f"problem {problem.id}: metadata lacks {missing} (not a code task?)")
    prompt = metadata.get("prompt") or problem.prompt or ""
    program = build_program(prompt, completion, metadata["entry_point"], metadata["test"])
    return await run_program(program, timeout=timeout, memory_mb=memory_mb)
