"""Tools: typed arguments, calls through the runtime (hard budget, deadline, trace), the
built-in Python runner and document search, and tools named as data in a pipeline."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any, Literal

import pytest
from pydantic import Field

from itc.backends.scripted import ScriptedBackend
from itc.bench.runner import summarize
from itc.config import ConfigError, PipelineConfig, parse_pipeline
from itc.nodes import Strategy
from itc.planner.executor import Planner
from itc.runtime.budget import BudgetExhausted
from itc.runtime.context import NodeContext, Runtime
from itc.runtime.tools import Tool, ToolRegistry, ToolResult, tool
from itc.runtime.trace import CallEvent, NodeSummary
from itc.strategies.generate import Generate
from itc.tools.calculator import calculator_tool
from itc.tools.config import ToolsConfig
from itc.tools.document_search import DocumentIndex, document_search_tool, passages, terms
from itc.tools.python_runner import python_tool
from itc.types import Budget, Candidate, Usage
from tests.helpers import PROBLEM, answers, context


@tool
async def add(a: int, b: float = 1.5) -> float:
    """Adds two numbers.

    A second paragraph the planner never sees."""
    return a + b


@tool(name="fail")
async def failing(message: str) -> None:
    """Always raises."""
    raise RuntimeError(message)


@tool
async def nap(seconds: float) -> float:
    """Sleeps, then answers how long."""
    await asyncio.sleep(seconds)
    return seconds


@tool
async def opaque() -> object:
    """Returns something that is not JSON."""
    return object()


def tool_context(*tools: Tool, budget: Budget | None = None, log_samples: bool = False):  # type: ignore[no-untyped-def]
    ctx = context(ScriptedBackend(answers("x")), budget)
    ctx.runtime.tools = ToolRegistry(tools)
    ctx.runtime.log_samples = log_samples
    return ctx.child("plan")


def tool_events(ctx: NodeContext) -> list[CallEvent]:
    return [e for e in ctx.trace.events if e.kind == "tool"]


# --------------------------------------------------------------------------- tools, registry


def test_a_tool_is_made_from_a_typed_async_function() -> None:
    assert add.name == "add" and add.description == "Adds two numbers."
    assert add.signature() == "add(a: int, b: float = 1.5)"
    assert failing.name == "fail"
    assert calculator_tool().signature() == "calculator(expression: str)"
    with pytest.raises(TypeError, match="async"):
        tool(lambda x: x)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="identifier"):
        replace(add, name="not a name")


def test_arguments_bind_positionally_or_by_name_and_are_coerced() -> None:
    assert add.bind([2, "3.5"]).model_dump() == {"a": 2, "b": 3.5}
    assert add.bind(["7"]).model_dump() == {"a": 7, "b": 1.5}
    assert add.bind({"b": 1, "a": "4"}).model_dump() == {"a": 4, "b": 1.0}


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ([1, 2, 3], "takes 2 arguments but 3 were given"),
        ({"a": 1, "c": 2}, "has no argument 'c'"),
        ({}, "a: Field required"),
        (["four"], "a: Input should be a valid integer"),
        ("1, 2", "must be a list or a mapping"),
    ],
)
def test_bad_arguments_are_refused_with_the_signature(arguments: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message) as refused:
        add.bind(arguments)
    assert "add(a: int, b: float = 1.5)" in str(refused.value) or "list or a mapping" in message


def test_the_registry_refuses_duplicates_names_what_it_knows_and_describes_tools() -> None:
    registry = ToolRegistry([add, failing])
    with pytest.raises(ValueError, match="two tools are named 'add'"):
        ToolRegistry([add, add])
    with pytest.raises(KeyError) as unknown:
        registry.get("search")
    assert str(unknown.value) == "unknown tool 'search'; the tools are: add, fail"
    assert registry.get("search", None) is None and registry.get("add") is add
    assert list(registry) == ["add", "fail"] and len(registry) == 2
    assert registry.describe().splitlines() == [
        "add(a: int, b: float = 1.5): Adds two numbers.",
        "fail(message: str): Always raises.",
    ]


# --------------------------------------------------------------------------- calls via runtime


async def test_a_call_returns_the_value_is_charged_and_traced() -> None:
    ctx = tool_context(add, log_samples=True)
    result = await ctx.call_tool("add", ["2", 3])
    assert result == ToolResult(tool="add", ok=True, value=5.0, latency=result.latency)
    assert ctx.ledger.spent.tool_calls == 1 and ctx.ledger.spent.calls == 0
    (event,) = tool_events(ctx)
    assert (event.node, event.status, event.tool, event.arguments) == (
        "plan", "ok", "add", {"a": 2, "b": 3.0}
    )
    assert event.output == 5.0 and event.started >= 0 and event.latency >= 0
    summary = ctx.trace.by_node()["plan"]
    assert summary.tool_calls == 1 and summary.calls == 0


@pytest.mark.parametrize(
    ("name", "arguments", "error"),
    [
        ("add", {"a": "x"}, "a: Input should be a valid integer"),
        ("search", ["x"], "unknown tool 'search'; the tools are: add, fail, opaque"),
        ("fail", ["boom"], "RuntimeError: boom"),
        ("opaque", [], "PydanticSerializationError"),
    ],
)
async def test_failures_are_observations_not_exceptions(
    name: str, arguments: Any, error: str
) -> None:
    ctx = tool_context(add, failing, opaque)
    result = await ctx.call_tool(name, arguments)
    assert not result.ok and result.value is None and error in (result.error or "")
    (event,) = tool_events(ctx)
    assert event.status == "error" and error in (event.detail or "")
    ran = name in ("fail", "opaque")  # calls that never ran are not charged
    assert ctx.ledger.spent.tool_calls == ran


async def test_a_tool_slower_than_its_timeout_fails_as_an_observation() -> None:
    ctx = tool_context(replace(nap, timeout=0.05))
    result = await ctx.call_tool("nap", [5])
    assert not result.ok and result.error == "timed out after 0.05s"
    assert result.latency < 2


async def test_simulated_latency_is_slept_and_independent_calls_overlap() -> None:
    ctx = tool_context(replace(add, latency=0.3))
    started = time.monotonic()
    results = await asyncio.gather(*(ctx.call_tool("add", [i]) for i in range(4)))
    elapsed = time.monotonic() - started
    assert [r.value for r in results] == [1.5, 2.5, 3.5, 4.5]
    assert all(r.latency >= 0.3 for r in results) and elapsed < 1.0  # not 4 x 0.3 s


async def test_the_tool_call_budget_is_hard() -> None:
    ctx = tool_context(add, budget=Budget(tool_calls=2))
    assert (await ctx.call_tool("add", [1])).ok and (await ctx.call_tool("add", [2])).ok
    with pytest.raises(BudgetExhausted) as refused:
        await ctx.call_tool("add", [3])
    assert refused.value.limit == "tool_calls" and ctx.ledger.spent.tool_calls == 2
    event = ctx.trace.events[-1]
    assert (event.kind, event.tool, event.status, event.limit) == (
        "tool", "add", "refused", "tool_calls"
    )
    assert ctx.trace.by_node()["plan"].refused == 1


async def test_concurrent_calls_cannot_overshoot_the_tool_call_budget() -> None:
    started: list[int] = []

    @tool
    async def slow(i: int) -> int:
        """Counts that it ran."""
        started.append(i)
        await asyncio.sleep(0.05)
        return i

    ctx = tool_context(slow, budget=Budget(tool_calls=4))
    outcomes = await asyncio.gather(
        *(ctx.call_tool("slow", [i]) for i in range(10)), return_exceptions=True
    )
    refused = [o for o in outcomes if isinstance(o, BudgetExhausted)]
    assert len(started) == 4 and len(refused) == 6 and ctx.ledger.spent.tool_calls == 4


async def test_the_deadline_cuts_a_tool_call_and_propagates() -> None:
    ctx = tool_context(nap, budget=Budget(wall_time=0.2))
    with pytest.raises(BudgetExhausted) as cut:
        await ctx.call_tool("nap", [10])
    assert cut.value.limit == "wall_time"
    (event,) = tool_events(ctx)
    assert event.status == "cancelled" and event.limit == "wall_time"
    with pytest.raises(BudgetExhausted, match="wall_time"):
        await ctx.call_tool("nap", [0])  # past the deadline: refused outright


async def test_cancellation_propagates_and_is_traced() -> None:
    ctx = tool_context(nap)
    task = asyncio.create_task(ctx.call_tool("nap", [10]))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    (event,) = tool_events(ctx)
    assert event.status == "cancelled" and ctx.ledger.spent.tool_calls == 1


# --------------------------------------------------------------------------- serialisation


def test_new_fields_are_written_only_when_used() -> None:
    assert "tool_calls" not in Budget(calls=3).model_dump()
    assert Budget(tool_calls=3).model_dump()["tool_calls"] == 3
    assert not Budget(tool_calls=3).unlimited and Budget().unlimited
    assert "tool_calls" not in Usage(calls=1).model_dump()
    assert (Usage(tool_calls=1) + Usage(tool_calls=2)).tool_calls == 3
    llm = CallEvent(node="a", status="ok", n=2)
    assert set(llm.model_dump()) == set(CallEvent.model_fields) - {
        "kind", "tool", "arguments", "output"
    }
    assert "tool_calls" not in NodeSummary(calls=1).model_dump()
    old = {"node": "a", "status": "ok", "n": 1, "max_tokens": 8}  # written before tools
    assert CallEvent.model_validate(old).kind == "llm"
    event = CallEvent(node="a", status="ok", kind="tool", tool="add", arguments={"a": 1})
    assert CallEvent.model_validate_json(event.model_dump_json()) == event


# --------------------------------------------------------------------------- python runner


async def test_python_runs_code_and_answers_with_what_it_printed() -> None:
    ctx = tool_context(python_tool(time_limit=10))
    result = await ctx.call_tool("python", ["print(sum(range(10)))\nprint('done')"])
    assert result.ok and result.value == "45\ndone\n"
    failed = await ctx.call_tool("python", ["print('half')\n1 / 0"])
    assert not failed.ok and "ZeroDivisionError" in (failed.error or "")
    assert "it printed: half" in (failed.error or "")


async def test_python_time_and_memory_limits() -> None:
    ctx = tool_context(python_tool(time_limit=1, memory_mb=128, concurrency=2))
    started = time.monotonic()
    looping, hog = await asyncio.gather(
        ctx.call_tool("python", ["while True:\n    pass"]),
        ctx.call_tool("python", ["x = bytearray(1024 * 1024 * 1024)\nprint('allocated')"]),
    )
    assert not looping.ok and "timed out" in (looping.error or "")
    assert time.monotonic() - started < 8
    assert not hog.ok and "memory limit" in (hog.error or "")


async def test_python_output_is_cut_to_its_limit() -> None:
    ctx = tool_context(python_tool(max_output_chars=10, time_limit=10))
    result = await ctx.call_tool("python", ["print('x' * 10000)"])
    assert result.ok and result.value == "x" * 10


# --------------------------------------------------------------------------- document search

DOCUMENTS = {
    "mariana.md": "# Mariana Trench\n\nThe Mariana Trench is the deepest oceanic trench on "
    "Earth.\n\nIts maximum known depth is about 10,984 metres, at the Challenger Deep.",
    "puerto_rico.txt": "Puerto Rico Trench\n\nThe Puerto Rico Trench lies on the boundary between "
    "the Caribbean Sea and the Atlantic Ocean. Its deepest point is about 8,376 metres deep.",
    "cheetah.txt": "The cheetah is the fastest land animal, running at up to 98 km/h.",
    "falcon.txt": "The peregrine falcon is the fastest bird: in a hunting dive it can pass "
    "320 km/h.\n\nFalcons live on every continent except Antarctica.",
}


@pytest.fixture
def collection(tmp_path: Path) -> Path:
    for name, text in DOCUMENTS.items():
        (tmp_path / name).write_text(text)
    (tmp_path / "ignored.csv").write_text("fastest,falcon,dive,speed")
    return tmp_path


@pytest.mark.parametrize(
    ("query", "title", "phrase"),
    [
        ("depth of the Mariana Trench", "mariana", "10,984 metres"),
        ("Puerto Rico Trench deepest point", "puerto_rico", "8,376"),
        ("peregrine falcon dive speed", "falcon", "320 km/h"),
        ("how fast do cheetahs run", "cheetah", "98 km/h"),
    ],
)
async def test_document_search_ranks_the_passage_that_answers_first(
    collection: Path, query: str, title: str, phrase: str
) -> None:
    ctx = tool_context(document_search_tool(collection, top_k=2))
    result = await ctx.call_tool("document_search", {"query": query})
    assert result.ok and 1 <= len(result.value) <= 2
    best = result.value[0]
    assert best["title"] == title and phrase in best["text"]
    assert best["score"] >= result.value[-1]["score"]


async def test_document_search_reads_json_and_jsonl_collections(tmp_path: Path) -> None:
    listed = tmp_path / "docs.json"
    listed.write_text(json.dumps(["Paris is the capital of France.", "Rome is in Italy."]))
    lines = tmp_path / "docs.jsonl"
    lines.write_text(
        "\n".join(json.dumps({"title": t, "text": x}) for t, x in [
            ("Everest", "Mount Everest is 8,849 metres high."),
            ("K2", "K2 is the second-highest mountain."),
        ])
    )
    capital = document_search_tool(listed, top_k=1)
    mountain = document_search_tool(lines, top_k=1)
    assert (await capital.run(capital.bind(["capital of France"]))).value[0]["title"] == "docs[0]"
    answer = await mountain.run(mountain.bind(["how high is Everest"]))
    assert answer.value[0]["title"] == "Everest"
    assert (await mountain.run(mountain.bind(["zebra"]))).value == []
    with pytest.raises(ValueError, match="does not exist"):
        document_search_tool(tmp_path / "missing")


def test_search_terms_fold_plurals_and_drop_stop_words() -> None:
    assert terms("The Trenches of the cats") == ["trench", "cat"]
    index = DocumentIndex(passages([("a", "aaa\n\nbbb\n\n" + "c" * 25 + "\n\nddd")], 10))
    assert [p.text for p in index.passages] == [
        "aaa\n\nbbb", "c" * 10, "c" * 10, "ccccc\n\nddd"
    ]


# --------------------------------------------------------------------------- tools as data


def test_tools_config_round_trips_through_a_pipeline_yaml(collection: Path) -> None:
    text = f"""
