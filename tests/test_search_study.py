"""`itc search`: Optuna ask/tell over a search space under a token budget, resumable."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
import pytest_asyncio
from optuna.trial import TrialState

from itc.backends.scripted import ScriptedBackend
from itc.bench.datasets.base import Dataset
from itc.config import load_pipeline
from itc.planner.executor import Planner
from itc.runtime.context import Runtime
from itc.search.space import SearchSpace, parse_space
from itc.search.study import MAX_TWINS_IN_A_ROW, SearchError, pareto_front, search
from itc.types import Problem
from itc.verifiers.math import MathGrader, math_grader_if_installed

optuna.logging.set_verbosity(optuna.logging.WARNING)
pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")

DATA = Dataset(
    "sevens",
    tuple(Problem(id=f"q{i}", prompt=f"Question {i}: what is three plus four ?", answer="7")
          for i in range(6)),
)


Shared = MathGrader | None


@pytest_asyncio.fixture(scope="module")
async def grader() -> AsyncIterator[Shared]:
    """One math-verify pool for the module (starting one per search costs ~2 s)."""
    async with math_grader_if_installed() as shared:
        yield shared


@pytest.fixture
def scratch(tmp_path: Path) -> Iterator[Path]:
    """A folder for studies, in memory where /dev/shm allows: SQLite syncs every commit, and
    on a slow disk those syncs would take most of these tests' time."""
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield tmp_path
        return
    with tempfile.TemporaryDirectory(dir=shm, prefix="itc-search-") as folder:
        yield Path(folder)


def space(long: int = 400) -> SearchSpace:
    """Greedy is right with room to answer (max_tokens >= 8), a vote with n >= 3; `long`
    may break the budget."""
    return parse_space({
        "name": "tiny",
        "fixed": {"answer": "math"},
        "pipeline": "$strategy",
        "params": {"strategy": {"options": {
            "greedy": {
                "template": {"type": "generate", "temperature": 0.0, "max_tokens": "$mt"},
                "params": {"mt": {"values": [4, 8, long]}},
            },
            "vote": {
                "template": {"type": "self_consistency", "inner": {
                    "type": "generate", "n": "$n", "temperature": 0.7, "max_tokens": 6}},
                "params": {"n": {"int": [1, 4]}},
            },
        }}},
    })


def script(request: Any, index: int) -> str:
    """Right ("7") when the request may say more than 6 words or samples 3 or more."""
    if request.max_tokens > 6 or request.n >= 3:
        return "so the answer is 7 ."
    return "the answer is 1 ."


def backend(**kwargs: Any) -> ScriptedBackend:
    return ScriptedBackend(script, **kwargs)


def finished(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))


async def test_same_seed_same_trials(grader: Shared) -> None:
    runs = []
    for seed in (3, 3, 4):
        result = await search(space(), DATA, backend(), budget=100, trials=8, concurrency=1,
                              sample_size=4, top=0, seed=seed, poll=0.01, grader=grader)
        runs.append([t.params for t in result.study.trials])
    assert runs[0] == runs[1]
    assert len(runs[0]) == 8
    assert runs[0] != runs[2]


async def test_statically_infeasible_configs_make_no_calls(scratch: Path, grader: Shared) -> None:
    only_long = parse_space({
        "name": "long", "pipeline": {"type": "generate", "max_tokens": "$mt"},
        "params": {"mt": {"values": [300, 400]}},
    })
    scripted = backend()
    result = await search(only_long, DATA, scripted, budget=100, trials=3, sample_size=4,
                          output_dir=scratch, poll=0.01, grader=grader)
    assert scripted.requests == []
    for trial in result.study.trials:
        assert "where 100 are allowed" in trial.user_attrs["rejected"]
        assert trial.user_attrs["constraint"][0] > 0  # infeasible, by its worst case
    assert result.best is None and not (scratch / "best.yaml").exists()
    assert "no feasible" in (scratch / "front.md").read_text()


async def test_mixed_space_rejects_only_what_cannot_fit(grader: Shared) -> None:
    scripted = backend()
    result = await search(space(), DATA, scripted, budget=100, trials=12, concurrency=3,
                          sample_size=4, top=1, seed=1, poll=0.01, grader=grader)
    rejected = [t for t in result.study.trials if "rejected" in t.user_attrs]
    assert rejected and all(t.params.get("strategy.greedy.mt") == 400 for t in rejected)
    assert all(r.max_tokens <= 100 for r in scripted.requests)  # no 400-token call went out
    # The best config found is one of the right ones, re-evaluated on all six problems.
    assert result.finalists[0].full.problems == len(DATA.problems)
    assert result.finalists[0].full.accuracy == 1.0


