"""PNG plots of benchmark results: accuracy against tokens, and coverage (pass@k) against k.

matplotlib is optional (the `plot` extra), so it is imported inside the functions that draw:
importing this module, or writing a report without plots, never needs it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from itc.bench.results import Point


def new_figure() -> Any:
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
    figure = new_figure()
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
    figure = new_figure()
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
