"""Accuracy at every budget up to N, from one pool of N samples per problem.

A k-sample vote (or best-of-k) over independent samples has the same expected accuracy
whether its k samples were drawn on their own or are a random k-subset of N independent
samples. So one pool of N answers per problem prices every budget k <= N exactly, averaged
over all its k-subsets: a lower-variance estimate than one run per budget, at the cost of
one run instead of 1 + 2 + ... + N samples per problem. At k = N it is what the strategy
itself returns on that pool (up to how ties are broken).

Ties are broken uniformly at random in expectation: a subset whose vote (or top score) is
shared by several answers contributes the share of those answers that are correct.
"""

from __future__ import annotations

import itertools
import math
import random
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from itc.bench.plots import new_figure
from itc.bench.results import Point, Row, family, pass_at_k, table_section
from itc.bench.values import parse_sweep_option
from itc.verifiers.math import normalize_number

EXACT_SUBSETS = 20_000
"""Above this many k-subsets a vote is estimated from this many random ones (seeded)."""


def vote_accuracy(
    keys: Sequence[str | None],
    correct: Sequence[bool],
    k: int,
    weights: Sequence[float] | None = None,
    *,
    seed: int = 0,
) -> float:
    """Expected correctness of a (weighted) majority vote over a random k-subset.

    `keys` are the samples' answers made comparable (None: no answer, which votes for
    nothing); `correct` says whether each sample's answer is right.
    """
    n = len(keys)
    _check(n, k, correct)
    weights = [1.0] * n if weights is None else list(weights)
    right = {key: ok for key, ok in zip(keys, correct, strict=True) if key is not None}
    total = math.comb(n, k)
    if total <= EXACT_SUBSETS:
        subsets: Iterable[tuple[int, ...]] = itertools.combinations(range(n), k)
        count = total
    else:
        rng = random.Random(seed)
        subsets = (tuple(rng.sample(range(n), k)) for _ in range(EXACT_SUBSETS))
        count = EXACT_SUBSETS
    won = 0.0
    for subset in subsets:
        tally: dict[str, float] = defaultdict(float)
        for i in subset:
            if keys[i] is not None:
                tally[keys[i]] += weights[i]
        if not tally:
            continue
        best = max(tally.values())
        leaders = [key for key, weight in tally.items() if weight == best]
        won += sum(right[key] for key in leaders) / len(leaders)
    return won / count


def best_of_accuracy(scores: Sequence[float], correct: Sequence[bool], k: int) -> float:
    """Expected correctness of the top-scored sample of a random k-subset, in closed form.

    The top of a subset lies in the group of samples sharing score s with probability
    (C(#scores <= s, k) - C(#scores < s, k)) / C(n, k); within the group each is equally
    likely, so the group contributes its share of correct samples.
    """
    n = len(scores)
    _check(n, k, correct)
    groups: dict[float, list[bool]] = defaultdict(list)
    for score, ok in zip(scores, correct, strict=True):
        groups[score].append(ok)
    below = 0
    expected = 0.0
    for score in sorted(groups):
        members = groups[score]
        at_or_below = below + len(members)
        top_here = math.comb(at_or_below, k) - math.comb(below, k)
        expected += top_here * sum(members) / len(members)
        below = at_or_below
    return expected / math.comb(n, k)


def parse_budgets(text: str) -> list[int]:
    """`1..16` (doubling), `1..5:lin` or `1,3,5` into budgets; ValueError names the bad part."""
    _, values = parse_sweep_option(f"budgets={text}")
    bad = [v for v in values if not isinstance(v, int) or isinstance(v, bool) or v < 1]
    if bad:
        raise ValueError(f"budgets {text!r}: {bad[0]!r} is not a whole number of samples >= 1")
    return sorted(values)


def _check(n: int, k: int, correct: Sequence[bool]) -> None:
    if len(correct) != n:
        raise ValueError(f"{n} samples but {len(correct)} correctness flags")
    if not 1 <= k <= n:
        raise ValueError(f"a budget of k={k} samples needs 1 <= k <= {n} (the pool size)")