async def test_measured_budget_hits_mark_the_trial_infeasible() -> None:
    # A prompt-plus-generated limit: the static bound counts generated tokens only, so the
    # long option passes the check and is clipped at run time.
    hit = parse_space({
        "name": "hit", "fixed": {"budget": {"tokens": 16}},
        "pipeline": {"type": "generate", "temperature": 0.0, "max_tokens": "$mt"},
        "params": {"mt": {"values": [2, 12]}},
    })
    result = await search(hit, DATA, backend(), budget=100, trials=4, sample_size=3, top=2,
                          seed=0, poll=0.01, math_verify=False)  # numbers only
    by_mt = {t.params["mt"]: t for t in result.study.trials}
    assert set(by_mt) == {2, 12}
    assert by_mt[12].user_attrs["constraint"][1] == 3  # every problem hit the budget
    assert by_mt[2].user_attrs["constraint"] == [2 - 100, 0]
    assert [f.params["mt"] for f in result.finalists] == [2]  # only the feasible one


async def test_written_best_config_loads_and_runs(scratch: Path, grader: Shared) -> None:
    result = await search(space(), DATA, backend(), budget=100, trials=8, concurrency=2,
                          sample_size=4, output_dir=scratch, poll=0.01, grader=grader)
    files = result.files
    assert {"best", "front", "trials", "plot", "study"} - set(files) == {"study"}
    best = load_pipeline(files["best"])
    assert best.budget.completion_tokens == 100
    assert best.worst_case().completion_tokens <= 100
    answer = await Planner(Runtime(backend=backend())).run(best, DATA.problems[0])
    assert answer.answer == "7"
    rows = files["trials"].read_text().splitlines()
    assert len(rows) == 1 + len(result.study.trials)  # twins dropped included
    assert len(finished(result.study)) == 8
    here = f"{socket.gethostname()}-{os.getpid()}"  # the default worker id
    assert {t.user_attrs["worker"] for t in result.study.trials} == {here}
    assert "worker" in rows[0] and all(here in row for row in rows[1:])
    assert "| trial |" in files["front"].read_text()
    assert files["plot"].stat().st_size > 0


async def test_two_objectives_give_a_pareto_front_without_pruning(grader: Shared) -> None:
    result = await search(space(), DATA, backend(), budget=100, trials=10, concurrency=2,
                          sample_size=4, top=5, objectives="accuracy,tokens", poll=0.01,
                          grader=grader)
    assert len(result.study.directions) == 2
    assert all(not t.intermediate_values for t in result.study.trials)
    front = [(f.sample_accuracy, f.sample_tokens) for f in result.finalists]
    for a, k in front:  # no front member is beaten on both counts by another
        assert not any(b >= a and m <= k and (b, m) != (a, k) for b, m in front)
    assert pareto_front([]) == []


async def test_single_objective_prunes_poor_trials_early(grader: Shared) -> None:
    result = await search(space(long=50), DATA, backend(), budget=100, trials=12,
                          concurrency=1, sample_size=6, chunk=2, top=0, seed=2, poll=0.01,
                          grader=grader)
    pruned = [t for t in result.study.trials if t.state == TrialState.PRUNED]
    assert pruned
    for trial in pruned:
        assert trial.user_attrs["pruned_at"] < 6
        assert trial.user_attrs["accuracy"] == 0.0


