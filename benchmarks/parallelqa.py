"""ParallelQA with tools of a fixed simulated latency (issue 18's benchmark), in resumable pieces.

    .venv/bin/python benchmarks/parallelqa.py run --base-url http://127.0.0.1:8012 [--limit N]
    .venv/bin/python benchmarks/parallelqa.py report
    .venv/bin/python benchmarks/parallelqa.py scripted

`run` benchmarks each config of benchmarks/configs/parallelqa/ with `itc bench` on the
ParallelQA questions: sequential tool use (ReAct, one call a turn), the tool DAG with calls
starting while the plan streams and with the plan parsed whole first, and the round-based
mode; same tools (`document_search` over benchmarks/data/parallelqa_docs.jsonl and
`calculator`, each sleeping `--latency` seconds a call), budget and limits. Results go to
benchmarks/results/parallelqa/<served model>/; finished questions are kept, so a stopped run
resumes. Problems overlap (`--concurrency` requests in flight), so a question's wall time
includes waiting for the server behind the others.

`report` reads the rows (each keeps its usage and the tool node's record: every plan, its
calls, results and timings) into one table per model. `scripted` measures the executor alone:
ParallelQA-shaped plans played by the scripted backend at a fixed delay per token, against
tools that sleep, so the speedup is the executor's and not the model's.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from itc.config import load_pipeline, save_pipeline

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "benchmarks" / "configs" / "parallelqa"
OUT = ROOT / "benchmarks" / "results" / "parallelqa"
NAMES = ("react", "dag-streaming", "dag-batch", "rounds")
BASELINE = "react"
TOOL_NODES = ("tool_react", "tool_dag", "tool_rounds")


# -- run -----------------------------------------------------------------------------------


def served_model(base_url: str) -> str:
    models = httpx.get(f"{base_url}/v1/models", timeout=30).json()["data"]
    return str(models[0]["id"])


def effective_config(name: str, latency: float, docs: Path | None, folder: Path) -> Path:
    """The committed config with the tools' latency (and collection) asked for, written
    beside the results: the tools are part of its fingerprint, so another latency is
    another results file, never mixed with this one."""
    pipeline = load_pipeline(CONFIGS / f"{name}.yaml")
    tools = pipeline.tools
    assert tools is not None and tools.calculator and tools.document_search
    search = {"latency": latency, **({"path": docs} if docs is not None else {})}
    tools = tools.model_copy(
        update={
            "calculator": tools.calculator.model_copy(update={"latency": latency}),
            "document_search": tools.document_search.model_copy(update=search),
        }
    )
    path = folder / "configs" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_pipeline(pipeline.model_copy(update={"tools": tools}), path)
    return path


def run(
    base_url: str,
    only: list[str],
    limit: int | None,
    latency: float,
    docs: Path | None,
    concurrency: int,
    out: Path,
    offset: int = 0,
) -> int:
    model = served_model(base_url)
    folder = out / model
    status = 0
    for name in only or NAMES:
        command = [
            str(ROOT / ".venv" / "bin" / "itc"), "bench",
            str(effective_config(name, latency, docs, folder)), "--dataset", "parallelqa",
            *(["--limit", str(limit)] if limit else []), "--offset", str(offset),
            "--base-url", base_url,
            "--model", model, "--output-dir", str(folder),
            "--concurrency", str(concurrency), "--no-report",
        ]  # fmt: skip
        print("$", " ".join(command), flush=True)
        status = status or subprocess.call(command, cwd=ROOT)
    return status


# -- report --------------------------------------------------------------------------------


def _rows(folder: Path) -> dict[str, list[dict[str, Any]]]:
    """The last row of each question, by config (a retried question keeps its last run)."""
    found: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for path in sorted(folder.glob("*.jsonl")):
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a torn last line from a stopped run
            found[row["config"]][row["key"]] = row
    return {name: list(rows.values()) for name, rows in found.items()}


def tool_record(row: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """The tool node's record kept with the answer (None for a question that errored)."""
    for candidate in row.get("candidates") or []:
        metadata = candidate.get("metadata") or {}
        for kind in TOOL_NODES:
            if kind in metadata:
                return kind, metadata[kind]
    return None