class BudgetPoint(BaseModel):
    """One method at one budget on one dataset, estimated from a pool."""

    model_config = ConfigDict(frozen=True)

    dataset: str
    pool: str
    method: str
    budget: int
    problems: int
    accuracy: float
    tokens_per_problem: float
    completion_tokens_per_problem: float


def pool_curves(
    rows: Iterable[Row], budgets: Sequence[int], scorers: Sequence[str] = ()
) -> list[BudgetPoint]:
    """Self-consistency, best-of-k by each scorer in `scorers`, and pass@k at each budget.

    `rows` are benchmark rows of pool configs: every candidate of a row is one sample, with
    its comparable answer `key`, `correct`, `completion_tokens` and `scores`. Tokens at
    budget k are the sampling prompt plus k samples' mean completion, plus, for a scorer,
    k times its mean cost per candidate (read from the trace's calls under its `scorer:NAME` node).
    """
    by_pool: dict[tuple[str, str], list[Row]] = defaultdict(list)
    for row in rows:
        if row.get("error") is None and row.get("candidates"):
            by_pool[(row["dataset"], row["config"])].append(row)
    points = []
    for (dataset, pool), group in sorted(by_pool.items()):
        size = min(len(r["candidates"]) for r in group)
        methods = ["self-consistency", "pass@k", *(f"best-of-n ({s})" for s in scorers)]
        for method in methods:
            for k in (b for b in budgets if b <= size):
                points.append(_point(dataset, pool, method, k, group, scorers))
    return points


def _point(
    dataset: str, pool: str, method: str, k: int, group: list[Row], scorers: Sequence[str]
) -> BudgetPoint:
    accuracy = 0.0
    tokens = 0.0
    completion = 0.0
    for row in group:
        samples = row["candidates"]
        correct = [bool(s.get("correct")) for s in samples]
        mean_completion = sum(s.get("completion_tokens") or 0 for s in samples) / len(samples)
        sample_completion = k * mean_completion
        row_tokens = _sampling_prompt_tokens(row) + sample_completion
        if method == "self-consistency":
            keys = [s["key"] if "key" in s else _legacy_key(s.get("answer")) for s in samples]
            accuracy += vote_accuracy(keys, correct, k)
        elif method == "pass@k":
            accuracy += pass_at_k(len(correct), sum(correct), k)
        else:
            scorer = next(s for s in scorers if method == f"best-of-n ({s})")
            scores = [float(s["scores"][scorer]) for s in samples]
            accuracy += best_of_accuracy(scores, correct, k)
            row_tokens += k * _scorer_usage(row, scorer) / len(samples)
        tokens += row_tokens
        completion += sample_completion
    count = len(group)
    return BudgetPoint(
        dataset=dataset,
        pool=family(pool),
        method=method,
        budget=k,
        problems=count,
        accuracy=accuracy / count,
        tokens_per_problem=tokens / count,
        completion_tokens_per_problem=completion / count,
    )


def _legacy_key(answer: str | None) -> str | None:
    """For rows written before vote keys were recorded: numbers normalised, else the text."""
    if answer is None:
        return None
    return normalize_number(answer) or answer.strip()


def _calls(row: Mapping[str, Any], scorer: str | None) -> Iterable[Mapping[str, Any]]:
    """The row's traced calls made by the scorer named `scorer` (a node path segment
    `scorer:NAME`), or with None the calls of no scorer at all: the sampling."""
    for event in row.get("trace") or ():
        segments = str(event.get("node", "")).split("/")
        if scorer is None:
            if not any(s.startswith("scorer:") for s in segments):
                yield event
        elif f"scorer:{scorer}" in segments:
            yield event


def _sampling_prompt_tokens(row: Mapping[str, Any]) -> float:
    return sum(float(e.get("prompt_tokens") or 0) for e in _calls(row, None))


