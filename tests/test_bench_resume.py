"""Resumable runs: a crash loses nothing and duplicates nothing; errored problems retry."""

from __future__ import annotations

import json

from itc.backends.base import BackendError
from itc.backends.scripted import ScriptedBackend
from itc.bench.datasets import Dataset
from itc.bench.results import load_results
from itc.bench.runner import run_benchmark
from itc.config import PipelineConfig
from itc.strategies.generate import Generate
from itc.types import Problem

PROBLEMS = tuple(
    Problem(id=f"q{i}", prompt=f"What is {i} plus {i} ?", answer=str(2 * i)) for i in range(6)
)
DATA = Dataset("toy", PROBLEMS)
PIPELINE = PipelineConfig.single(Generate(temperature=0.0), name="greedy")


def doubling(request, index):  # type: ignore[no-untyped-def]
    number = int(request.messages[-1].content.split()[2])
    return f"so the answer is {2 * number}"


async def test_crash_midway_then_resume_has_no_duplicates_and_no_losses(tmp_path) -> None:
    class Crash(Exception):
        pass

    calls = 0

    def crashing(request, index):  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        if calls > 3:
            raise Crash("process died")
        return doubling(request, index)

    try:
        await run_benchmark([PIPELINE], DATA, ScriptedBackend(crashing), output_dir=tmp_path,
                            max_problems_in_flight=1)
    except BaseException:
        pass
    file = next(tmp_path.glob("*.jsonl"))
    first = [json.loads(line) for line in file.read_text().splitlines()]
    finished_first = {r["problem_id"] for r in first if r["error"] is None}
    assert len(finished_first) == 3

    backend = ScriptedBackend(doubling)
    summary = (await run_benchmark([PIPELINE], DATA, backend, output_dir=tmp_path))[0]
    assert summary.problems == 6 and summary.correct == 6 and summary.errors == 0
    # Only the unfinished problems were sent again.
    asked = {r.messages[-1].content for r in backend.requests}
    assert len(asked) == 6 - len(finished_first)
    rows = load_results(file)
    assert sorted(r["problem_id"] for r in rows) == [p.id for p in PROBLEMS]


async def test_problems_that_errored_are_retried_on_rerun(tmp_path) -> None:
    def dead_server(request, index):  # type: ignore[no-untyped-def]
        raise BackendError("POST /v1/chat/completions failed after 5 attempts: ConnectError")

    first = (await run_benchmark([PIPELINE], DATA, ScriptedBackend(dead_server),
                                 output_dir=tmp_path))[0]
    assert first.errors == 6 and first.correct == 0
    second = (await run_benchmark([PIPELINE], DATA, ScriptedBackend(doubling),
                                  output_dir=tmp_path))[0]
    assert second.errors == 0 and second.correct == 6 and second.problems == 6
    rows = load_results(tmp_path)
    assert len(rows) == 6 and all(r["error"] is None for r in rows)
