"""The ParallelQA driver (benchmarks/parallelqa.py) without a server: a bench row keeps the
tool node's record, the report's numbers come from it, the scripted modes all answer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from benchmarks import parallelqa
from itc.backends.base import GenerationRequest
from itc.backends.scripted import ScriptedBackend
from itc.bench.datasets import Dataset
from itc.bench.runner import run_benchmark
from itc.config import load_pipeline
from itc.types import Problem

PROBLEMS = (Problem(id="q1", prompt="What is 6 * 7?", answer="42"),)


def react_turns(request: GenerationRequest, index: int) -> str:
    content = request.messages[-1].content  # type: ignore[index]
    return "Answer: 42" if "Observation:" in content else 'Action: calculator("6 * 7")'


async def test_a_bench_row_keeps_the_tool_nodes_record(tmp_path: Path) -> None:
    config = tmp_path / "react.yaml"
    config.write_text(
        "name: react\nanswer: text\ntools: {calculator: {latency: 0.05}}\n"
        "nodes: {main: {type: tool_react, max_turns: 3}}\n"
    )
    await run_benchmark(
        [load_pipeline(config)],
        Dataset("toy", PROBLEMS, "exact"),
        ScriptedBackend(react_turns, exact_text=True),
        output_dir=tmp_path,
    )
    [row] = parallelqa._rows(tmp_path)["react"]
    kind, record = parallelqa.tool_record(row)  # type: ignore[misc]
    assert kind == "tool_react" and row["correct"]
    first, second = record["plans"]
    assert first["calls"] == ['calculator("6 * 7")'] and first["observations"][0]["value"] == 42
    assert second["answer"] == "42"
    numbers = parallelqa.measure([row])
    assert numbers["tool_calls"] == 1 and numbers["llm_calls"] == 2
    assert numbers["plans"] == 1 and numbers["clean_share"] == 1.0
    assert numbers["early_share"] is None  # a turn's call starts once the turn is written
    assert numbers["wall_mean"] >= 0.05


def test_the_report_measures_plans_and_their_timing() -> None:
    def row(plans: list[dict[str, Any]], wall: float) -> dict[str, Any]:
        usage = {
            "prompt_tokens": 10,
            "completion_tokens": 5,
            "calls": 2,
            "tool_calls": 2,
            "wall_time": wall,
        }
        return {
            "key": str(wall),
            "correct": True,
            "usage": usage,
            "candidates": [{"metadata": {"tool_dag": {"plans": plans}}}],
        }

    ok = {"status": "ok"}
    clean = {
        "calls": ["1. a()"],
        "observations": [ok],
        "error": None,
        "first_call": 0.1,
        "plan_done": 0.5,
    }
    cut = {
        "calls": ["1. a()"],
        "observations": [ok],
        "error": "line 2: bad",
        "first_call": 0.6,
        "plan_done": 0.5,
    }
    numbers = parallelqa.measure([row([clean], 1.0), row([cut, clean], 3.0)])
    assert numbers["plans"] == 3 and numbers["clean_share"] == pytest.approx(2 / 3)
    assert numbers["early_share"] == pytest.approx(2 / 3)
    assert (numbers["wall_mean"], numbers["wall_median"]) == (2.0, 2.0)


@pytest.mark.parametrize("mode", parallelqa.SCRIPTED_MODES)
async def test_every_scripted_mode_answers_with_the_expected_calls(mode: str) -> None:
    result = await parallelqa.scripted_question(mode, lookups=3, latency=0.0, delay=0.005)
    assert result["tool_calls"] == 4
    assert result["llm_calls"] == {"sequential": 5, "rounds": 3}.get(mode, 2)
    # Only a streamed plan starts a call before its text is complete (a batch plan is
    # timed complete before its first line is accepted).
    early = mode in ("dag-streaming", "rounds")
    assert result["first_call_before_plan_end"] is early


def test_the_configs_differ_only_in_their_node(tmp_path: Path) -> None:
    loaded = [load_pipeline(parallelqa.CONFIGS / f"{name}.yaml") for name in parallelqa.NAMES]
    assert len({(p.budget, p.tools, p.answer) for p in loaded}) == 1
    written = parallelqa.effective_config("dag-batch", 0.25, tmp_path / "docs.jsonl", tmp_path)
    tools = load_pipeline(written).tools
    assert tools is not None and tools.calculator is not None
    assert tools.document_search is not None
    assert tools.calculator.latency == tools.document_search.latency == 0.25
    assert tools.document_search.path == tmp_path / "docs.jsonl"