def _scorer_usage(row: Mapping[str, Any], scorer: str) -> float:
    return sum(
        float(e.get("prompt_tokens") or 0) + float(e.get("completion_tokens") or 0)
        for e in _calls(row, scorer)
    )


# --------------------------------------------------------------------------- report section


def pool_scorers(rows: Iterable[Row]) -> list[str]:
    """Score names every sample of every row carries: the rankers a pool can replay."""
    names: set[str] | None = None
    for row in rows:
        for sample in row.get("candidates") or ():
            present = set(sample.get("scores") or {})
            names = present if names is None else names & present
    return sorted(names or ())


def budget_section(
    rows: Sequence[Row],
    baselines: Sequence[Point],
    budgets: Sequence[int],
    out: Path,
    slug: str,
    can_plot: bool,
) -> list[str]:
    """Markdown (and a PNG) of every method at every budget, beside the baseline configs."""
    points = pool_curves(rows, budgets, pool_scorers(rows))
    if not points:
        return []
    ks = sorted({p.budget for p in points})
    at = {(p.method, p.budget): p for p in points}
    pools = ", ".join(sorted({f"`{p.pool}`" for p in points}))
    lines = table_section(
        f"Accuracy by budget, from the sample pool {pools}",
        f"Each budget k is priced from the pool's samples ({points[0].problems} problems): the"
        " expected accuracy of the method over every k-subset of a problem's samples (ties"
        " split evenly), and the tokens of k samples (plus k scorer calls for best-of-n)."
        " pass@k is the oracle: any of k samples right. Configs run as themselves are"
        " scored on the same problems.",
        ["method", *(f"k={k}" for k in ks)],
    )
    for method in dict.fromkeys(p.method for p in points):
        cells = [
            f"{at[(method, k)].accuracy:.1%} ({at[(method, k)].tokens_per_problem:.0f} tok)"
            if (method, k) in at
            else "–"
            for k in ks
        ]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    for base in baselines:
        lines.append(
            f"| `{base.config}` (run) | {base.accuracy:.1%} ({base.tokens_per_problem:.0f} tok)"
            + " |" * len(ks)
        )
    if can_plot:
        name = f"accuracy_by_budget-{slug}.png"
        plot_budget_curves(points, baselines, out / name)
        lines += ["", f"![Accuracy by budget]({name})"]
    return lines


def plot_budget_curves(
    points: Sequence[BudgetPoint], baselines: Sequence[Point], path: Path
) -> Path:
    """Two panels: accuracy against the budget k, and against tokens per problem."""
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    figure = new_figure()
    by_k, by_tokens = figure.subplots(1, 2, sharey=True)
    for method in dict.fromkeys(p.method for p in points):
        line = sorted((p for p in points if p.method == method), key=lambda p: p.budget)
        style = "--" if method == "pass@k" else "-"
        accuracy = [p.accuracy for p in line]
        by_k.plot([p.budget for p in line], accuracy, style, marker="o", label=method)
        by_tokens.plot([p.tokens_per_problem for p in line], accuracy, style, marker="o")
    for base in baselines:
        by_k.axhline(base.accuracy, color="grey", linestyle=":", label=base.config)
        by_tokens.plot([base.tokens_per_problem], [base.accuracy], "k*", markersize=10)
    ticks = sorted({p.budget for p in points})
    by_k.set_xscale("log", base=2)
    by_k.set_xticks(ticks, labels=[str(k) for k in ticks])
    by_k.set_xlabel("budget k (samples per problem)")
    by_k.set_ylabel("accuracy")
    by_k.set_ylim(-0.02, 1.02)
    by_tokens.set_xscale("log")
    by_tokens.xaxis.set_major_formatter(ScalarFormatter())
    by_tokens.xaxis.set_minor_formatter(NullFormatter())
    by_tokens.set_xlabel("tokens per problem")
    for axes in (by_k, by_tokens):
        axes.grid(True, which="both", alpha=0.3)
    by_k.legend(fontsize=7)
    figure.savefig(path, dpi=120)
    return path
