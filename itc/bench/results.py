"""Benchmark results read back: the rows `itc.bench.runner` writes, and what they measure.

Everything here works from those JSONL rows (one per problem run), so results can be
summarised at any time, from crashed, resumed or copied runs, without a server or the original
configs: pass@k and coverage, Wilson intervals, one `Point` of accuracy and cost per config.
It imports nothing from itc, so both the report and the pool estimators can build on it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

Row = dict[str, Any]
GroupKey = tuple[str, str, str]  # (dataset, config, fingerprint)

Z_95 = 1.959963984540054
SOURCE_FIELD = "_source"
"""Added by `load_results` to every row: the file it came from, to point at its trace."""


# --------------------------------------------------------------------------- estimators


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from `c` correct among `n` samples: 1 - C(n-c, k) / C(n, k).

    The ratio is taken as a product of factors in [0, 1] (whichever form is shorter), so it
    neither overflows nor loses precision the way huge binomials in floats would.
    """
    if k < 1:
        raise ValueError(f"pass@k needs k >= 1, got k={k}")
    if n < 0 or not 0 <= c <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n, got n={n}, c={c}")
    if k > n:
        raise ValueError(f"pass@k needs k <= n: cannot draw k={k} of n={n} samples")
    if n - c < k:
        return 1.0  # every draw of k samples contains a correct one
    if c < k:
        miss = math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))
    else:
        miss = math.prod((n - c - i) / (n - i) for i in range(k))
    return 1.0 - miss


def graded_counts(row: Mapping[str, Any]) -> tuple[int, int] | None:
    """(graded candidates, correct ones) of a row, or None when the problem had no gold.

    A problem with a gold answer but no candidates (an error, an exhausted budget) is
    (0, 0): it counts as unsolved rather than vanishing from the average.
    """
    graded = [c for c in row.get("candidates") or () if c.get("correct") is not None]
    if not graded and row.get("gold") is None:
        return None
    return len(graded), sum(c["correct"] is True for c in graded)


def coverage_curve(rows: Iterable[Mapping[str, Any]], ks: Iterable[int]) -> dict[int, float]:
    """Mean pass@k over problems ("coverage", as in Large Language Monkeys), for each k.

    A problem with fewer than k graded candidates contributes pass@n (1 if any candidate is
    correct, else 0): with a budget cut some problems get fewer samples, and that is part of
    what the config achieved. A k beyond every problem's n measures nothing and is omitted.
    Problems without a gold answer are skipped. The candidates are those of the output node,
    so for a vote they are its distinct answers rather than its samples.
    """
    counts = [found for row in rows if (found := graded_counts(row)) is not None]
    wanted = sorted(set(ks))
    if any(k < 1 for k in wanted):
        raise ValueError(f"coverage needs every k >= 1, got {wanted}")
    if not counts:
        return {}
    largest = max(n for n, _ in counts)
    return {
        k: sum(pass_at_k(n, c, min(k, n)) if n else 0.0 for n, c in counts) / len(counts)
        for k in wanted
        if k <= largest
    }


