"""Searching a space with Optuna ask/tell: concurrent trials, a compute budget, resumable.

Several trials run at once on one event loop, sharing one runtime (one in-flight limit) and
one backend (a response cache there replays repeated samples across trials). The budget is
a constraint: a sampled pipeline whose static worst case exceeds it is told to the study as
infeasible before any call, and every evaluated one runs under it as a hard limit, so a
measured overrun or budget hit also marks its trial infeasible (`constraints_func`).

Trials are counted in the study's storage, so several workers (processes or calls) on one
storage share one study and stop together at `trials`. A worker stamps a heartbeat on its
running trials; a trial whose heartbeat went stale (its worker was killed) is failed and its
parameters re-enqueued, and a worker that is cancelled does the same for its own trials at
once, so no trial is lost or run twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import hashlib
import json
import math
import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, Trial, TrialState
from sqlalchemy.exc import SQLAlchemyError

from itc.backends.base import Backend
from itc.bench.datasets.base import Dataset
from itc.bench.runner import Grading
from itc.config import PipelineConfig, Registry, save_pipeline
from itc.planner.executor import Planner, ProblemResult
from itc.runtime.context import Grader, Runtime
from itc.search.space import SearchSpace, SpaceError, over_budget, sample
from itc.types import Problem
from itc.verifiers.math import math_grader_if_installed

Objectives = Literal["accuracy", "accuracy,tokens"]
HEARTBEAT = "itc:heartbeat"
"""System attribute: when the trial's worker last said it is alive (seconds since epoch)."""
WORKER = "worker"
"""User attribute: which worker ran the trial (`worker_id`, by default host-pid)."""
NO_CONSTRAINT = (0.0, 0.0)


class SearchError(RuntimeError):
    """A search that cannot go on (a study made for other settings, a dead server)."""


@dataclass(frozen=True)
class Evaluation:
    """A pipeline's results over some problems."""

    problems: int
    correct: int
    completion_tokens: int
    max_completion_tokens: int
    budget_hits: int
    errors: int

    @property
    def accuracy(self) -> float:
        return self.correct / max(self.problems, 1)

    @property
    def tokens_per_problem(self) -> float:
        return self.completion_tokens / max(self.problems, 1)


@dataclass(frozen=True)
class Finalist:
    """A best trial, re-evaluated on the full set."""

    number: int
    params: dict[str, Any]
    pipeline: PipelineConfig
    sample_accuracy: float
    sample_tokens: float
    full: Evaluation


@dataclass
class SearchResult:
    study: optuna.Study
    finalists: list[Finalist]
    """Best first (full-set accuracy, then fewer tokens)."""
    best: PipelineConfig | None
    files: dict[str, Path] = field(default_factory=dict)


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """A storage by URL: `journal:PATH` is a journal file, anything else an RDB URL
    (`sqlite:///path.db`, `postgresql://...`). SQLite waits for a busy file rather than
    failing, so several workers can share one."""
    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend

        path = Path(url.removeprefix("journal:").removeprefix("//"))
        path.parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 60}}
    return optuna.storages.RDBStorage(url, **kwargs)


async def _open_study(
    storage: str | optuna.storages.BaseStorage | None, name: str, directions: list[str]
) -> tuple[optuna.storages.BaseStorage, optuna.Study]:
    """Open (or create) the study. Workers started together race to create the same tables
    and study; the loser's error is transient, so it tries again a few times."""
    for attempt in range(5):
        try:
            opened = (
                open_storage(storage) if isinstance(storage, str)
                else storage or optuna.storages.InMemoryStorage()
            )
            study = optuna.create_study(
                storage=opened, study_name=name, load_if_exists=True, directions=directions
            )
            return opened, study
        except (SQLAlchemyError, optuna.exceptions.StorageInternalError):
            if attempt == 4:
                raise
            await asyncio.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


def _constraint(trial: FrozenTrial) -> Sequence[float]:
    return trial.user_attrs.get("constraint", NO_CONSTRAINT)