name: with-tools
nodes:
  main: {{type: generate}}
tools:
  calculator: true
  python: {{time_limit: 2, memory_mb: 128}}
  document_search: {{path: {collection}, top_k: 2, latency: 0.5, name: search}}
"""
    pipeline = PipelineConfig.from_yaml(text)
    assert pipeline.tools is not None and pipeline.tools.calculator is not None
    back = PipelineConfig.from_yaml(pipeline.to_yaml())
    assert back == pipeline and back.fingerprint() == pipeline.fingerprint()
    assert "calculator: {}" in pipeline.to_yaml()
    full = PipelineConfig.from_yaml(pipeline.to_yaml(minimal=False))
    assert full == pipeline
    built = pipeline.tools.build()
    assert list(built) == ["calculator", "python", "search"]
    assert built["search"].latency == 0.5


def test_a_pipeline_without_tools_is_written_and_hashed_as_before() -> None:
    plain = PipelineConfig.single(Generate())
    assert "tools" not in plain.to_data() and "tools" not in plain.to_yaml()
    tooled = PipelineConfig.single(Generate(), tools=ToolsConfig(calculator={}))
    assert tooled.fingerprint() != plain.fingerprint()
    single = parse_pipeline({"type": "generate", "tools": {"calculator": True}})
    assert single.tools == ToolsConfig(calculator={})


@pytest.mark.parametrize(
    ("tools", "message"),
    [
        ({"calculater": True}, "tools.calculater"),
        ({"calculator": {"name": "two words"}}, "not an identifier"),
        ({"python": {"time_limit": 0}}, "tools.python.time_limit"),
        ({"document_search": {}}, "tools.document_search.path"),
    ],
)
def test_bad_tools_configs_are_refused_at_load(tools: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_pipeline({"nodes": {"main": {"type": "generate"}}, "tools": tools})


class UsesCalculator(Strategy):
    """A node that asks the calculator (what a tool-calling node does, minimally)."""

    type: Literal["uses_calculator"] = "uses_calculator"
    expression: Annotated[str, Field()] = "6 * 7"

    async def run(self, ctx: NodeContext, inputs: list[Candidate]) -> list[Candidate]:
        result = await ctx.call_tool("calculator", [self.expression])
        return [Candidate(text=f"The answer is {result.value}", answer=str(result.value))]


async def test_a_pipeline_run_gets_the_tools_it_names() -> None:
    runtime = Runtime(backend=ScriptedBackend(answers("x")), tools=ToolRegistry([add]))
    planner = Planner(runtime)
    pipeline = PipelineConfig.single(
        UsesCalculator(), tools=ToolsConfig(calculator={}), budget=Budget(tool_calls=1)
    )
    with_tools = planner.runtime_for(pipeline)
    assert sorted(with_tools.tools) == ["add", "calculator"] and runtime.tools.keys() == {"add"}
    assert with_tools.slots is runtime.slots and planner.runtime_for(pipeline) is with_tools
    [result] = await planner.run_many(pipeline, [PROBLEM])
    assert result.answer == "42" and result.usage.tool_calls == 1
    assert result.trace.by_node()["main"].tool_calls == 1
    row = {"usage": result.usage.model_dump(), "error": None, "correct": True,
           "budget_exhausted": None}
    summary = summarize(pipeline, "d", [row], 1.0)
    assert summary.tool_calls_per_problem == 1.0
    assert "tool_calls_per_problem" not in summarize(
        pipeline, "d", [{**row, "usage": Usage().model_dump()}], 1.0
    ).model_dump()
    clash = PipelineConfig.single(UsesCalculator(), tools=ToolsConfig(calculator={"name": "add"}))
    with pytest.raises(ValueError, match="two tools are named 'add'"):
        await planner.run_many(clash, [PROBLEM])


def test_reports_show_tool_calls_only_when_tools_ran() -> None:
    from itc.bench.report import _results_table
    from itc.bench.results import accuracy_vs_tokens

    def row(config: str, tool_calls: int) -> dict[str, Any]:
        usage = Usage(calls=2, tool_calls=tool_calls).model_dump()
        return {"dataset": "d", "config": config, "fingerprint": "f", "correct": True,
                "usage": usage, "error": None}

    plain = _results_table(accuracy_vs_tokens([row("a", 0)]))
    assert "tool calls" not in plain[0] and plain[0].count("|") == plain[1].count("|")
    tooled = _results_table(accuracy_vs_tokens([row("a", 0), row("b", 3)]))
    assert "tool calls/problem" in tooled[0]
    assert tooled[0].count("|") == tooled[1].count("|") == tooled[-1].count("|")
    assert "| 2.0 | 3.0 |" in tooled[-1]
