"""Benchmark runs: pipelines over a dataset, graded, checkpointed, summarised.

Every finished problem is appended to the run's JSONL file straight away (one line, flushed
and fsynced), keyed by config fingerprint, dataset, problem id and seed; rerunning the same
command skips what is already there, so a crash or a dead server loses nothing.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SerializerFunctionWrapHandler, model_serializer
from pydantic_core import to_jsonable_python
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from itc.backends.base import Backend
from itc.bench.datasets.base import Dataset
from itc.config import PipelineConfig
from itc.planner.executor import Planner, ProblemResult
from itc.runtime.context import Grader, Runtime
from itc.types import Problem, omit_defaults
from itc.verifiers.math import math_grader_if_installed


class Summary(BaseModel):
    config: str
    fingerprint: str
    dataset: str
    problems: int
    correct: int
    accuracy: float
    """Correct over the problems that ran to an answer; errored ones are counted apart."""
    tokens_per_problem: float
    completion_tokens_per_problem: float
    calls_per_problem: float
    wall_time: float
    """Seconds this invocation ran (problems resumed from earlier runs cost it nothing)."""
    wall_time_per_problem: float
    """Mean seconds from a problem's start to its answer; problems overlap, so these do not
    add up to the run's wall time."""
    errors: int
    budget_exhausted: int
    """Problems where a budget limit refused or clipped at least one call."""
    prefix_cache_hit_rate: float | None = None
    """Share of prompt tokens the server's prefix cache served during this run (vLLM's
    counters, read before and after; None when the server has none or nothing ran)."""
    results_file: str = ""
    tool_calls_per_problem: float = 0.0
    """Tool calls (not among `calls_per_problem`); written only when tools ran."""

    @model_serializer(mode="wrap")
    def _no_tools_unwritten(self, handler: SerializerFunctionWrapHandler) -> Any:
        return omit_defaults(handler(self), self, ("tool_calls_per_problem",))


def run_key(pipeline: PipelineConfig, dataset: str, problem_id: str, seed: int) -> str:
    return f"{pipeline.fingerprint()}|{dataset}|{problem_id}|{seed}"


class ResultsFile:
    """Append-only JSONL of finished problems; the source of truth for resuming."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def _ends_torn(self) -> bool:
        if not self.path.exists() or self.path.stat().st_size == 0:
            return False
        with self.path.open("rb") as handle:
            handle.seek(-1, os.SEEK_END)
            return handle.read(1) != b"\n"

    def rows(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        rows = []
        with self.path.open(encoding="utf-8") as handle:
            for line in handle:
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    continue  # a line torn by a crash mid-write: that problem reruns
        return rows

    def append(self, row: dict[str, Any]) -> None:
        line = json.dumps(row, ensure_ascii=False) + "\n"
        if self._ends_torn():
            line = "\n" + line  # a crash mid-write left half a line: keep the new row whole
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())


async def run_benchmark(
    pipelines: Sequence[PipelineConfig],
    dataset: Dataset,
    backend: Backend,
    *,
    output_dir: Path,
    backends: Mapping[str, Backend] | None = None,
    seed: int = 0,
    max_in_flight: int = 32,
    max_problems_in_flight: int = 16,
    console: Console | None = None,
    log_samples: bool = False,
) -> list[Summary]:
    """Run each pipeline over the dataset in turn (so wall times compare side by side).

    With `log_samples`, each row also keeps every call's prompt and sampled texts and every
    candidate a node ranked or voted on, losers included. `backends` are servers beside the
    generator by name: a reward model ("prm") for `NodeContext.pool`, or another generator a
    node names in its `model` (an ensemble over several models).
    """
    console = console or Console(stderr=True)
    summaries = []
    async with math_grader_if_installed() as grader:
        runtime = Runtime(
            backend=backend,
            max_in_flight=max_in_flight,
            grader=grader,
            log_samples=log_samples,
            backends=dict(backends or {}),
        )
        planner = Planner(runtime, max_problems_in_flight=max_problems_in_flight)
        for pipeline in pipelines:
            results = ResultsFile(output_dir / f"{pipeline.name}-{pipeline.fingerprint()}.jsonl")
            before = await _prefix_cache_counters(backend)
            summary = await _run_one(
                pipeline, dataset, planner, results, seed, Grading(grader), console
            )
            after = await _prefix_cache_counters(backend)
            if before is not None and after is not None and after[1] > before[1]:
                rate = (after[0] - before[0]) / (after[1] - before[1])
                summary = summary.model_copy(update={"prefix_cache_hit_rate": rate})
            summaries.append(summary)
    return summaries


async def _prefix_cache_counters(backend: Backend) -> tuple[float, float] | None:
    """(hits, queries) of a vLLM server's prefix cache, in tokens; None for servers without
    them. Configs run one after another, so the difference over a run is that config's."""
    metrics = getattr(backend, "metrics", None)
    if metrics is None:
        return None
    try:
        totals = await metrics()
    except Exception:  # a server with no /metrics (any OpenAI-compatible one) has no rate
        return None
    hits = totals.get("vllm:prefix_cache_hits_total")
    queries = totals.get("vllm:prefix_cache_queries_total")
    return None if hits is None or queries is None else (hits, queries)


