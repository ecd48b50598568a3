"""The Markdown benchmark report: tables, plots, coverage, pool budgets and first failures.

Built from result rows alone (see `itc.bench.results`), so a report can be rebuilt at any
time, from crashed, resumed or copied runs, without a server or the original configs. Plots
need matplotlib (the `plot` extra); without it the report is written with its tables only.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from itc.bench.plots import plot_accuracy_vs_tokens, plot_coverage
from itc.bench.pools import budget_section
from itc.bench.results import (
    SOURCE_FIELD,
    GroupKey,
    Point,
    Row,
    accuracy_vs_tokens,
    coverage_curve,
    family,
    group_rows,
    load_results,
    table_section,
)


def write_report(
    paths: str | Path | Iterable[str | Path],
    out_dir: str | Path,
    *,
    failures_per_config: int = 5,
    pools: Sequence[str] = (),
    budgets: Sequence[int] = (1, 2, 4, 8, 16),
) -> Path:
    """Write `report.md` (plus its PNGs) into out_dir from result files; return its path.

    Per dataset: a results table, the accuracy-vs-tokens plot, pass@k coverage when any
    config graded more than one candidate per problem, and the first failures of each
    config with where to find their traces. Configs named in `pools` are sample pools:
    they also get accuracy at each of `budgets`, beside the other configs as baselines
    (see `itc.bench.pools`). The same results always give the same report.
    """
    rows = load_results(paths)
    if not rows:
        raise ValueError("no result rows found to report on")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    try:
        import matplotlib  # noqa: F401

        can_plot = True
    except ImportError:
        can_plot = False

    points = accuracy_vs_tokens(rows)
    groups = group_rows(rows)
    datasets = sorted({p.dataset for p in points})
    sources = sorted({_relative(r[SOURCE_FIELD], out) for r in rows})
    lines = [
        "# Benchmark report",
        "",
        f"{len(points)} config runs over {len(datasets)} dataset(s), {len(rows)} problem runs,"
        " read from (paths relative to this report):",
        "",
        *(f"- `{_code(s)}`" for s in sources),
        "",
        "Accuracy is the final answer's; the interval is a 95% Wilson interval. Tokens are per"
        " problem run, prompt plus generated; wall time is the mean per problem (runs overlap).",
    ]
    slugs = _slugs(datasets)
    for dataset in datasets:
        here = [p for p in points if p.dataset == dataset]
        slug = slugs[dataset]
        lines += ["", f"## Dataset `{_code(dataset or '(unnamed)')}`", "", *_results_table(here)]
        if can_plot:
            name = f"accuracy_vs_tokens-{slug}.png"
            plot_accuracy_vs_tokens(here, out / name, title=f"Accuracy vs tokens: {dataset}")
            lines += ["", f"![Accuracy vs tokens on {_alt(dataset)}]({name})"]
        else:
            lines += ["", "(Install matplotlib, the `plot` extra, for the plots.)"]
        lines += _coverage_section(here, groups, out, slug, can_plot)
        if pools:
            pooled = [
                r for r in rows if r.get("dataset") == dataset and family(r["config"]) in pools
            ]
            # Baselines on the pool's problems only, so a pool cut short still compares like
            # with like.
            pool_problems = {r.get("problem_id") for r in pooled}
            baselines = accuracy_vs_tokens(
                r
                for r in rows
                if r.get("dataset") == dataset
                and family(r["config"]) not in pools
                and r.get("problem_id") in pool_problems
            )
            lines += budget_section(pooled, baselines, budgets, out, slug, can_plot)
        lines += _failures_section(here, groups, out, failures_per_config)
    report = out / "report.md"
    report.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return report


def _results_table(points: Sequence[Point]) -> list[str]:
    tools = any(p.tool_calls_per_problem for p in points)  # a column only when tools ran
    header = (
        "| config | fingerprint | accuracy (95% CI) | tokens/problem | generated/problem"
        f" | calls/problem{' | tool calls/problem' if tools else ''}"
        " | wall s/problem | errors | budget exhausted |"
    )
    lines = [header, "|---|---|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" if tools else "")]
    for p in points:
        accuracy = (
            f"{p.accuracy:.1%} [{p.accuracy_low:.1%}, {p.accuracy_high:.1%}]"
            f" ({p.correct}/{p.problems})"
        )
        tool_cell = f" | {p.tool_calls_per_problem:.1f}" if tools else ""
        lines.append(
            f"| `{_cell(p.config)}` | `{p.fingerprint[:8]}` | {accuracy}"
            f" | {p.tokens_per_problem:.0f} | {p.completion_tokens_per_problem:.0f}"
            f" | {p.calls_per_problem:.1f}{tool_cell} | {p.wall_time_per_problem:.2f}"
            f" | {p.errors} | {p.budget_exhausted} |"
        )
    return lines


def _coverage_ks(largest: int) -> list[int]:
    ks = [2**i for i in range(largest.bit_length()) if 2**i <= largest]
    return ks if ks[-1] == largest else [*ks, largest]


def _coverage_section(
    points: Sequence[Point],
    groups: Mapping[GroupKey, list[Row]],
    out: Path,
    slug: str,
    can_plot: bool,
) -> list[str]:
    sampled = [p for p in points if p.max_graded_candidates > 1]
    if not sampled:
        return []
    ks = _coverage_ks(max(p.max_graded_candidates for p in sampled))
    curves: dict[str, dict[int, float]] = {}
    for p in sampled:
        name = p.config if _unique_name(p, sampled) else f"{p.config} {p.fingerprint[:8]}"
        curves[name] = coverage_curve(groups[(p.dataset, p.config, p.fingerprint)], ks)
    lines = table_section(
        "Coverage (pass@k over graded candidates)",
        "Unbiased pass@k, averaged over problems; a problem with fewer than k candidates counts"
        " as solved if any candidate is correct. Candidates are what the output node returned:"
        " for a vote that is one per distinct answer, not one per sample.",
        ["config", *(f"pass@{k}" for k in ks)],
    )
    for name, curve in curves.items():
        cells = " | ".join(f"{curve[k]:.1%}" if k in curve else "–" for k in ks)
        lines.append(f"| `{_cell(name)}` | {cells} |")
    if can_plot:
        file = f"coverage-{slug}.png"
        plot_coverage(curves, out / file, title=f"Coverage (pass@k): {points[0].dataset}")
        lines += ["", f"![Coverage on {_alt(points[0].dataset)}]({file})"]
    return lines


def _unique_name(point: Point, points: Sequence[Point]) -> bool:
    return sum(p.config == point.config for p in points) == 1


def _failures_section(
    points: Sequence[Point], groups: Mapping[GroupKey, list[Row]], out: Path, limit: int
) -> list[str]:
    lines = ["", "### Failures", ""]
    any_failure = False
    for point in sorted(points, key=lambda p: (p.config, p.fingerprint)):
        failed = [
            r
            for r in groups[(point.dataset, point.config, point.fingerprint)]
            if not r.get("correct")
        ]
        if not failed:
            continue
        any_failure = True
        failed.sort(key=lambda r: (_natural(str(r.get("problem_id", ""))), r.get("seed") or 0))
        shown = failed[:limit]
        lines += [
            f"`{_code(point.config)}` (`{point.fingerprint[:8]}`): {len(failed)} failed;"
            f" the first {len(shown)} by problem id:",
            "",
        ]
        for row in shown:
            notes = ""
            if row.get("error") is not None:
                notes += f", error `{_code(str(row['error']))}`"
            if row.get("budget_exhausted") is not None:
                notes += f", budget exhausted `{_code(str(row['budget_exhausted']))}`"
            lines.append(
                f"- problem `{_code(str(row.get('problem_id')))}`"
                f" (seed {row.get('seed')}): gold `{_code(_show(row.get('gold')))}`,"
                f" answer `{_code(_show(row.get('answer')))}`{notes};"
                f" trace in `{_code(_relative(row[SOURCE_FIELD], out))}`"
                f" at key `{_code(str(row.get('key')))}`"
            )
        lines.append("")
    if not any_failure:
        lines += ["No failures.", ""]
    return lines[:-1] if lines[-1] == "" else lines


def _show(value: Any) -> str:
    return "null" if value is None else str(value)


def _code(text: str, limit: int = 80) -> str:
    """Text safe inside a single-backtick code span on one line, shortened if long."""
    text = " ".join(text.replace("`", "'").split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _alt(text: str) -> str:
    return _code(text).replace("[", "(").replace("]", ")")


def _cell(text: str) -> str:
    return _code(text).replace("|", "\\|")


def _relative(path: str, base: Path) -> str:
    try:
        return os.path.relpath(path, base)
    except ValueError:  # another drive on Windows
        return str(Path(path).resolve())


def _natural(text: str) -> tuple[Any, ...]:
    """Sort key putting p2 before p10; text and number parts alternate, so they compare."""
    return tuple(int(t) if i % 2 else t for i, t in enumerate(re.split(r"(\d+)", text)))


def _slugs(names: Sequence[str]) -> dict[str, str]:
    """File-name-safe, distinct names for datasets (which may contain `/`)."""
    slugs: dict[str, str] = {}
    used: set[str] = set()
    for name in names:
        base = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "results"
        slug, index = base, 2
        while slug in used:
            slug, index = f"{base}-{index}", index + 1
        used.add(slug)
        slugs[name] = slug
    return slugs