async def test_cancelled_search_resumes_with_no_trial_lost_or_duplicated(
    scratch: Path, grader: Shared
) -> None:
    url = f"sqlite:///{scratch / 'study.db'}"
    slow = backend(seconds_per_token=0.01)
    task = asyncio.create_task(search(space(), DATA, slow, budget=100, trials=8, concurrency=2,
                                      sample_size=4, storage=url, poll=0.01, grader=grader))
    study: optuna.Study | None = None
    while study is None or len(finished(study)) < 2:
        await asyncio.sleep(0.05)
        try:
            study = optuna.load_study(study_name="tiny-sevens-100", storage=url)
        except KeyError:
            study = None
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    cut = optuna.load_study(study_name="tiny-sevens-100", storage=url).trials
    interrupted = [t for t in cut if t.state == TrialState.FAIL]
    assert interrupted and not [t for t in cut if t.state == TrialState.RUNNING]
    done_before = {t.number: t.params for t in cut if t.state.is_finished() and t not in
                   interrupted}

    result = await search(space(), DATA, backend(), budget=100, trials=8, concurrency=2,
                          sample_size=4, storage=url, poll=0.01, grader=grader)
    trials = result.study.trials
    assert len(finished(result.study)) == 8
    assert len({t.number for t in trials}) == len(trials)
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    for number, params in done_before.items():  # finished ones are kept, not rerun
        assert trials[number].params == params
        assert not [t for t in trials if t.user_attrs.get("retry_of") == number]
    for lost in interrupted:  # each interrupted one is retried exactly once, same params
        retries = [t for t in trials if t.user_attrs.get("retry_of") == lost.number]
        assert len(retries) == 1 and retries[0].state.is_finished()
        assert retries[0].params == lost.params


async def test_a_dead_workers_trial_is_failed_and_retried(scratch: Path, grader: Shared) -> None:
    url = f"sqlite:///{scratch / 'study.db'}"
    await search(space(), DATA, backend(), budget=100, trials=2, sample_size=2, top=0,
                 storage=url, poll=0.01, grader=grader)
    dead = optuna.load_study(study_name="tiny-sevens-100", storage=url)
    dead.enqueue_trial({"strategy": "vote", "strategy.vote.n": 2})
    left = dead.ask()  # a worker that asked, then was killed before it told
    assert left.number == 2
    await asyncio.sleep(0.3)
    result = await search(space(), DATA, backend(), budget=100, trials=4, sample_size=2, top=0,
                          storage=url, stale_after=0.2, poll=0.01, grader=grader)
    trials = result.study.trials
    assert trials[2].state == TrialState.FAIL
    assert [t.user_attrs.get("retry_of") for t in trials].count(2) == 1
    assert len(finished(result.study)) == 4


async def test_two_workers_share_one_study(scratch: Path, grader: Shared) -> None:
    url = f"sqlite:///{scratch / 'study.db'}"
    seen: dict[str, list[int]] = {"a": [], "b": []}

    def worker(name: str, seed: int):  # type: ignore[no-untyped-def]
        return search(space(), DATA, backend(seconds_per_token=0.002), budget=100, trials=10,
                      concurrency=2, sample_size=4, top=1, seed=seed, storage=url, poll=0.01,
                      grader=grader, worker_id=name,
                      on_trial=lambda t: seen[name].append(t.number))

    a, b = await asyncio.gather(worker("a", 0), worker("b", 1))
    trials = optuna.load_study(study_name="tiny-sevens-100", storage=url).trials
    assert len(finished(a.study)) == 10
    assert seen["a"] and seen["b"] and not set(seen["a"]) & set(seen["b"])
    numbers = [t.number for t in trials if t.state != TrialState.FAIL]
    assert sorted(numbers) == sorted(set(numbers))
    assert a.finalists[0].number == b.finalists[0].number
    for name, numbers_seen in seen.items():  # each trial is tagged with the worker that ran it
        assert {t.number for t in trials if t.user_attrs.get("worker") == name} == set(
            numbers_seen)


# Real server: a tiny space, a handful of problems, small max_tokens.

REAL_SPACE = """
name: real
fixed: {answer: math}
pipeline: $strategy
params:
  strategy:
    options:
      greedy:
        template: {type: generate, temperature: 0.0, max_tokens: $mt}
        params: {mt: {values: [16, 24]}}
      vote:
        template:
          type: self_consistency
          inner: {type: generate, n: $n, temperature: 0.8, max_tokens: 16}
        params: {n: {int: [2, 3]}}
"""


def itc_search(tmp_path: Path, base_url: str) -> list[str]:
    (tmp_path / "space.yaml").write_text(REAL_SPACE)
    return [
        sys.executable, "-m", "itc.cli", "search", str(tmp_path / "space.yaml"),
        "--dataset", "synthetic", "--difficulty", "1", "--count", "4", "--sample", "3",
        "--budget", "64", "--trials", "4", "--concurrency", "1", "--top", "1",
        "--stale-after", "2", "--base-url", base_url, "--output-dir", str(tmp_path / "out"),
    ]