def feasible(trial: FrozenTrial) -> bool:
    return all(c <= 0 for c in _constraint(trial))


_NATIVE_CONSTRAINTS = hasattr(Trial, "set_constraint")
"""Optuna 5 takes constraint values from the trial; older ones from `constraints_func`."""


def _constrain(trial: Trial, values: Sequence[float]) -> None:
    """Set the trial's constraint values (feasible when all are <= 0), just before it is told."""
    trial.set_user_attr("constraint", [float(v) for v in values])
    if _NATIVE_CONSTRAINTS:
        for name, value in zip(("overrun_tokens", "budget_hits"), values, strict=True):
            trial.set_constraint(name, value)


def _sampler(two: bool, seed: int, trials: int) -> optuna.samplers.BaseSampler:
    constraints = {} if _NATIVE_CONSTRAINTS else {"constraints_func": _constraint}
    if two:
        population = max(4, min(20, trials // 4))
        return optuna.samplers.NSGAIISampler(population_size=population, seed=seed, **constraints)
    startup = max(2, min(10, trials // 3))
    return optuna.samplers.TPESampler(n_startup_trials=startup, seed=seed, **constraints)


MAX_TWINS_IN_A_ROW = 5
"""Twins a worker drops before it runs one anyway (a small space may have no new ones)."""


class _Search:
    """One worker's state: the study, its own running trials, the shared planner."""

    def __init__(
        self,
        space: SearchSpace,
        study: optuna.Study,
        planner: Planner,
        grading: Grading,
        dataset: Dataset,
        *,
        budget: int,
        trials: int,
        sample_problems: Sequence[Problem],
        chunk: int,
        two: bool,
        registry: Registry | None,
        heartbeat: float,
        stale_after: float,
        poll: float,
        on_trial: Callable[[FrozenTrial], None] | None,
        worker_id: str,
        anytime: bool = False,
    ) -> None:
        self.space = space
        self.study = study
        self.planner = planner
        self.grading = grading
        self.dataset = dataset
        self.budget = budget
        self.trials = trials
        self.sample_problems = sample_problems
        self.chunk = chunk
        self.two = two
        self.registry = registry
        self.heartbeat = heartbeat
        self.stale_after = stale_after
        self.poll = poll
        self.on_trial = on_trial
        self.worker_id = worker_id
        self.anytime = anytime
        self.twins_in_a_row = 0
        self.own: dict[int, Trial] = {}

    # Pipelines.

    def pipeline(self, params: dict[str, Any], number: int) -> PipelineConfig:
        """The trial's pipeline under the search budget (the tighter of it and the space's)."""
        pipeline = sample(self.space, optuna.trial.FixedTrial(params), self.registry)
        return self.limited(pipeline, number)

    def limited(self, pipeline: PipelineConfig, number: int) -> PipelineConfig:
        own = pipeline.budget.completion_tokens
        tokens = self.budget if own is None else min(own, self.budget)
        budget = pipeline.budget.model_copy(update={"completion_tokens": tokens})
        return pipeline.model_copy(
            update={"budget": budget, "name": f"{pipeline.name}-trial{number}"}
        )

    # Trials: counting, handing out, failing stale ones.

    def _stamp(self, trial: Trial) -> None:
        self.study._storage.set_trial_system_attr(trial._trial_id, HEARTBEAT, time.time())

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat)
            for trial in list(self.own.values()):
                try:
                    self._stamp(trial)
                except UpdateFinishedTrialError:
                    pass  # told between the listing and the stamp

    def _retry(self, trial: FrozenTrial, why: str) -> None:
        self.study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number, "why": why})

    def fail_stale(self) -> None:
        """Fail (and re-enqueue) running trials of other workers whose heartbeat is stale."""
        now = time.time()
        storage = self.study._storage
        for trial in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if trial.number in self.own:
                continue
            start = trial.datetime_start.timestamp() if trial.datetime_start else now
            seen = trial.system_attrs.get(HEARTBEAT, start)
            if now - seen < self.stale_after:
                continue
            try:
                storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
            except UpdateFinishedTrialError:
                continue  # another worker got there first, or it just finished
            self._retry(trial, "its worker stopped (stale heartbeat)")

    async def next_trial(self) -> Trial | None:
        """A trial to run, or None once the study holds `trials` finished ones."""
        while True:
            self.fail_stale()
            counts = {s: 0 for s in TrialState}
            for t in self.study.get_trials(deepcopy=False):
                counts[t.state] += 1
            finished = counts[TrialState.COMPLETE] + counts[TrialState.PRUNED]
            if finished >= self.trials:
                return None
            if counts[TrialState.WAITING] or finished + counts[TrialState.RUNNING] < self.trials:
                trial = self.study.ask()
                self._stamp(trial)
                # Workers asking at once may overshoot: the trials numbered past `trials`
                # (failed ones aside, which are retried under a new number) give way.
                alive = [
                    t for t in self.study.get_trials(deepcopy=False)
                    if t.number <= trial.number and t.state != TrialState.FAIL
                ]
                if len(alive) <= self.trials:
                    return trial
                trial.set_user_attr("surplus", True)
                self.study.tell(trial, state=TrialState.FAIL)
            await asyncio.sleep(self.poll)  # the last trials run elsewhere: they may fail

    async def worker(self) -> None:
        while (trial := await self.next_trial()) is not None:
            self.own[trial.number] = trial
            try:
                trial.set_user_attr(WORKER, self.worker_id)
                await self.run_trial(trial)
            except UpdateFinishedTrialError:
                # Another worker found this one's heartbeat stale (it was slow, not dead),
                # failed the trial and queued its parameters again: that retry counts, this
                # late result does not, and this worker goes on with the next trial.
                continue
            except BaseException as stop:  # cancelled or broken: hand the trial back
                if not isinstance(stop, SearchError):
                    try:
                        self.study.tell(trial, state=TrialState.FAIL)
                    except (UpdateFinishedTrialError, ValueError, RuntimeError):
                        raise stop from None  # already told: nothing to hand back
                    self._retry(trial, f"interrupted ({type(stop).__name__})")
                raise
            finally:
                self.own.pop(trial.number, None)
            if self.on_trial is not None:
                self.on_trial(self.study._storage.get_trial(trial._trial_id))

    # One trial.

    async def run_trial(self, trial: Trial) -> None:
        try:
            pipeline = sample(self.space, trial, self.registry)
        except SpaceError as error:
            trial.set_user_attr("rejected", str(error))
            self.study.tell(trial, state=TrialState.PRUNED)
            return
        twin = self._twin(trial)
        if twin is not None and self.twins_in_a_row < MAX_TWINS_IN_A_ROW:
            # Samplers repeat themselves under ask/tell concurrency (NSGA-II hands out a
            # running trial's parameters again): the twin would compute the same calls at the
            # same time, so it is dropped (failed, not counted) and another one asked for.
            self.twins_in_a_row += 1
            trial.set_user_attr("duplicate_of", twin)
            self.study.tell(trial, state=TrialState.FAIL)
            return
        self.twins_in_a_row = 0
        pipeline = self.limited(pipeline, trial.number)
        reasons = [] if self.anytime else over_budget(pipeline)
        if reasons:
            bound = pipeline.worst_case()
            worst = bound.completion_tokens if bound is not None else self.budget
            trial.set_user_attr("rejected", "; ".join(reasons))
            _constrain(trial, [worst - self.budget, 1.0])
            values = [0.0, float(worst)] if self.two else [0.0]
            self.study.tell(trial, values)
            return
        done: list[ProblemResult] = []
        for start in range(0, len(self.sample_problems), self.chunk):
            part = self.sample_problems[start : start + self.chunk]
            results = await self.planner.run_many(pipeline, part, pipeline.budget)
            if all(r.error is not None for r in results):
                self.study.tell(trial, state=TrialState.FAIL)
                self._retry(trial, "every problem ended in an error")
                raise SearchError(f"trial {trial.number}: {results[0].error}")
            done += results
            score = await evaluate(self.dataset, self.grading, done)
            self._record(trial, score)
            if not self.two:
                trial.report(score.accuracy, len(done))
                if start + self.chunk < len(self.sample_problems) and trial.should_prune():
                    trial.set_user_attr("pruned_at", len(done))
                    _constrain(trial, self._constraint(score))
                    self.study.tell(trial, state=TrialState.PRUNED)
                    return
        _constrain(trial, self._constraint(score))
        self.study.tell(trial, [score.accuracy, score.tokens_per_problem][: 1 + self.two])

    def _twin(self, trial: Trial) -> int | None:
        """The number of a running trial with the same parameters, if any (a finished twin
        replays from the response cache, so only a running one would cost anything)."""
        for other in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if other.number != trial.number and other.params == trial.params:
                return other.number
        return None

    def _record(self, trial: Trial, score: Evaluation) -> None:
        trial.set_user_attr("accuracy", score.accuracy)
        trial.set_user_attr("tokens_per_problem", score.tokens_per_problem)
        trial.set_user_attr("problems", score.problems)
        trial.set_user_attr("errors", score.errors)

    def _constraint(self, score: Evaluation) -> list[float]:
        """Measured: the worst overrun of the budget (tokens), and problems that hit it
        (which an anytime search allows: there the budget is how a configuration stops)."""
        hits = 0 if self.anytime else score.budget_hits
        return [score.max_completion_tokens - self.budget, hits]


async def evaluate(
    dataset: Dataset, grading: Grading, results: Sequence[ProblemResult]
) -> Evaluation:
    """Grade results (an errored problem counts as wrong)."""
    by_id = {p.id: p for p in dataset.problems}
    marks = await asyncio.gather(
        *(grading(dataset, by_id[r.problem_id], r.answer, r.text) for r in results)
    )
    tokens = [r.usage.completion_tokens for r in results]
    return Evaluation(
        problems=len(results),
        correct=sum(bool(m) and r.error is None for m, r in zip(marks, results, strict=True)),
        completion_tokens=sum(tokens),
        max_completion_tokens=max(tokens, default=0),
        budget_hits=sum(r.budget_exhausted is not None for r in results),
        errors=sum(r.error is not None for r in results),
    )


def _settings(
    space: SearchSpace,
    dataset: Dataset,
    budget: int,
    objectives: str,
    sample_size: int,
    anytime: bool,
) -> dict[str, Any]:
    settings = {
        "space": space.model_dump(mode="json", by_alias=True),
        "dataset": dataset.name,
        # The problems themselves (an --offset changes them under the same dataset name).
        "problems": _digest([p.id for p in dataset.problems[:sample_size]]),
        "budget": budget,
        "objectives": objectives,
        "sample": sample_size,
    }
    if anytime:
        settings["anytime"] = True
    return settings


def _digest(ids: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]


def pareto_front(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    """Trials no other beats on both accuracy (higher) and tokens (fewer)."""

    def point(t: FrozenTrial) -> tuple[float, float]:
        return t.user_attrs["accuracy"], t.user_attrs["tokens_per_problem"]

    front = []
    for t in trials:
        a, k = point(t)
        if not any(
            (b >= a and m <= k) and (b > a or m < k) for b, m in map(point, trials)
        ):
            front.append(t)
    return sorted(front, key=lambda t: (-point(t)[0], point(t)[1], t.number))


def evaluated(study: optuna.Study) -> list[FrozenTrial]:
    """Completed, evaluated (not rejected) and feasible trials."""
    return [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if "rejected" not in t.user_attrs and "accuracy" in t.user_attrs and feasible(t)
    ]


async def search(
    space: SearchSpace,
    dataset: Dataset,
    backend: Backend,
    *,
    budget: int,
    trials: int,
    storage: str | optuna.storages.BaseStorage | None = None,
    study_name: str | None = None,
    concurrency: int = 2,
    sample_size: int = 20,
    chunk: int | None = None,
    objectives: Objectives = "accuracy",
    top: int = 3,
    seed: int = 0,
    max_in_flight: int = 32,
    output_dir: str | Path | None = None,
    registry: Registry | None = None,
    stale_after: float = 60.0,
    poll: float = 1.0,
    on_trial: Callable[[FrozenTrial], None] | None = None,
    grader: Grader | None = None,
    math_verify: bool = True,
    worker_id: str | None = None,
    anytime: bool = False,
    backends: dict[str, Backend] | None = None,
) -> SearchResult:
    """Search `space` for the most accurate pipelines within `budget` generated tokens per
    problem; run it again (or beside another worker) on the same storage to resume or share.

    Trials are scored on the first `sample_size` problems of `dataset`, in chunks of `chunk`
    (pruning poor ones early with one objective; Optuna cannot prune multi-objective
    studies); then the `top` best (or, for "accuracy,tokens", up to `top` of the Pareto
    front, most accurate first) are re-evaluated on every problem of `dataset`. `storage`
    defaults to `<output_dir>/study.db` (SQLite), or memory without an output folder. A
    running trial of another worker with no heartbeat for `stale_after` seconds is lost: it
    is failed and its parameters retried.

    Answers are graded with `grader` if given (a `MathGrader` the caller owns, say, shared
    by several searches); else with a math-verify pool started for this call when installed
    and `math_verify`, else as plain numbers and trimmed text. Each trial is tagged with
    `worker_id` (default host-pid) in its `worker` user attribute.

    With `anytime`, configurations whose static worst case exceeds the budget run too: the
    hard budget stops them and they answer from what they have (step searches, samplers
    that keep their finished samples), so only a measured overrun makes a trial infeasible.
    With `top=0` nothing is re-evaluated and the best trial on the sample is the best.
    `backends` are the runtime's named servers (reward models, other generators).
    """
    if budget < 1 or trials < 1 or concurrency < 1 or sample_size < 1 or top < 0:
        raise ValueError("budget, trials, concurrency and sample_size must be >= 1, top >= 0")
    if objectives not in ("accuracy", "accuracy,tokens"):
        raise ValueError(f"objectives must be accuracy or accuracy,tokens, got {objectives!r}")
    if not dataset.problems:
        raise ValueError(f"dataset {dataset.name!r} has no problems")
    out = Path(output_dir) if output_dir is not None else None
    if storage is None and out is not None:
        storage = f"sqlite:///{out / 'study.db'}"
    two = objectives == "accuracy,tokens"
    name = study_name or f"{space.name}-{dataset.name}-{budget}"
    storage, probe = await _open_study(storage, name, ["maximize", "minimize"][: 1 + two])
    settings = _settings(space, dataset, budget, objectives, sample_size, anytime)
    known = probe.user_attrs.get("settings")
    if known is None:
        probe.set_user_attr("settings", settings)
    elif known != settings:
        changed = sorted(k for k in {*known, *settings} if known.get(k) != settings.get(k))
        raise SearchError(f"study {name!r} was made with other settings ({', '.join(changed)}); "
                          "give another study name")
    # Seeded by the trials already there, so a resumed search goes on instead of repeating.
    sampler = _sampler(two, seed + len(probe.trials), trials)
    pruner = (
        optuna.pruners.NopPruner()
        if two
        else optuna.pruners.MedianPruner(n_startup_trials=max(2, min(5, trials // 4)))
    )
    study = optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)
    problems = dataset.problems[:sample_size]
    worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}"
    async with contextlib.AsyncExitStack() as stack:
        if grader is None and math_verify:
            grader = await stack.enter_async_context(math_grader_if_installed())
        runtime = Runtime(
            backend=backend, max_in_flight=max_in_flight, grader=grader,
            backends=dict(backends or {}),
        )
        planner = Planner(runtime, max_problems_in_flight=max_in_flight)
        grading = Grading(grader)
        state = _Search(
            space, study, planner, grading, dataset,
            budget=budget, trials=trials, sample_problems=problems,
            chunk=chunk or max(1, math.ceil(len(problems) / 4)), two=two, registry=registry,
            heartbeat=min(10.0, stale_after / 4), stale_after=stale_after, poll=poll,
            on_trial=on_trial, worker_id=worker_id, anytime=anytime,
        )
        beat = asyncio.create_task(state._beat())
        try:
            async with asyncio.TaskGroup() as group:
                for _ in range(concurrency):
                    group.create_task(state.worker())
        except BaseExceptionGroup as group_error:
            raise group_error.exceptions[0] from None
        finally:
            beat.cancel()
        finalists = await _finalists(state, top)
    best = finalists[0].pipeline if finalists else _best_on_sample(state)
    result = SearchResult(study=study, finalists=finalists, best=best)
    if out is not None:
        result.files = write_outputs(result, out, two)
    return result


def _best_on_sample(state: _Search) -> PipelineConfig | None:
    """The most accurate evaluated trial on the sample (fewest tokens among equals)."""
    candidates = evaluated(state.study)
    if not candidates:
        return None
    best = min(
        candidates,
        key=lambda t: (-t.user_attrs["accuracy"], t.user_attrs["tokens_per_problem"], t.number),
    )
    return state.pipeline(best.params, best.number)


async def _finalists(state: _Search, top: int) -> list[Finalist]:
    """The best trials, each re-evaluated on the full set (once per study: stored in it)."""
    study = state.study
    candidates = evaluated(study)
    if state.two:
        chosen = pareto_front(candidates)[:top]
    else:
        chosen = sorted(
            candidates,
            key=lambda t: (-t.user_attrs["accuracy"], t.user_attrs["tokens_per_problem"]),
        )[:top]
    pipelines = [state.pipeline(t.params, t.number) for t in chosen]

    async def full(trial: FrozenTrial, pipeline: PipelineConfig) -> Evaluation:
        key = f"full:{trial.number}:{len(state.dataset.problems)}"
        stored = study.user_attrs.get(key)
        if stored is not None:
            return Evaluation(**stored)
        results = await state.planner.run_many(pipeline, state.dataset.problems, pipeline.budget)
        score = await evaluate(state.dataset, state.grading, results)
        study.set_user_attr(key, score.__dict__)
        return score

    scores = await asyncio.gather(*(full(t, p) for t, p in zip(chosen, pipelines, strict=True)))
    finalists = [
        Finalist(
            number=t.number,
            params=dict(t.params),
            pipeline=p,
            sample_accuracy=t.user_attrs["accuracy"],
            sample_tokens=t.user_attrs["tokens_per_problem"],
            full=s,
        )
        for t, p, s in zip(chosen, pipelines, scores, strict=True)
    ]
    return sorted(finalists, key=lambda f: (-f.full.accuracy, f.full.tokens_per_problem))


# Outputs.


def write_outputs(result: SearchResult, out: Path, two: bool) -> dict[str, Path]:
    """best.yaml, front.md, front.png (with matplotlib) and trials.csv in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    if result.best is not None:
        files["best"] = out / "best.yaml"
        save_pipeline(result.best, files["best"])
    files["front"] = out / "front.md"
    files["front"].write_text(front_table(result, two))
    files["trials"] = out / "trials.csv"
    write_trials_csv(result.study, files["trials"])
    try:
        files["plot"] = plot_front(result, out / "front.png")
    except ImportError:
        pass  # matplotlib is the optional `plot` extra
    return files


def front_table(result: SearchResult, two: bool) -> str:
    what = "Pareto front (accuracy vs generated tokens)" if two else "Top trials by accuracy"
    lines = [
        f"# {result.study.study_name}: {what}",
        "",
        "Sample: accuracy and generated tokens per problem on the search sample; full: "
        "re-evaluated on the whole set.",
        "",
        "| trial | sample accuracy | sample tokens | full accuracy | full tokens | params |",
        "|---:|---:|---:|---:|---:|---|",
    ]
    for f in result.finalists:
        params = ", ".join(f"{k}={v}" for k, v in f.params.items())
        lines.append(
            f"| {f.number} | {f.sample_accuracy:.1%} | {f.sample_tokens:.0f} | "
            f"{f.full.accuracy:.1%} ({f.full.correct}/{f.full.problems}) | "
            f"{f.full.tokens_per_problem:.0f} | {params} |"
        )
    if not result.finalists:
        # Nothing rerun (--top 0): the front, or the best trials, on the sample alone.
        trials = evaluated(result.study)
        shown = pareto_front(trials) if two else sorted(
            trials, key=lambda t: (-t.user_attrs["accuracy"], t.user_attrs["tokens_per_problem"])
        )[:5]
        for t in shown:
            params = ", ".join(f"{k}={v}" for k, v in t.params.items())
            lines.append(
                f"| {t.number} | {t.user_attrs['accuracy']:.1%} | "
                f"{t.user_attrs['tokens_per_problem']:.0f} | not rerun | | {params} |"
            )
        if not shown:
            lines.append("| - | no feasible evaluated trial | | | | |")
    return "\n".join(lines) + "\n"


def write_trials_csv(study: optuna.Study, path: Path) -> None:
    columns = ["number", "state", "accuracy", "tokens_per_problem", "problems", "feasible",
               "constraint", "rejected", "pruned_at", "retry_of", "duplicate_of", "worker",
               "params"]
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for t in study.get_trials(deepcopy=False):
            attrs = t.user_attrs
            writer.writerow([
                t.number, t.state.name, attrs.get("accuracy", ""),
                attrs.get("tokens_per_problem", ""), attrs.get("problems", ""),
                feasible(t), json.dumps(attrs.get("constraint", [])), attrs.get("rejected", ""),
                attrs.get("pruned_at", ""), attrs.get("retry_of", ""),
                attrs.get("duplicate_of", ""), attrs.get(WORKER, ""),
                json.dumps(t.params, sort_keys=True),
            ])


def plot_front(result: SearchResult, path: Path) -> Path:
    from itc.bench.plots import new_figure

    figure = new_figure()
    axes = figure.add_subplot()
    trials = evaluated(result.study)
    axes.scatter(
        [t.user_attrs["tokens_per_problem"] for t in trials],
        [t.user_attrs["accuracy"] for t in trials],
        color="0.7", label="trials (sample)",
    )
    front = pareto_front(trials)
    front.sort(key=lambda t: t.user_attrs["tokens_per_problem"])
    axes.plot(
        [t.user_attrs["tokens_per_problem"] for t in front],
        [t.user_attrs["accuracy"] for t in front],
        marker="o", drawstyle="steps-post", label="Pareto front (sample)",
    )
    for f in result.finalists:
        axes.scatter([f.full.tokens_per_problem], [f.full.accuracy], marker="*", s=120,
                     color="tab:red")
        axes.annotate(f"#{f.number}", (f.full.tokens_per_problem, f.full.accuracy),
                      textcoords="offset points", xytext=(4, 6), fontsize=8)
    if result.finalists:
        axes.scatter([], [], marker="*", color="tab:red", label="re-evaluated (full set)")
    axes.set_ylim(-0.02, 1.02)
    axes.set_xlabel("generated tokens per problem")
    axes.set_ylabel("accuracy")
    axes.set_title(f"{result.study.study_name}: accuracy vs generated tokens")
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=8)
    figure.savefig(path, dpi=120)
    return path
