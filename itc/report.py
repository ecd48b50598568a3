"""Reading benchmark results back: pass@k, coverage, accuracy against tokens, a Markdown report.

Everything here works from the JSONL rows `itc.bench` writes (one per problem run), so a
report can be rebuilt at any time, from crashed, resumed or copied runs, without a server
or the original configs. Plots need matplotlib (the `plot` extra); without it the report
is written with its tables only.
"""

from __future__ import annotations

import json
import math
import os
import re
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


# --------------------------------------------------------------------------- plots


def _figure() -> Any:
    """A figure drawn by the Agg canvas, chosen explicitly per figure.

    Binding the canvas here rather than calling `matplotlib.use` keeps plotting headless
    without switching the backend of whoever imported us (a notebook, a GUI session).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7.5, 5.0), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def plot_accuracy_vs_tokens(
    points: Sequence[Point], path: str | Path, title: str = "Accuracy vs tokens"
) -> Path:
    """PNG of accuracy (with 95% intervals) against tokens per problem, log x.

    One line per strategy family (per dataset too, if several are given), each point
    labelled with its sweep value. Points with no tokens cannot sit on a log axis and are
    left out.
    """
    path = Path(path)
    figure = _figure()
    axes = figure.add_subplot()
    several_datasets = len({p.dataset for p in points}) > 1
    lines: dict[tuple[str, str], list[Point]] = {}
    for point in points:
        if point.tokens_per_problem > 0:
            lines.setdefault((point.dataset, point.family), []).append(point)
    for (dataset, name), members in sorted(lines.items()):
        members = sorted(members, key=lambda p: (p.tokens_per_problem, p.config))
        xs = [p.tokens_per_problem for p in members]
        ys = [p.accuracy for p in members]
        errors = [
            [p.accuracy - p.accuracy_low for p in members],
            [p.accuracy_high - p.accuracy for p in members],
        ]
        legend = f"{name} ({dataset})" if several_datasets else name
        axes.errorbar(xs, ys, yerr=errors, marker="o", capsize=3, label=legend)
        for point, x, y in zip(members, xs, ys, strict=True):
            if point.label:
                axes.annotate(
                    point.label, (x, y), textcoords="offset points", xytext=(4, 6), fontsize=8
                )
    axes.set_xscale("log")
    axes.set_ylim(-0.02, 1.02)
    axes.set_xlabel("tokens per problem (prompt + generated)")
    axes.set_ylabel("accuracy")
    axes.set_title(title)
    axes.grid(True, which="both", alpha=0.3)
    if lines:
        axes.legend(fontsize=8)
    figure.savefig(path, dpi=120)
    return path


def plot_coverage(
    curves: Mapping[str, Mapping[int, float]], path: str | Path, title: str = "Coverage (pass@k)"
) -> Path:
    """PNG of pass@k against k (log2 x), one line per curve, in the mapping's order."""
    path = Path(path)
    figure = _figure()
    axes = figure.add_subplot()
    for name, curve in curves.items():
        if curve:
            ks = sorted(curve)
            axes.plot(ks, [curve[k] for k in ks], marker="o", label=name)
    axes.set_xscale("log", base=2)
    ticks = sorted({k for curve in curves.values() for k in curve})
    if ticks:
        axes.set_xticks(ticks, labels=[str(k) for k in ticks])
    axes.set_ylim(-0.02, 1.02)
    axes.set_xlabel("k (samples)")
    axes.set_ylabel("pass@k")
    axes.set_title(title)
    axes.grid(True, which="both", alpha=0.3)
    if any(curves.values()):
        axes.legend(fontsize=8)
    figure.savefig(path, dpi=120)
    return path


# --------------------------------------------------------------------------- report


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
    (see `itc.subsample`). The same results always give the same report.
    """
    from itc.subsample import budget_section

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
    header = (
        "| config | fingerprint | accuracy (95% CI) | tokens/problem | generated/problem"
        " | calls/problem | wall s/problem | errors | budget exhausted |"
    )
    lines = [header, "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for p in points:
        accuracy = (
            f"{p.accuracy:.1%} [{p.accuracy_low:.1%}, {p.accuracy_high:.1%}]"
            f" ({p.correct}/{p.problems})"
        )
        lines.append(
            f"| `{_cell(p.config)}` | `{p.fingerprint[:8]}` | {accuracy}"
            f" | {p.tokens_per_problem:.0f} | {p.completion_tokens_per_problem:.0f}"
            f" | {p.calls_per_problem:.1f} | {p.wall_time_per_problem:.2f}"
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
