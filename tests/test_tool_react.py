"""The sequential tool baseline (ReAct), with a scripted model and tools that sleep; and
(marker `vllm`) grammar-constrained turns from the bundled model."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from itc.backends.base import GenerationRequest
from itc.backends.scripted import ScriptedBackend
from itc.config import load_pipeline
from itc.runtime.budget import BudgetExhausted, Ledger
from itc.runtime.context import NodeContext, Runtime
from itc.runtime.tools import ToolRegistry
from itc.runtime.trace import Trace
from itc.strategies.tool_dag.plan import PlanError
from itc.strategies.tool_dag.react import ToolReact, read_turn
from itc.tools.calculator import calculator_tool
from itc.types import Budget, Candidate, Problem
from tests.test_tool_dag import TOOLS

ROOT = Path(__file__).resolve().parents[1]
PROBLEM = Problem(id="p", prompt="What do the tools say?")


def turns_script(turns: list[str], answer: str = "Answer: 9") -> Any:
    """The turns in order (the last repeated), and `answer` for the closing call."""
    taken = iter(range(1000))

    def script(request: GenerationRequest, index: int) -> str:
        if "Reply with `Answer: `" in request.messages[-1].content:  # type: ignore[index]
            return answer
        return turns[min(next(taken), len(turns) - 1)]

    return script


def context(script: Any, budget: Budget | None = None) -> tuple[NodeContext, ScriptedBackend]:
    backend = ScriptedBackend(script, exact_text=True)
    runtime = Runtime(backend=backend, tools=TOOLS)
    ctx = NodeContext(PROBLEM, runtime, Ledger(budget or Budget()), Trace(problem_id="p"))
    return ctx, backend


def turns_of(candidate: Candidate) -> list[dict[str, Any]]:
    return candidate.metadata["tool_react"]["plans"]  # type: ignore[no-any-return]


def contents(backend: ScriptedBackend) -> list[str]:
    return [r.messages[-1].content for r in backend.requests]  # type: ignore[index]


async def test_one_call_a_turn_in_order_each_result_shown_to_the_next_turn() -> None:
    script = turns_script(["Action: wait(0.2, 1)", 'Action: wait(0.2, "two")', "Answer: 3"])
    ctx, backend = context(script)
    started = time.monotonic()
    [answer] = await ToolReact(max_turns=4).run(ctx, [])
    assert time.monotonic() - started >= 0.4  # no call starts before the one before it ended
    assert answer.text == "3" and len(backend.requests) == 3
    first, second, third = turns_of(answer)
    assert first["calls"] == ["wait(0.2, 1)"] and second["calls"] == ['wait(0.2, "two")']
    assert [o["value"] for o in first["observations"] + second["observations"]] == [1, "two"]
    assert second["observations"][0]["started"] >= first["observations"][0]["finished"]
    assert third["answer"] == "3" and third["calls"] == []
    prompts = contents(backend)
    assert "Observation" not in prompts[0]
    assert "Action: wait(0.2, 1)\nObservation: 1\n" in prompts[1]
    assert prompts[2].endswith(
        'Action: wait(0.2, 1)\nObservation: 1\nAction: wait(0.2, "two")\nObservation: two\n'
    )
    assert ctx.ledger.spent.tool_calls == 2 and ctx.ledger.spent.calls == 3


async def test_turns_are_bounded_and_a_last_call_answers() -> None:
    ctx, backend = context(turns_script(["Action: wait(0, 1)"]))
    node = ToolReact(max_turns=3)
    [answer] = await node.run(ctx, [])
    assert len(backend.requests) == 4 and answer.text == "9"
    assert len(turns_of(answer)) == 3 and ctx.ledger.spent.tool_calls == 3
    last = backend.requests[-1]
    assert "Observation: 1" in last.messages[-1].content  # type: ignore[index]
    assert last.structured_outputs.grammar.startswith('root ::= "Answer: "')  # type: ignore[union-attr]
    assert node.worst_case().calls == 4
    spent = ctx.ledger.spent.completion_tokens
    assert spent <= node.worst_case().completion_tokens


async def test_each_turn_is_decoded_with_a_grammar_of_one_call_or_then_an_answer() -> None:
    ctx, backend = context(turns_script(["Action: wait(0, 1)", "Answer: 5"]))
    [answer] = await ToolReact().run(ctx, [])
    assert answer.text == "5"
    first, second = (r.structured_outputs.grammar for r in backend.requests)  # type: ignore[union-attr]
    assert first.splitlines()[0] == 'root ::= "Action: " call_0'  # the first turn calls a tool
    assert second.startswith('root ::= "Action: " call_0 | "Answer: "')
    assert "$" not in second.split("char ::=")[0]  # no references anywhere


async def test_a_tool_error_is_an_observation_and_the_turns_go_on() -> None:
    script = turns_script(['Action: fail("no network")', "Action: wait(0, 2)", "Answer: 2"])
    ctx, backend = context(script)
    [answer] = await ToolReact().run(ctx, [])
    first = turns_of(answer)[0]["observations"][0]
    assert first["status"] == "error" and "no network" in first["error"]
    assert "Observation: error: RuntimeError: no network" in contents(backend)[1]
    assert answer.text == "2"


async def test_a_turn_that_cannot_run_is_an_observation_with_the_problem() -> None:
    script = turns_script(["Thinking...\nAction: nope(1)", "Action: wait(0, 4)\nObservation: x"])
    ctx, backend = context(script)
    [answer] = await ToolReact(constrained=False, max_turns=2).run(ctx, [])
    bad, good = turns_of(answer)
    assert "unknown tool 'nope'" in bad["error"] and bad["observations"] == []
    assert "Action: nope(1)\nObservation: error: unknown tool 'nope'" in contents(backend)[1]
    assert [o["value"] for o in good["observations"]] == [4]
    assert backend.requests[0].structured_outputs is None
    assert backend.requests[0].stop == ("\nObservation",)


def test_reading_a_turn() -> None:
    assert read_turn("Answer:  Paris ", TOOLS) == "Paris"
    call = read_turn("Thought: wait first\nAction: wait(1, value=[1, 2])", TOOLS)
    assert not isinstance(call, str)
    assert (call.tool, call.arguments, call.text) == (
        "wait",
        {"seconds": 1, "value": [1, 2]},
        "wait(1, value=[1, 2])",
    )
    with pytest.raises(PlanError, match="cannot use"):
        read_turn('Action: wait(0, "$1")', TOOLS)
    for wrong in ("", "I think 4", "join()"):
        with pytest.raises(PlanError, match="expected `Action: tool"):
            read_turn(wrong, TOOLS)
    with pytest.raises(PlanError, match="seconds"):
        read_turn('Action: wait("soon")', TOOLS)


async def test_a_refused_tool_call_ends_the_turns_and_the_last_call_answers() -> None:
    ctx, backend = context(turns_script(["Action: wait(0, 1)"]), budget=Budget(tool_calls=1))
    [answer] = await ToolReact(max_turns=5).run(ctx, [])
    statuses = [t["observations"][0]["status"] for t in turns_of(answer)]
    assert statuses == ["ok", "refused"] and answer.text == "9"
    assert ctx.ledger.spent.tool_calls == 1 and len(backend.requests) == 3


async def test_a_refused_llm_call_ends_the_node_with_the_refusal() -> None:
    ctx, _ = context(turns_script(["Action: wait(0, 1)"]), budget=Budget(calls=2))
    with pytest.raises(BudgetExhausted):
        await ToolReact(max_turns=3).run(ctx, [])
    assert ctx.ledger.spent.calls == 2
    assert asyncio.all_tasks() == {asyncio.current_task()}


async def test_calls_and_tools_are_traced_under_their_own_names() -> None:
    ctx, _ = context(turns_script(["Action: wait(0, 1)", "Answer: 1"]))
    await ToolReact().run(ctx, [])
    assert [(e.node, e.kind) for e in ctx.trace.events] == [
        ("turn1", "llm"),
        ("tools", "tool"),
        ("turn2", "llm"),
    ]


def test_the_example_pipeline_loads_and_is_bounded() -> None:
    pipeline = load_pipeline(ROOT / "examples" / "tool_react.yaml")
    assert pipeline.worst_case() is not None


# -- the real server -------------------------------------------------------------------------

QUESTIONS = [
    "What is 17 times 23 plus 5?",
    "How many minutes are in 3 days?",
    "What is 15% of 200?",
    "A rectangle is 7 m by 9 m. What are its area and its perimeter?",
    "How many legs do 13 spiders and 4 cats have?",
    "What is 2 to the power of 10 minus 24?",
]


@pytest.mark.vllm
async def test_grammar_constrained_turns_from_the_bundled_model_always_parse(backend) -> None:  # type: ignore[no-untyped-def]
    runtime = Runtime(backend=backend, tools=ToolRegistry([calculator_tool()]))
    node = ToolReact(max_turns=3)
    for number, question in enumerate(QUESTIONS):
        problem = Problem(id=f"q{number}", prompt=question)
        ctx = NodeContext(problem, runtime, Ledger(Budget()), Trace(problem_id=problem.id))
        [answer] = await node.run(ctx, [])
        turns = turns_of(answer)
        assert all(t["error"] is None for t in turns), [t["text"] for t in turns]
        assert turns[0]["calls"], turns[0]["text"]  # the first turn always calls a tool
        assert all(len(t["calls"]) + (t["answer"] is not None) == 1 for t in turns), turns
        assert all(len(t["observations"]) == len(t["calls"]) for t in turns)
        assert [e.status for e in ctx.trace.events if e.kind == "llm"] == ["ok"] * len(
            [e for e in ctx.trace.events if e.kind == "llm"]
        )
        assert answer.text.strip(), question
