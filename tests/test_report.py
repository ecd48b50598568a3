"""Reports from result rows: estimators checked by brute force, the report by its numbers."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any

import pytest

from itc.bench.plots import plot_coverage
from itc.bench.report import write_report
from itc.bench.results import (
    SOURCE_FIELD,
    accuracy_vs_tokens,
    coverage_curve,
    load_results,
    pass_at_k,
    wilson_interval,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def brute_pass_at_k(n: int, c: int, k: int) -> float:
    """Share of all k-subsets of n samples (the first c correct) holding a correct one."""
    draws = list(itertools.combinations(range(n), k))
    return sum(any(i < c for i in draw) for draw in draws) / len(draws)


def test_pass_at_k_matches_enumeration() -> None:
    for n in range(1, 9):
        for c in range(n + 1):
            for k in range(1, n + 1):
                assert pass_at_k(n, c, k) == pytest.approx(brute_pass_at_k(n, c, k), abs=1e-12)


def test_pass_at_k_edges_and_large_n() -> None:
    assert pass_at_k(5, 0, 3) == 0.0
    assert pass_at_k(5, 3, 3) == 1.0  # n - c < k: every draw holds a correct sample
    assert pass_at_k(4, 4, 1) == 1.0
    assert pass_at_k(10, 1, 1) == pytest.approx(0.1)
    # Exact big-integer binomials as the reference, far past where floats of them overflow.
    for n, c, k in [(2000, 3, 500), (2000, 1500, 300), (10**6, 10, 1000)]:
        exact = 1 - math.comb(n - c, k) / math.comb(n, k)
        assert pass_at_k(n, c, k) == pytest.approx(exact, rel=1e-9)
    for n, c, k in [(3, 1, 4), (3, 1, 0), (3, 4, 1), (-1, 0, 1), (3, -1, 1)]:
        with pytest.raises(ValueError):
            pass_at_k(n, c, k)


def candidates(*correct: bool | None) -> list[dict[str, Any]]:
    return [{"answer": "x", "correct": ok, "scores": {}, "completion_tokens": 10} for ok in correct]


def test_coverage_curve_on_synthetic_rows() -> None:
    rows = [
        {"gold": "1", "candidates": candidates(True, True, False, False)},
        {"gold": "1", "candidates": candidates(True, False, False, False)},
        {"gold": "1", "candidates": []},  # an error: unsolved, not ignored
        {"gold": None, "candidates": candidates(None, None)},  # ungradable: skipped
    ]
    curve = coverage_curve(rows, [1, 2, 4, 8])
    assert set(curve) == {1, 2, 4}  # nobody had 8 samples
    assert curve[1] == pytest.approx((0.5 + 0.25 + 0) / 3)
    assert curve[2] == pytest.approx((5 / 6 + 0.5 + 0) / 3)
    assert curve[4] == pytest.approx(2 / 3)
    # Fewer samples than k: the problem counts as solved iff any sample was right.
    short = [{"gold": "1", "candidates": candidates(False, True)}, {"gold": "1", "candidates": []}]
    assert coverage_curve(short, [1, 2]) == {1: 0.25, 2: 0.5}
    assert coverage_curve([{"gold": "1", "candidates": candidates(True)}] * 2, [1, 4]) == {1: 1.0}
    assert coverage_curve([], [1]) == {}
    with pytest.raises(ValueError):
        coverage_curve(rows, [0])


def test_wilson_interval() -> None:
    low, high = wilson_interval(8, 10)
    assert (round(low, 4), round(high, 4)) == (0.4902, 0.9433)
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0
    assert wilson_interval(0, 0) == (0.0, 1.0)


def row(
    config: str,
    fingerprint: str,
    problem: int,
    correct: bool,
    cands: list[dict[str, Any]],
    *,
    prompt: int,
    completion: int,
    error: str | None = None,
    budget: str | None = None,
) -> dict[str, Any]:
    return {
        "key": f"{fingerprint}|toy|p{problem}|0",
        "config": config,
        "fingerprint": fingerprint,
        "dataset": "toy",
        "problem_id": f"p{problem}",
        "seed": 0,
        "gold": str(problem),
        "answer": str(problem) if correct else "wrong",
        "correct": correct,
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "calls": 1,
            "wall_time": 0.5,
        },
        "budget_exhausted": budget,
        "error": error,
        "text": "...",
        "candidates": cands,
        "nodes": {},
        "trace": [],
    }


SAMPLED = [
    (True, True, False, False),
    (True, False, False, False),
    (True, True, True, True),
    (False, False, False, False),
]


def write_results(directory: Path) -> Path:
    directory.mkdir()
    greedy = [
        row("greedy", "g1" * 8, i, i <= 2, candidates(i <= 2), prompt=100, completion=50)
        for i in range(1, 5)
    ]
    sampled = [
        row(
            "sc[n=4]",
            "s4" * 8,
            i,
            i <= 3,
            candidates(*SAMPLED[i - 1]),
            prompt=100,
            completion=400,
            error="timeout" if i == 4 else None,
            budget="tokens" if i == 4 else None,
        )
        for i in range(1, 5)
    ]
    for name, rows in [("greedy.jsonl", greedy), ("sc.jsonl", sampled)]:
        with (directory / name).open("w") as handle:
            for item in rows:
                handle.write(json.dumps(item) + "\n")
    with (directory / "greedy.jsonl").open("a") as handle:  # a crash mid-write
        handle.write('{"key": "torn|toy|p9|0", "config": "greedy", "corr')
    return directory


def test_load_results_skips_torn_line_and_duplicates(tmp_path: Path) -> None:
    results = write_results(tmp_path / "results")
    rows = load_results([results, results / "greedy.jsonl"])
    assert len(rows) == 8
    assert rows[0][SOURCE_FIELD] == str(results / "greedy.jsonl")
    assert "torn|toy|p9|0" not in {r["key"] for r in rows}


def test_accuracy_vs_tokens_points(tmp_path: Path) -> None:
    points = accuracy_vs_tokens(load_results(write_results(tmp_path / "results")))
    assert [p.config for p in points] == ["greedy", "sc[n=4]"]
    greedy, sampled = points
    assert (greedy.accuracy, greedy.tokens_per_problem, greedy.completion_tokens_per_problem) == (
        0.5,
        150.0,
        50.0,
    )
    assert (sampled.accuracy, sampled.tokens_per_problem, sampled.calls_per_problem) == (
        0.75,
        500.0,
        1.0,
    )
    assert (sampled.errors, sampled.budget_exhausted, sampled.max_graded_candidates) == (1, 1, 4)
    assert (sampled.family, sampled.label) == ("sc", "n=4")
    assert (sampled.accuracy_low, sampled.accuracy_high) == wilson_interval(3, 4)


def test_write_report(tmp_path: Path) -> None:
    results = write_results(tmp_path / "results")
    report = write_report([results], tmp_path / "report")
    assert report == tmp_path / "report" / "report.md"
    text = report.read_text()
    low, high = wilson_interval(3, 4)
    assert f"75.0% [{low:.1%}, {high:.1%}] (3/4)" in text
    assert (
        "| `greedy` | `g1g1g1g1` | 50.0% [" in text
        and "(2/4) | 150 | 50 | 1.0 | 0.50 | 0 | 0 |" in text
    )
    assert "(3/4) | 500 | 400 | 1.0 | 0.50 | 1 | 1 |" in text
    # Coverage: only the config that sampled several candidates, pass@1/2/4 as by hand.
    assert "| config | pass@1 | pass@2 | pass@4 |" in text
    assert "| `sc[n=4]` | 43.8% | 58.3% | 75.0% |" in text
    assert "| `greedy` | 100" not in text
    # Failures point at the file (relative to the report) and the key, without links.
    assert (
        "- problem `p3` (seed 0): gold `3`, answer `wrong`;"
        " trace in `../results/greedy.jsonl` at key `g1g1g1g1g1g1g1g1|toy|p3|0`"
    ) in text
    assert "error `timeout`, budget exhausted `tokens`" in text
    assert "](http" not in text and "](../" not in text
    for image in ("accuracy_vs_tokens-toy.png", "coverage-toy.png"):
        assert f"]({image})" in text
        assert (report.parent / image).read_bytes()[:8] == PNG_MAGIC
    # Same results, same report.
    assert write_report([results], tmp_path / "report").read_text() == text


def test_report_without_sampling_has_no_coverage(tmp_path: Path) -> None:
    results = tmp_path / "one.jsonl"
    results.write_text(
        json.dumps(row("greedy", "f" * 16, 1, True, candidates(True), prompt=5, completion=5))
        + "\n"
    )
    text = write_report(results, tmp_path / "out").read_text()
    assert "pass@" not in text and "No failures." in text
    with pytest.raises(ValueError, match="no result rows"):
        write_report(tmp_path / "out", tmp_path / "empty")


def test_plot_coverage_writes_png(tmp_path: Path) -> None:
    path = plot_coverage({"a": {1: 0.2, 2: 0.3, 4: 0.5}, "b": {}}, tmp_path / "c.png")
    assert path.read_bytes()[:8] == PNG_MAGIC