def measure(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """A config's numbers per question. A plan (a ReAct turn, a round) counts when it holds
    calls or failed to parse; it is clean when it parsed whole and each call it held ran
    (a tool's own error counts as run: the plan was fine)."""
    count = len(rows) or 1
    usage = [r["usage"] for r in rows]
    walls = [u["wall_time"] for u in usage]
    answered = [r for r in rows if r.get("error") is None]
    plans, kinds = [], set()
    for row in rows:
        found = tool_record(row)
        if found is not None:
            kinds.add(found[0])
            plans += [p for p in found[1]["plans"] if p["calls"] or p["error"]]
    clean = [
        p
        for p in plans
        if p["error"] is None
        and len(p["observations"]) == len(p["calls"])
        and all(o["status"] in ("ok", "error") for o in p["observations"])
    ]
    started = [p for p in plans if p["first_call"] is not None and p["plan_done"] is not None]
    early = [p for p in started if p["first_call"] < p["plan_done"]]
    tool_errors = sum(o["status"] == "error" for p in plans for o in p["observations"])
    return {
        "questions": len(rows),
        "correct": sum(bool(r["correct"]) for r in answered),
        "accuracy": sum(bool(r["correct"]) for r in answered) / max(len(answered), 1),
        "errors": len(rows) - len(answered),
        "budget_hit": sum(r.get("budget_exhausted") is not None for r in rows),
        "wall_mean": statistics.fmean(walls) if walls else 0.0,
        "wall_median": statistics.median(walls) if walls else 0.0,
        "generated": sum(u["completion_tokens"] for u in usage) / count,
        "total": sum(u["prompt_tokens"] + u["completion_tokens"] for u in usage) / count,
        "llm_calls": sum(u["calls"] for u in usage) / count,
        "tool_calls": sum(u.get("tool_calls", 0) for u in usage) / count,
        "tool_errors": tool_errors / count,
        "plans": len(plans),
        "clean_share": len(clean) / len(plans) if plans else None,
        "early_share": None
        if kinds == {"tool_react"} or not started
        else len(early) / len(started),
    }


def _branches() -> dict[str, int]:
    from itc.bench.datasets import load_parallelqa

    return {
        p.id: p.metadata["branch"] for p in load_parallelqa().problems if "branch" in p.metadata
    }


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def model_table(model: str, rows: dict[str, list[dict[str, Any]]]) -> list[str]:
    numbers = {name: measure(rows[name]) for name in [*NAMES, *sorted(rows)] if name in rows}
    base = numbers.get(BASELINE)
    lines = [
        f"## {model}",
        "",
        "| config | questions | accuracy | wall s/question (mean / median) | speedup vs react "
        "(mean / median) | generated tok/question | total tok/question | LLM calls/question | "
        "tool calls/question | failed tool calls/question | clean plans | first call before "
        "plan end | budget hit | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, m in numbers.items():
        speedup = "-"
        if base is not None and m["wall_mean"] and m["wall_median"]:
            speedup = (
                f"{base['wall_mean'] / m['wall_mean']:.2f}x / "
                f"{base['wall_median'] / m['wall_median']:.2f}x"
            )
        lines.append(
            f"| {name} | {m['questions']} | {m['accuracy']:.1%} ({m['correct']}) | "
            f"{m['wall_mean']:.1f} / {m['wall_median']:.1f} | {speedup} | {m['generated']:.0f} | "
            f"{m['total']:.0f} | {m['llm_calls']:.1f} | {m['tool_calls']:.1f} | "
            f"{m['tool_errors']:.1f} | {_fmt(m['clean_share'], '.0%')} ({m['plans']}) | "
            f"{_fmt(m['early_share'], '.0%')} | {m['budget_hit']} | {m['errors']} |"
        )
    branches = _branches()
    by_branch: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for name in numbers:
        for row in rows[name]:
            if row["problem_id"] in branches:
                by_branch[name][branches[row["problem_id"]]].append(row["usage"]["wall_time"])
    counts = sorted({b for walls in by_branch.values() for b in walls})
    if counts:
        lines += [
            "",
            "Mean wall seconds per question by the number of independent lookups it needs:",
            "",
            "| config | " + " | ".join(f"{b} lookups" for b in counts) + " |",
            "|---|" + "---:|" * len(counts),
        ]
        for name, walls in by_branch.items():
            cells = [_fmt(statistics.fmean(walls[b]) if walls[b] else None, ".1f") for b in counts]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def report(out: Path) -> Path:
    lines = [
        "# ParallelQA: sequential tool use against tool DAGs and rounds (issue 18)",
        "",
        "Tools: `document_search` (BM25 over benchmarks/data/parallelqa_docs.jsonl, the best "
        "passage) and `calculator`, each sleeping a fixed latency a call (the configs' "
        "`latency`). Configs in benchmarks/configs/parallelqa/ (same budget and limits). "
        "Clean plans: plans (ReAct turns, rounds) that parsed whole and ran every call they "
        "held, of all plans (count in brackets). First call before plan end: plans whose first "
        "call started before their text was complete. Questions run side by side (`run "
        "--concurrency` requests in flight), so a question's wall time includes waiting behind "
        "the others' LLM calls. Reproduce: "
        "`.venv/bin/python benchmarks/parallelqa.py run --base-url URL`, then `... report`.",
        "",
    ]
    for folder in sorted(p for p in out.iterdir() if p.is_dir() and any(p.glob("*.jsonl"))):
        lines += model_table(folder.name, _rows(folder))
    scripted_md = out / "scripted.md"
    if scripted_md.exists():
        lines += [scripted_md.read_text()]
    path = out / "README.md"
    path.write_text("\n".join(lines).rstrip() + "\n")
    return path


# -- scripted: the executor alone ----------------------------------------------------------

SCRIPTED_MODES = ("sequential", "dag-batch", "dag-streaming", "rounds")


def _facts(lookups: int) -> dict[str, int]:
    """Queries and the numbers the fake search answers, one per independent lookup."""
    return {f"entity {n} height": 1000 + 137 * n for n in range(1, lookups + 1)}


def _combine(values: list[str]) -> str:
    return f'calculator("max({", ".join(values)})")'


def scripted_turns(mode: str, lookups: int) -> Callable[[Any, int], str]:
    """What the scripted model writes for a question needing `lookups` lookups then one
    calculation: a whole plan (DAG), one call a turn (sequential), or two rounds."""
    facts = _facts(lookups)
    searches = [f'document_search("{query}")' for query in facts]
    answer = f"Answer: {max(facts.values())}"
    plan = [*searches, _combine([f"${n}" for n in range(1, lookups + 1)])]

    def script(request: Any, index: int) -> str:
        content = request.messages[-1].content
        if "Reply with `Answer: `" in content:
            return answer
        if mode == "sequential":
            turn = content.count("Observation:")
            if turn < lookups:
                return f"Action: {searches[turn]}"
            return (
                f"Action: {_combine([str(v) for v in facts.values()])}"
                if turn == lookups
                else answer
            )
        if mode == "rounds":
            if "Round 2:" in content:
                return answer
            if "Round 1:" in content:
                return f"1. {_combine([str(v) for v in facts.values()])}\n2. join()"
            return "\n".join(
                [*(f"{n}. {s}" for n, s in enumerate(searches, 1)), f"{lookups + 1}. join()"]
            )
        return "\n".join(
            [*(f"{n}. {s}" for n, s in enumerate(plan, 1)), f"{len(plan) + 1}. join()"]
        )

    return script


async def scripted_question(
    mode: str, lookups: int, latency: float, delay: float
) -> dict[str, Any]:
    from itc.backends.scripted import ScriptedBackend
    from itc.runtime.budget import Ledger
    from itc.runtime.context import NodeContext, Runtime
    from itc.runtime.tools import ToolRegistry, tool
    from itc.runtime.trace import Trace
    from itc.strategies.tool_dag.node import ToolDAG
    from itc.strategies.tool_dag.react import ToolReact
    from itc.strategies.tool_dag.rounds import ToolRounds
    from itc.tools.calculator import calculator_tool
    from itc.types import Budget, Problem

    facts = _facts(lookups)

    @tool
    async def document_search(query: str) -> int:
        """Looks a number up."""
        return facts[query]

    tools = ToolRegistry(
        [dataclasses.replace(document_search, latency=latency), calculator_tool(latency=latency)]
    )
    node = {
        "sequential": ToolReact(max_turns=lookups + 2),
        "dag-batch": ToolDAG(stream=False, max_calls=8),
        "dag-streaming": ToolDAG(stream=True, max_calls=8),
        "rounds": ToolRounds(rounds=3, max_calls=8),
    }[mode]
    backend = ScriptedBackend(
        scripted_turns(mode, lookups), exact_text=True, seconds_per_token=delay
    )
    problem = Problem(id=f"{mode}-{lookups}", prompt="Which is highest?")
    ctx = NodeContext(
        problem,
        Runtime(backend=backend, tools=tools),
        Ledger(Budget()),
        Trace(problem_id=problem.id),
    )
    started = time.monotonic()
    [answer] = await node.run(ctx, [])
    wall = time.monotonic() - started
    assert answer.text == str(max(facts.values())), (mode, answer.text)
    plans = next(iter(answer.metadata[k] for k in TOOL_NODES if k in answer.metadata))["plans"]
    with_calls = [p for p in plans if p["first_call"] is not None]
    return {
        "mode": mode,
        "lookups": lookups,
        "wall": round(wall, 3),
        "llm_calls": ctx.ledger.spent.calls,
        "tool_calls": ctx.ledger.spent.tool_calls,
        "generated": ctx.ledger.spent.completion_tokens,
        "first_call_before_plan_end": any(p["first_call"] < p["plan_done"] for p in with_calls),
    }


def scripted(latency: float, delay: float, out: Path) -> Path:
    async def all_of() -> list[dict[str, Any]]:
        # One at a time, so no measurement shares the event loop with another.
        return [
            await scripted_question(mode, lookups, latency, delay)
            for lookups in range(2, 6)
            for mode in SCRIPTED_MODES
        ]

    results = asyncio.run(all_of())
    walls = {(r["mode"], r["lookups"]): r["wall"] for r in results}
    for r in results:
        r["speedup"] = round(walls[("sequential", r["lookups"])] / r["wall"], 2)
    out.mkdir(parents=True, exist_ok=True)
    settings = {
        "tool_latency_s": latency,
        "seconds_per_token": delay,
        "token": "a whitespace-separated word of the scripted text",
    }
    (out / "scripted.json").write_text(
        json.dumps({"settings": settings, "results": results}, indent=2) + "\n"
    )
    lines = [
        "## The executor alone (scripted plans)",
        "",
        f"`benchmarks/parallelqa.py scripted`: the scripted backend writes each question's "
        f"calls at {delay:g} s a token (a token: a word of the script), tools sleep "
        f"{latency:g} s a call. A question needs k independent lookups, then one calculator "
        f"call on all their results, then the answer: sequential = one call a turn (ReAct), "
        f"k + 2 LLM calls; DAG = one plan of k + 1 calls and a join, then the joiner; rounds = "
        f"the k lookups, then the calculation, then the answer (each round's calls start as "
        f"their lines stream, as in dag-streaming). The nodes, executor and runtime are the "
        f"real ones; only the model's text and the tools are played, and prompt processing "
        f"costs nothing. Wall seconds per question (speedup over sequential):",
        "",
        "| lookups | " + " | ".join(SCRIPTED_MODES) + " |",
        "|---:|" + "---:|" * len(SCRIPTED_MODES),
    ]
    for lookups in range(2, 6):
        cells = [
            f"{r['wall']:.2f} ({r['speedup']:.2f}x)"
            for mode in SCRIPTED_MODES
            for r in results
            if r["mode"] == mode and r["lookups"] == lookups
        ]
        lines.append(f"| {lookups} | " + " | ".join(cells) + " |")
    (out / "scripted.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return out / "scripted.json"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    go = sub.add_parser("run")
    go.add_argument("--base-url", required=True)
    go.add_argument("--limit", type=int, default=None, help="only the first N questions")
    go.add_argument("--offset", type=int, default=0, help="skip the first N questions (the "
                    "set is ordered by lookups: offsets 0, 21, 52, 83 start 2, 3, 4, 5)")
    go.add_argument("--only", nargs="*", choices=NAMES, default=[], help="configs to run")
    go.add_argument("--latency", type=float, default=1.0, help="seconds each tool call sleeps")
    go.add_argument("--docs", type=Path, default=None, help="another document collection")
    go.add_argument("--concurrency", type=int, default=4, help="requests in flight")
    go.add_argument("--output-dir", type=Path, default=OUT)
    shown = sub.add_parser("report")
    shown.add_argument("--output-dir", type=Path, default=OUT)
    play = sub.add_parser("scripted")
    play.add_argument("--latency", type=float, default=1.0, help="seconds each tool call sleeps")
    play.add_argument(
        "--token-delay", type=float, default=0.05, help="seconds a token (a word of the script)"
    )
    play.add_argument("--output-dir", type=Path, default=OUT)
    args = parser.parse_args()
    if args.command == "run":
        return run(
            args.base_url.rstrip("/").removesuffix("/v1"),
            args.only,
            args.limit,
            args.latency,
            args.docs,
            args.concurrency,
            args.output_dir,
            args.offset,
        )
    if args.command == "scripted":
        print(scripted(args.latency, args.token_delay, args.output_dir))
        return 0
    print(report(args.output_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