async def _run_one(
    pipeline: PipelineConfig,
    dataset: Dataset,
    planner: Planner,
    results: ResultsFile,
    seed: int,
    grade: Grading,
    console: Console,
) -> Summary:
    # The last row of a key wins; a problem that ended in an error (a dead server, say) is
    # not done, so rerunning the command retries it.
    done = {row["key"]: row for row in results.rows()}
    done = {key: row for key, row in done.items() if row.get("error") is None}
    wanted = {run_key(pipeline, dataset.name, p.id, seed): p for p in dataset.problems}
    todo = [p for key, p in wanted.items() if key not in done]
    if len(todo) < len(wanted):
        skipped = len(wanted) - len(todo)
        console.print(f"[dim]{escape(pipeline.name)}: resuming, {skipped} already done")
    rows = [done[key] for key in wanted if key in done]
    started = time.monotonic()
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("acc {task.fields[acc]}  {task.fields[tokens]} tok  {task.fields[rate]} tok/s"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(
            escape(pipeline.name), total=len(wanted), acc="-", tokens=0, rate="-"
        )
        progress.update(task, completed=len(rows))

        async def record(result: ProblemResult) -> None:
            problem = by_id[result.problem_id]
            row = await _row(pipeline, dataset, problem, result, seed, grade)
            results.append(row)
            rows.append(row)
            tokens = sum(
                r["usage"]["prompt_tokens"] + r["usage"]["completion_tokens"] for r in rows
            )
            generated = sum(r["usage"]["completion_tokens"] for r in rows)
            answered = sum(r["error"] is None for r in rows)
            accuracy = sum(r["correct"] for r in rows) / max(answered, 1)
            rate = generated / max(time.monotonic() - started, 1e-9)
            progress.update(
                task, advance=1, acc=f"{accuracy:.1%}", tokens=tokens, rate=f"{rate:.0f}"
            )

        by_id = {p.id: p for p in todo}
        await planner.run_many(pipeline, todo, on_result=record)
    failed = sum(r["error"] is not None for r in rows)
    if failed:
        console.print(
            f"[yellow]{escape(pipeline.name)}: {failed} problems ended in an error "
            f"(first: {next(r['error'] for r in rows if r['error'])}); rerun the same command "
            "to retry just those."
        )
    summary = summarize(pipeline, dataset.name, rows, time.monotonic() - started)
    return summary.model_copy(update={"results_file": str(results.path)})


class Grading:
    """Grades answers by the dataset's answer kind, sharing one math process pool and
    capping how many gradings (code sandboxes above all) run at once."""

    def __init__(self, grader: Grader | None, sandboxes: int = 2) -> None:
        self.grader = grader
        self._sandboxes = asyncio.Semaphore(sandboxes)

    async def __call__(
        self, dataset: Dataset, problem: Problem, answer: str | None, text: str | None
    ) -> bool | None:
        async with self._sandboxes:
            return await dataset.answer.is_correct(problem, answer, text, self.grader)

    async def key(self, dataset: Dataset, answer: str | None) -> str | None:
        """The answer made comparable with other answers, so reports can re-run votes."""
        return None if answer is None else await dataset.answer.key(answer, self.grader)


async def _row(
    pipeline: PipelineConfig,
    dataset: Dataset,
    problem: Problem,
    result: ProblemResult,
    seed: int,
    grade: Grading,
) -> dict[str, Any]:
    correct = await grade(dataset, problem, result.answer, result.text)
    candidates = []
    for candidate in result.candidates:
        answer = pipeline.answer.read(candidate)
        candidates.append(
            {
                "answer": answer,
                "key": await grade.key(dataset, answer),
                "correct": await grade(dataset, problem, answer, candidate.text),
                "scores": candidate.scores,
                "completion_tokens": candidate.completion_tokens,
                # What the node recorded with it (a tool node's plans, calls and timings).
                **(
                    {"metadata": to_jsonable_python(candidate.metadata, fallback=str)}
                    if candidate.metadata
                    else {}
                ),
            }
        )
    return {
        "key": run_key(pipeline, dataset.name, problem.id, seed),
        "config": pipeline.name,
        "fingerprint": pipeline.fingerprint(),
        "dataset": dataset.name,
        "problem_id": problem.id,
        "seed": seed,
        "gold": problem.answer,
        "answer": result.answer,
        "correct": bool(correct),
        "usage": result.usage.model_dump(),
        "budget_exhausted": result.budget_exhausted,
        "refused_calls": result.refused_calls,
        "clipped_calls": result.clipped_calls,
        "error": result.error,
        "text": result.text,
        "candidates": candidates,
        "nodes": {k: v.model_dump() for k, v in result.trace.by_node().items()},
        "trace": [
            e.model_dump(exclude=None if e.samples is not None else {"prompt", "samples"})
            for e in result.trace.events
        ],
        **(
            {"samples": [c.model_dump() for c in result.trace.candidates]}
            if result.trace.candidates
            else {}
        ),
        **(
            {"search": [r.model_dump(exclude_none=True) for r in result.trace.search]}
            if result.trace.search
            else {}
        ),
    }


def summarize(
    pipeline: PipelineConfig, dataset: str, rows: list[dict[str, Any]], wall_time: float
) -> Summary:
    count = max(len(rows), 1)
    errors = sum(r["error"] is not None for r in rows)
    correct = sum(r["correct"] for r in rows)
    return Summary(
        config=pipeline.name,
        fingerprint=pipeline.fingerprint(),
        dataset=dataset,
        problems=len(rows),
        correct=correct,
        accuracy=correct / max(len(rows) - errors, 1),
        tokens_per_problem=sum(
            r["usage"]["prompt_tokens"] + r["usage"]["completion_tokens"] for r in rows
        )
        / count,
        completion_tokens_per_problem=sum(r["usage"]["completion_tokens"] for r in rows) / count,
        calls_per_problem=sum(r["usage"]["calls"] for r in rows) / count,
        tool_calls_per_problem=sum(r["usage"].get("tool_calls", 0) for r in rows) / count,
        wall_time=wall_time,
        wall_time_per_problem=sum(r["usage"]["wall_time"] for r in rows) / count,
        errors=errors,
        budget_exhausted=sum(r["budget_exhausted"] is not None for r in rows),
    )


def merge_summaries(path: Path, summaries: Sequence[Summary]) -> Path:
    """Write `summaries` into the folder's summary file, keeping the other configs' entries
    (rerunning one config must not drop the rest)."""
    kept: list[dict[str, Any]] = []
    try:
        previous = json.loads(path.read_text())
        kept = [entry for entry in previous if isinstance(entry, dict)]
    except (OSError, ValueError, TypeError):
        pass  # no summary yet, or an unreadable one: start afresh
    fresh = {(s.config, s.fingerprint, s.dataset) for s in summaries}
    kept = [
        entry
        for entry in kept
        if (entry.get("config"), entry.get("fingerprint"), entry.get("dataset")) not in fresh
    ]
    path.write_text(json.dumps(kept + [s.model_dump() for s in summaries], indent=2))
    return path


def summary_table(summaries: Sequence[Summary]) -> Table:
    table = Table(title=f"{summaries[0].dataset if summaries else ''} results")
    tools = any(s.tool_calls_per_problem for s in summaries)
    for column in (
        "config",
        "accuracy",
        "tokens/problem",
        "generated/problem",
        "calls/problem",
        *(["tool calls/problem"] if tools else []),
        "wall s/problem",
        "budget hit",
        "errors",
        "prefix cache",
    ):
        if column == "config":
            width = max((len(s.config) for s in summaries), default=6)
            table.add_column(column, no_wrap=True, min_width=width)
        else:
            table.add_column(column, justify="right")
    for s in summaries:
        table.add_row(
            escape(s.config),
            f"{s.accuracy:.1%} ({s.correct}/{s.problems - s.errors})",
            f"{s.tokens_per_problem:.0f}",
            f"{s.completion_tokens_per_problem:.0f}",
            f"{s.calls_per_problem:.1f}",
            *([f"{s.tool_calls_per_problem:.1f}"] if tools else []),
            f"{s.wall_time_per_problem:.1f}",
            f"{s.budget_exhausted}",
            f"{s.errors}",
            "-" if s.prefix_cache_hit_rate is None else f"{s.prefix_cache_hit_rate:.0%}",
        )
    return table
