"""Bad command lines and files get one clear error, before any server is started."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from itc.bench.runner import ResultsFile, Summary, merge_summaries, summarize
from itc.config import PipelineConfig
from itc.strategies.generate import Generate

ROOT = Path(__file__).resolve().parents[1]
GREEDY = str(ROOT / "examples" / "greedy.yaml")
SC = str(ROOT / "examples" / "self_consistency.yaml")


def itc(*args: str) -> subprocess.CompletedProcess[str]:
    # An unreachable --base-url proves no server is needed to reject these.
    return subprocess.run(
        [sys.executable, "-m", "itc.cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )


def assert_clear_error(done: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and "Traceback" not in done.stdout
    text = " ".join((done.stderr + done.stdout).split())
    for fragment in fragments:
        assert fragment in text, text


@pytest.mark.parametrize(
    ("sweep", "fragment"),
    [
        ("main.inner.n=", "expected PATH=V1,V2"),
        ("main.inner.n", "expected PATH=V1,V2"),
        ("main.inner.n=8..1", "is empty (HI is below LO)"),
        ("main.inner.n=1..1000000:lin", "more than 10000 values"),
    ],
)
def test_bad_sweeps(sweep: str, fragment: str) -> None:
    done = itc("bench", SC, "--dataset", "synthetic", "--count", "2", "--sweep", sweep)
    assert_clear_error(done, "--sweep", fragment)


@pytest.mark.parametrize("value", ["0", "-1"])
def test_concurrency_and_limit_must_be_positive(value: str) -> None:
    base = ("bench", GREEDY, "--dataset", "synthetic", "--count", "2")
    assert_clear_error(itc(*base, "--concurrency", value), "--concurrency")
    assert_clear_error(itc(*base, "--limit", value), "--limit")


def test_an_empty_dataset_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    done = itc("bench", GREEDY, "--dataset", str(empty), "--output-dir", str(tmp_path / "o"))
    assert_clear_error(done, "has no problems")


def test_an_output_dir_that_is_a_file(tmp_path: Path) -> None:
    taken = tmp_path / "taken"
    taken.write_text("x")
    done = itc(
        "bench", GREEDY, "--dataset", "synthetic", "--count", "2", "--output-dir", str(taken)
    )
    assert_clear_error(done, f"--output-dir {taken}: cannot use it as a folder")


@pytest.mark.parametrize("tokens", ["0", "-5"])
def test_run_rejects_a_non_positive_budget(tokens: str) -> None:
    done = itc("run", GREEDY, "--problem", "?", "--budget-tokens", tokens)
    assert_clear_error(done, f"--budget-tokens {tokens}: budget limits must be positive numbers")
    bench = ("bench", GREEDY, "--dataset", "synthetic", "--count", "2")
    assert_clear_error(itc(*bench, "--budget-calls", tokens), f"--budget-calls {tokens}: budget")


def test_run_rejects_a_trace_path_that_is_a_folder(tmp_path: Path) -> None:
    done = itc("run", GREEDY, "--problem", "?", "--trace-json", str(tmp_path))
    assert_clear_error(done, "is a folder")


def test_configs_that_are_not_text_or_nest_too_deep(tmp_path: Path) -> None:
    binary = tmp_path / "latin1.yaml"
    binary.write_bytes("type: generate\nsystem: caf\xe9\n".encode("latin-1"))
    assert_clear_error(itc("run", str(binary), "--problem", "?"), "not UTF-8 text")
    deep = tmp_path / "deep.json"
    deep.write_text('{"type": "best_of_n", "inner": ' * 3000 + "null" + "}" * 3000)
    assert_clear_error(itc("run", str(deep), "--problem", "?"), "nested too deeply")


def test_a_torn_last_line_does_not_swallow_the_next_row(tmp_path: Path) -> None:
    results = ResultsFile(tmp_path / "r.jsonl")
    results.append({"key": "a"})
    with results.path.open("a") as handle:
        handle.write('{"key": "b", "torn')  # a crash mid-write
    results.append({"key": "c"})
    assert [row["key"] for row in results.rows()] == ["a", "c"]


def row(correct: bool, error: str | None = None) -> dict[str, object]:
    usage = {"prompt_tokens": 1, "completion_tokens": 1, "calls": 1, "wall_time": 0.1}
    return {"correct": correct, "error": error, "usage": usage, "budget_exhausted": None}


def test_errors_are_counted_apart_from_wrong_answers(tmp_path: Path) -> None:
    pipeline = PipelineConfig.single(Generate(), name="g")
    summary = summarize(pipeline, "d", [row(True), row(False), row(False, "BackendError")], 1.0)
    assert (summary.correct, summary.errors, summary.accuracy) == (1, 1, 0.5)


def test_rerunning_one_config_keeps_the_others_in_the_summary(tmp_path: Path) -> None:
    def summary(config: str, correct: int) -> Summary:
        return Summary(
            config=config, fingerprint=config, dataset="d", problems=2, correct=correct,
            accuracy=correct / 2, tokens_per_problem=1, completion_tokens_per_problem=1,
            calls_per_problem=1, wall_time=1, wall_time_per_problem=1, errors=0,
            budget_exhausted=0,
        )

    path = tmp_path / "summary.json"
    merge_summaries(path, [summary("a", 1), summary("b", 1)])
    merge_summaries(path, [summary("b", 2)])
    entries = json.loads(path.read_text())
    assert [(e["config"], e["correct"]) for e in entries] == [("a", 1), ("b", 2)]