@pytest.mark.vllm
def test_real_two_workers_share_one_study(tmp_path: Path, vllm_server) -> None:  # type: ignore[no-untyped-def]
    url = f"sqlite:///{tmp_path / 'study.db'}"
    command = itc_search(tmp_path, vllm_server.base_url)
    command[command.index("--count") + 1] = "3"
    command[command.index("--stale-after") + 1] = "30"  # nobody is killed here
    out = command.index("--output-dir") + 1
    logs = [tmp_path / f"worker{seed}.log" for seed in (0, 1)]  # files: a full pipe would block
    workers = []
    try:
        for seed, log in enumerate(logs):
            with log.open("w") as handle:
                workers.append(subprocess.Popen(
                    [*command[:out], str(tmp_path / f"out{seed}"), *command[out + 1:],
                     "--seed", str(seed), "--storage", url, "--study-name", "shared"],
                    stdout=handle, stderr=subprocess.STDOUT,
                    env={**os.environ, "COLUMNS": "200"},
                ))
        for worker, log in zip(workers, logs, strict=True):
            assert worker.wait(timeout=90) == 0, log.read_text()
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    study = optuna.load_study(study_name="shared", storage=url)
    done = finished(study)
    assert len(done) == 4
    assert len({t.number for t in study.trials}) == len(study.trials)
    assert not [t for t in study.trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    ids = [f"{socket.gethostname()}-{worker.pid}" for worker in workers]
    ran = [t.user_attrs.get("worker") for t in done]
    assert set(ran) <= set(ids)
    assert all(ran.count(i) >= 1 for i in ids), ran  # both workers ran a trial
    for seed in (0, 1):
        assert load_pipeline(tmp_path / f"out{seed}" / "best.yaml").budget.completion_tokens == 64


@pytest.mark.vllm
def test_real_search_completes_and_resumes_after_a_kill(tmp_path: Path, vllm_server) -> None:  # type: ignore[no-untyped-def]
    command = itc_search(tmp_path, vllm_server.base_url)
    env = {**os.environ, "COLUMNS": "200"}
    # Its own process group, so the kill takes its grader's worker processes down with it.
    worker = subprocess.Popen(
        command, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True
    )
    assert worker.stderr is not None
    started = time.monotonic()
    for line in worker.stderr:
        if line.startswith("trial ") and ("complete" in line or "pruned" in line):
            break
        assert time.monotonic() - started < 60, "no trial finished"
    os.killpg(worker.pid, signal.SIGKILL)
    worker.wait()
    url = f"sqlite:///{tmp_path / 'out' / 'study.db'}"
    before = optuna.load_study(study_name="real-synthetic-d1-s0-64", storage=url).trials
    assert 1 <= len([t for t in before if t.state.is_finished()]) < 4

    rerun = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    study = optuna.load_study(study_name="real-synthetic-d1-s0-64", storage=url)
    assert len(finished(study)) == 4
    for t in before:  # what finished before the kill is kept, not rerun
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED):
            assert study.trials[t.number].params == t.params
    left = [t for t in before if t.state == TrialState.RUNNING]
    for t in left:  # the killed worker's trial was failed and retried once
        assert study.trials[t.number].state == TrialState.FAIL
        assert [s.user_attrs.get("retry_of") for s in study.trials].count(t.number) == 1
    out = tmp_path / "out"
    best = load_pipeline(out / "best.yaml")
    assert best.budget.completion_tokens == 64
    assert "| trial |" in (out / "front.md").read_text()
    assert (out / "front.png").exists() and (out / "trials.csv").exists()
    for t in study.get_trials(states=(TrialState.COMPLETE,)):
        assert t.user_attrs["tokens_per_problem"] <= 64


async def test_journal_storage_resumes_and_settings_are_checked(
    scratch: Path, grader: Shared
) -> None:
    url = f"journal:{scratch / 'study.log'}"
    first = await search(space(), DATA, backend(), budget=100, trials=2, sample_size=2, top=0,
                         storage=url, poll=0.01, grader=grader)
    kept = [t.params for t in first.study.trials]
    second = await search(space(), DATA, backend(), budget=100, trials=4, sample_size=2, top=0,
                          storage=url, poll=0.01, grader=grader)
    assert [t.params for t in second.study.trials[:2]] == kept
    assert len(finished(second.study)) == 4
    with pytest.raises(SearchError, match="sample"):
        await search(space(), DATA, backend(), budget=100, trials=4, sample_size=3,
                     study_name=second.study.study_name, storage=url, poll=0.01, grader=grader)