def wilson_interval(correct: int, total: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval for a proportion; sane at 0%, 100% and small n (unlike +-2se)."""
    if total <= 0:
        return 0.0, 1.0
    p = correct / total
    denominator = 1.0 + z * z / total
    centre = (p + z * z / (2 * total)) / denominator
    half = z / denominator * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total))
    # At 0% and 100% the bound is exactly 0 or 1; rounding would leave it a hair inside.
    low = 0.0 if correct <= 0 else max(0.0, centre - half)
    high = 1.0 if correct >= total else min(1.0, centre + half)
    return low, high


# --------------------------------------------------------------------------- loading


def load_results(paths: str | Path | Iterable[str | Path]) -> list[Row]:
    """Rows from result JSONL files and directories of them (searched recursively).

    Torn lines (a crash mid-write) and non-object lines are skipped. A row seen twice under
    the same `key` (the same file given twice, a copied run) is kept once. Each row gets
    `SOURCE_FIELD` set to the file it came from. Order: files sorted, lines in file order.
    """
    if isinstance(paths, str | Path):
        paths = [paths]
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*.jsonl") if p.is_file()))
        elif path.exists():
            files.append(path)
        else:
            raise FileNotFoundError(f"no results at {path}")
    rows: list[Row] = []
    seen_files: set[Path] = set()
    position: dict[str, int] = {}
    for file in files:
        if file.resolve() in seen_files:
            continue
        seen_files.add(file.resolve())
        with file.open(encoding="utf-8") as handle:
            for line in handle:
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if not isinstance(row, dict):
                    continue
                row[SOURCE_FIELD] = str(file)
                key = row.get("key")
                if isinstance(key, str) and key in position:
                    # A rerun appends a retried problem: the later row supersedes the earlier.
                    rows[position[key]] = row
                    continue
                if isinstance(key, str):
                    position[key] = len(rows)
                rows.append(row)
    return rows


def group_rows(rows: Iterable[Row]) -> dict[GroupKey, list[Row]]:
    """Rows by (dataset, config name, fingerprint): one group per measured config.

    The fingerprint is part of the key so an edited config that kept its name is not mixed
    with the old one; the dataset is, so one config's runs on two datasets stay apart.
    """
    groups: dict[GroupKey, list[Row]] = {}
    for row in rows:
        key = (
            str(row.get("dataset", "")),
            str(row.get("config", "")),
            str(row.get("fingerprint", "")),
        )
        groups.setdefault(key, []).append(row)
    return groups


def family(config: str) -> str:
    """The strategy family of a sweep variant: its name before the `[`."""
    return config.split("[", 1)[0]


def sweep_label(config: str) -> str:
    """The swept settings of a variant (`n=4` for `sc[n=4]`), or "" for a plain config."""
    _, bracket, rest = config.partition("[")
    return rest[:-1] if bracket and rest.endswith("]") else ""


# --------------------------------------------------------------------------- summaries


class Point(BaseModel):
    """One config on one dataset: what it scored and what it spent, per problem."""

    model_config = ConfigDict(frozen=True)

    dataset: str
    config: str
    fingerprint: str
    problems: int
    correct: int
    accuracy: float
    accuracy_low: float
    accuracy_high: float
    tokens_per_problem: float
    completion_tokens_per_problem: float
    calls_per_problem: float
    wall_time_per_problem: float
    errors: int
    budget_exhausted: int
    max_graded_candidates: int
    tool_calls_per_problem: float = 0.0

    @property
    def family(self) -> str:
        return family(self.config)

    @property
    def label(self) -> str:
        return sweep_label(self.config)


def _usage(row: Mapping[str, Any], field: str) -> float:
    usage = row.get("usage") or {}
    return float(usage.get(field) or 0)


def accuracy_vs_tokens(rows: Iterable[Row]) -> list[Point]:
    """One point per (dataset, config, fingerprint), sorted by dataset, family, then tokens.

    Sorting by tokens within a family puts sweep variants in order of compute, which is
    the order the plot draws them in and deterministic for given results.
    """
    points = []
    for (dataset, config, fingerprint), group in group_rows(rows).items():
        count = len(group)
        correct = sum(bool(r.get("correct")) for r in group)
        low, high = wilson_interval(correct, count)
        completion = sum(_usage(r, "completion_tokens") for r in group)
        points.append(
            Point(
                dataset=dataset,
                config=config,
                fingerprint=fingerprint,
                problems=count,
                correct=correct,
                accuracy=correct / count,
                accuracy_low=low,
                accuracy_high=high,
                tokens_per_problem=(sum(_usage(r, "prompt_tokens") for r in group) + completion)
                / count,
                completion_tokens_per_problem=completion / count,
                calls_per_problem=sum(_usage(r, "calls") for r in group) / count,
                tool_calls_per_problem=sum(_usage(r, "tool_calls") for r in group) / count,
                wall_time_per_problem=sum(_usage(r, "wall_time") for r in group) / count,
                errors=sum(r.get("error") is not None for r in group),
                budget_exhausted=sum(r.get("budget_exhausted") is not None for r in group),
                max_graded_candidates=max(
                    ((graded_counts(r) or (0, 0))[0] for r in group), default=0
                ),
            )
        )
    return sorted(points, key=_point_order)


def _point_order(point: Point) -> tuple[Any, ...]:
    return (point.dataset, point.family, point.tokens_per_problem, point.config, point.fingerprint)


# --------------------------------------------------------------------------- markdown


def table_section(title: str, prose: str, columns: Sequence[str]) -> list[str]:
    """A level-3 heading, a paragraph, and the head of a table whose first column is text."""
    return [
        "",
        f"### {title}",
        "",
        prose,
        "",
        "| " + " | ".join(columns) + " |",
        "|---|" + "---:|" * (len(columns) - 1),
    ]
