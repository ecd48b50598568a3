"""Budget curves from one sample pool: each estimator checked against brute force."""

from __future__ import annotations

import itertools
import json
import random
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from itc.bench.pools import best_of_accuracy, parse_budgets, pool_curves, vote_accuracy
from itc.bench.report import write_report


def brute_vote(keys: list[str | None], correct: list[bool], k: int) -> float:
    """Every k-subset voted, ties split evenly among the tied answers."""
    right = {key: ok for key, ok in zip(keys, correct, strict=True)}
    total = 0.0
    draws = list(itertools.combinations(range(len(keys)), k))
    for draw in draws:
        votes = Counter(keys[i] for i in draw if keys[i] is not None)
        if not votes:
            continue
        top = max(votes.values())
        leaders = [key for key, count in votes.items() if count == top]
        total += sum(right[key] for key in leaders) / len(leaders)
    return total / len(draws)


def brute_best(scores: list[float], correct: list[bool], k: int) -> float:
    total = 0.0
    draws = list(itertools.combinations(range(len(scores)), k))
    for draw in draws:
        top = max(scores[i] for i in draw)
        winners = [i for i in draw if scores[i] == top]
        total += sum(correct[i] for i in winners) / len(winners)
    return total / len(draws)


def test_vote_of_the_whole_pool_is_the_plain_majority() -> None:
    keys = ["18", "18", "20", None, "18", "20"]
    correct = [True, True, False, False, True, False]
    assert vote_accuracy(keys, correct, 6) == 1.0
    assert vote_accuracy(["3", "4"], [False, True], 2) == 0.5  # a tie is a coin flip


def test_one_sample_vote_is_the_share_of_right_answers() -> None:
    keys = ["1", "2", "2", None, "2"]
    correct = [True, False, False, False, False]
    assert vote_accuracy(keys, correct, 1) == pytest.approx(1 / 5)


@pytest.mark.parametrize("seed", range(6))
def test_vote_matches_brute_force(seed: int) -> None:
    rng = random.Random(seed)
    n = rng.randint(3, 9)
    keys = [rng.choice(["a", "b", "c", None]) for _ in range(n)]
    correct = [key == "a" for key in keys]
    for k in range(1, n + 1):
        assert vote_accuracy(keys, correct, k) == pytest.approx(brute_vote(keys, correct, k))


def test_weighted_vote_lets_confident_minority_win() -> None:
    keys = ["7", "9", "9"]
    correct = [True, False, False]
    assert vote_accuracy(keys, correct, 3) == 0.0
    assert vote_accuracy(keys, correct, 3, weights=[0.9, 0.2, 0.3]) == 1.0


def test_large_pools_are_sampled_reproducibly() -> None:
    rng = random.Random(1)
    keys = [rng.choice(["a", "b"]) for _ in range(40)]
    correct = [key == "a" for key in keys]
    first = vote_accuracy(keys, correct, 20)  # C(40, 20) is far past exact enumeration
    assert first == vote_accuracy(keys, correct, 20)
    share = keys.count("a") / 40
    assert (first > 0.5) == (share > 0.5)


@pytest.mark.parametrize("seed", range(6))
def test_best_of_matches_brute_force_including_tied_scores(seed: int) -> None:
    rng = random.Random(seed)
    n = rng.randint(2, 10)
    scores = [rng.choice([0.1, 0.5, 0.5, 0.9, rng.random()]) for _ in range(n)]
    correct = [rng.random() < 0.4 for _ in range(n)]
    for k in range(1, n + 1):
        expected = brute_best(scores, correct, k)
        assert best_of_accuracy(scores, correct, k) == pytest.approx(expected)


def test_budget_outside_the_pool_is_refused() -> None:
    with pytest.raises(ValueError, match="k=5"):
        vote_accuracy(["1"] * 4, [True] * 4, 5)
    with pytest.raises(ValueError, match="correctness"):
        best_of_accuracy([0.1, 0.2], [True], 1)