async def test_a_slow_worker_whose_trial_was_taken_over_goes_on(
    scratch: Path, grader: Shared
) -> None:
    url = f"sqlite:///{scratch / 'study.db'}"

    def worker(name: str, stale_after: float, seconds_per_token: float):  # type: ignore[no-untyped-def]
        return search(space(), DATA, backend(seconds_per_token=seconds_per_token), budget=100,
                      trials=6, sample_size=2, top=0, seed=len(name), storage=url, poll=0.01,
                      stale_after=stale_after, grader=grader, worker_id=name)

    # "fast" judges any trial without a heartbeat for 0.05 s stale; "slow" stamps its own
    # only every 10 s, so its trials are taken over while it still works on them.
    _, fast = await asyncio.gather(worker("slow", 60.0, 0.02), worker("fast", 0.05, 0.0))
    trials = optuna.load_study(study_name="tiny-sevens-100", storage=url).trials
    assert len(finished(fast.study)) >= 6
    taken_over = [  # dropped twins of running trials fail too, with no retry
        t for t in trials if t.state == TrialState.FAIL and "duplicate_of" not in t.user_attrs
    ]
    assert taken_over, "the slow worker's trial was failed by the fast one"
    retried = [t.user_attrs.get("retry_of") for t in trials]
    assert all(retried.count(t.number) == 1 for t in taken_over)


async def test_anytime_runs_over_worst_case_configs_under_the_hard_budget(
    scratch: Path, grader: Shared
) -> None:
    only_long = parse_space({
        "name": "long", "fixed": {"answer": "math"},
        "pipeline": {"type": "generate", "temperature": 0.0, "max_tokens": "$mt"},
        "params": {"mt": {"values": [300, 400]}},
    })
    scripted = backend()
    result = await search(only_long, DATA, scripted, budget=100, trials=3, sample_size=3,
                          top=0, output_dir=scratch, poll=0.01, grader=grader, anytime=True)
    assert scripted.requests  # rejected without --anytime (the test above): here they run
    assert all(r.max_tokens <= 100 for r in scripted.requests)  # clipped to the budget
    for trial in result.study.trials:
        assert "rejected" not in trial.user_attrs
        assert trial.user_attrs["constraint"][0] <= 0  # no overrun: feasible
    # With top=0 nothing is re-evaluated; the best on the sample is still written.
    assert result.finalists == [] and result.best is not None
    assert load_pipeline(scratch / "best.yaml").budget.completion_tokens == 100
    assert "not rerun" in (scratch / "front.md").read_text()  # the sample's best, listed
    with pytest.raises(SearchError, match="anytime"):  # the study remembers how it was run
        await search(only_long, DATA, backend(), budget=100, trials=4, sample_size=3, top=0,
                     output_dir=scratch, poll=0.01, grader=grader)


async def test_other_problems_under_the_same_dataset_name_are_another_study(
    scratch: Path, grader: Shared
) -> None:
    await search(space(), DATA, backend(), budget=100, trials=1, sample_size=2, top=0,
                 output_dir=scratch, poll=0.01, grader=grader)
    shifted = Dataset(DATA.name, DATA.problems[2:])  # what --offset 2 gives
    with pytest.raises(SearchError, match="problems"):
        await search(space(), shifted, backend(), budget=100, trials=2, sample_size=2, top=0,
                     output_dir=scratch, poll=0.01, grader=grader)


async def test_a_twin_of_a_running_trial_is_dropped_not_run(grader: Shared) -> None:
    one = parse_space({
        "name": "one", "fixed": {"answer": "math"},
        "pipeline": {"type": "generate", "temperature": 0.0, "max_tokens": "$mt"},
        "params": {"mt": {"values": [8]}},  # every trial is the same configuration
    })
    slow = backend(seconds_per_token=0.05)  # the first trial still runs when the next is asked
    result = await search(one, DATA, slow, budget=100, trials=2, concurrency=2, sample_size=2,
                          top=0, poll=0.01, grader=grader)
    twins = [t for t in result.study.trials if "duplicate_of" in t.user_attrs]
    assert twins and all(t.state == TrialState.FAIL for t in twins)
    assert len(twins) <= MAX_TWINS_IN_A_ROW  # then one runs anyway: the space has no other
    assert len(finished(result.study)) == 2
    # Dropped before any call: every request belongs to one of the two trials that ran.
    assert len(slow.requests) == 2 * 2