def pool_row(problem: str, samples: list[tuple[str, bool, float]]) -> dict[str, Any]:
    """A bench row of a 4-sample pool ranked by a judge whose calls cost 30 tokens each."""
    trace = [{"node": "sample/inner", "prompt_tokens": 100, "completion_tokens": 200}]
    judged = {"node": "judge/scorer:llm_judge", "prompt_tokens": 29, "completion_tokens": 1}
    trace += [judged for _ in samples]
    return {
        "dataset": "d",
        "config": "pool",
        "problem_id": problem,
        "error": None,
        "trace": trace,
        "candidates": [
            {"key": key, "correct": ok, "completion_tokens": 50, "scores": {"llm_judge": s}}
            for key, ok, s in samples
        ],
    }


def test_pool_curves_price_each_budget() -> None:
    rows = [
        pool_row("p1", [("5", True, 0.9), ("5", True, 0.2), ("6", False, 0.3), ("7", False, 0.1)]),
        pool_row("p2", [("1", False, 0.8), ("2", True, 0.4), ("1", False, 0.7), ("3", False, 0.2)]),
    ]
    points = {(p.method, p.budget): p for p in pool_curves(rows, [1, 2, 4, 8], ["llm_judge"])}
    assert ("self-consistency", 8) not in points  # larger than the pool
    assert points[("self-consistency", 4)].accuracy == pytest.approx(0.5)
    assert points[("best-of-n (llm_judge)", 4)].accuracy == pytest.approx(0.5)
    assert points[("pass@k", 4)].accuracy == 1.0
    assert points[("self-consistency", 1)].accuracy == pytest.approx((2 / 4 + 1 / 4) / 2)
    # Prompt once plus k samples of 50 tokens; the judge adds 30 tokens per judged sample.
    assert points[("self-consistency", 2)].tokens_per_problem == 100 + 2 * 50
    assert points[("best-of-n (llm_judge)", 2)].tokens_per_problem == 100 + 2 * 50 + 2 * 30
    assert points[("self-consistency", 4)].completion_tokens_per_problem == 200


def test_report_prices_a_pool_beside_its_baseline(tmp_path: Path) -> None:
    pool = [
        pool_row("p1", [("5", True, 0.9), ("5", True, 0.2), ("6", False, 0.3), ("7", False, 0.1)]),
        pool_row("p2", [("1", False, 0.8), ("2", True, 0.4), ("1", False, 0.7), ("3", False, 0.2)]),
    ]
    greedy = [
        {**pool_row(p, [("0", ok, 0.0)]), "config": "greedy", "correct": ok}
        for p, ok in [("p1", True), ("p2", False), ("p3", True)]  # p3: not in the pool
    ]
    for rows in (pool, greedy):
        for r in rows:
            r.update(
                key=f"{r['config']}|{r['problem_id']}",
                fingerprint=r["config"] * 4,
                correct=r.get("correct", False),
                usage={"prompt_tokens": 100, "completion_tokens": 50, "calls": 1},
            )
    results = tmp_path / "results.jsonl"
    results.write_text("".join(json.dumps(r) + "\n" for r in pool + greedy))
    text = write_report([results], tmp_path / "out", pools=["pool"], budgets=[1, 4]).read_text()
    section = text.split("### Accuracy by budget", 1)[1]
    assert "| self-consistency | 37.5% (150 tok) | 50.0% (300 tok) |" in section
    assert "| best-of-n (llm_judge) | " in section
    assert "| `greedy` (run) | 50.0%" in section  # on the pool's problems, without p3
    assert "| `greedy` | `greedygr` | 66.7%" in text  # the results table has all three
    assert (tmp_path / "out" / "accuracy_by_budget-d.png").read_bytes().startswith(b"\x89PNG")


def test_budgets_option_parsing() -> None:
    assert parse_budgets("1..16") == [1, 2, 4, 8, 16]
    assert parse_budgets("3,1") == [1, 3]
    with pytest.raises(ValueError, match="'x'"):
        parse_budgets("1,x")


def test_rows_without_vote_keys_group_numbers_by_value() -> None:
    row = pool_row("p", [("366", True, 0.5), ("366", True, 0.5), ("210", False, 0.5)])
    for sample, answer in zip(row["candidates"], ["366.0", "366", "210"], strict=True):
        del sample["key"]
        sample["answer"] = answer
    points = {(p.method, p.budget): p for p in pool_curves([row], [3])}
    assert points[("self-consistency", 3)].accuracy == 1.0  # 366.0 and 366 vote together
