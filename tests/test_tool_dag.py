"""Streaming from the runtime, the tool DAG executor and the tool nodes, with scripted plans
and tools that sleep; and (marker `vllm`) grammar-constrained plans from the bundled model."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from itc.backends.base import (
    Choice,
    GenerationRequest,
    GenerationResult,
    StreamProgress,
    TextDelta,
)
from itc.backends.cache import CachedBackend
from itc.backends.scripted import ScriptedBackend
from itc.config import load_pipeline
from itc.runtime.budget import BudgetExhausted, Ledger
from itc.runtime.context import NodeContext, Runtime
from itc.runtime.tools import Tool, ToolRegistry, tool
from itc.runtime.trace import Trace
from itc.strategies.self_consistency import SelfConsistency
from itc.strategies.tool_dag.node import ToolDAG
from itc.strategies.tool_dag.rounds import ToolRounds
from itc.types import Budget, Candidate, Problem

ROOT = Path(__file__).resolve().parents[1]
PROBLEM = Problem(id="p", prompt="What do the tools say?")


@tool
async def wait(seconds: float, value: Any = None) -> Any:
    """Sleep, then return the value."""
    await asyncio.sleep(seconds)
    return value


@tool
async def fail(reason: str = "broken") -> Any:
    """Always fails."""
    raise RuntimeError(reason)


TOOLS = ToolRegistry([wait, fail])


def planner_script(plan: str | list[str], answer: str | list[str] = "Answer: 42") -> Any:
    """Plans (in turn, when several) for planner calls, answers for joiner calls."""
    plans = [plan] if isinstance(plan, str) else plan
    answers = [answer] if isinstance(answer, str) else answer
    turns = {"plan": 0, "answer": 0}

    def script(request: GenerationRequest, index: int) -> str:
        content = request.messages[-1].content  # type: ignore[index]
        kind = "answer" if "Reply with `Answer: `" in content else "plan"
        pool = answers if kind == "answer" else plans
        turns[kind] += 1
        return pool[min(turns[kind], len(pool)) - 1]

    return script


def backend_for(script: Any, **options: Any) -> ScriptedBackend:
    return ScriptedBackend(script, exact_text=True, **options)


def context(
    backend: ScriptedBackend, tools: ToolRegistry = TOOLS, budget: Budget | None = None
) -> NodeContext:
    runtime = Runtime(backend=backend, tools=tools)
    return NodeContext(PROBLEM, runtime, Ledger(budget or Budget()), Trace(problem_id="p"))


def plans_of(candidate: Candidate, key: str = "tool_dag") -> list[dict[str, Any]]:
    return candidate.metadata[key]["plans"]  # type: ignore[no-any-return]


def prompts(backend: ScriptedBackend, marker: str) -> list[str]:
    contents = [r.messages[-1].content for r in backend.requests]  # type: ignore[index]
    return [c for c in contents if marker in c]


# -- streaming from the runtime -------------------------------------------------------------


async def test_a_stream_gives_text_as_it_is_made_and_is_charged_like_a_call() -> None:
    text = "1. wait(0.1)\n2. join()"
    streamed = context(backend_for(lambda r, i: text, seconds_per_token=0.02))
    arrivals: list[tuple[float, str]] = []
    started = time.monotonic()
    async with streamed.stream(GenerationRequest(prompt="plan please")) as stream:
        async for delta in stream:
            arrivals.append((time.monotonic() - started, delta.text))
    assert "".join(t for _, t in arrivals) == text == stream.result.choices[0].text
    assert len(arrivals) == 4 and arrivals[0][0] < arrivals[-1][0] - 0.04
    plain = context(backend_for(lambda r, i: text))
    await plain.generate(GenerationRequest(prompt="plan please"))
    assert streamed.ledger.spent.model_copy(update={"wall_time": 0}) == plain.ledger.spent
    assert [e.status for e in streamed.trace.events] == ["ok"]


async def test_leaving_a_stream_early_cancels_the_call_and_charges_what_it_made() -> None:
    backend = backend_for(lambda r, i: "one two three four five six", seconds_per_token=0.02)
    ctx = context(backend)
    async with ctx.stream(GenerationRequest(prompt="go", max_tokens=50)) as stream:
        async for _ in stream:
            break
    assert backend.cancelled == 1
    [event] = ctx.trace.events
    assert event.status == "cancelled" and 1 <= event.completion_tokens < 6
    assert ctx.ledger.spent.completion_tokens == event.completion_tokens
    assert asyncio.all_tasks() == {asyncio.current_task()}


async def test_a_replayed_answer_comes_whole_at_the_end(tmp_path: Path) -> None:
    inner = backend_for(lambda r, i: "1. wait(0)\n2. join()")
    cached = CachedBackend(inner, tmp_path / "cache.sqlite")
    ctx = NodeContext(PROBLEM, Runtime(backend=cached), Ledger(Budget()), Trace(problem_id="p"))
    request = GenerationRequest(prompt="go", temperature=0.0)
    for _ in range(2):
        async with ctx.stream(request) as stream:
            deltas = [d async for d in stream]
        assert "".join(d.text for d in deltas) == "1. wait(0)\n2. join()"
    assert cached.hits == 1 and len(deltas) == 1


class _Disagreeing(ScriptedBackend):
    async def generate(
        self, request: GenerationRequest, progress: StreamProgress | None = None
    ) -> GenerationResult:
        assert progress is not None
        progress.attempts += 1
        progress.emit(0, "streamed")
        return GenerationResult(
            choices=(Choice(index=0, text="final", completion_tokens=1),),
            prompt_tokens=1,
            completion_tokens=1,
        )


async def test_a_final_text_that_disagrees_with_the_stream_starts_the_choice_over() -> None:
    ctx = context(_Disagreeing(lambda r, i: ""))
    async with ctx.stream(GenerationRequest(prompt="go")) as stream:
        deltas = [d async for d in stream]
    assert deltas == [TextDelta(0, "streamed", 1), TextDelta(0, "final", 2)]


# -- the executor, through the node ----------------------------------------------------------

PARALLEL = '1. wait(0.3, 1)\n2. wait(0.3, 2)\n3. wait(0.3, 3)\n4. wait(0.1, "$1 $2 $3")\n5. join()'


@pytest.mark.parametrize("stream", [False, True])
async def test_independent_calls_overlap_and_dependent_ones_wait(stream: bool) -> None:
    ctx = context(backend_for(planner_script(PARALLEL)))
    started = time.monotonic()
    [answer] = await ToolDAG(stream=stream).run(ctx, [])
    elapsed = time.monotonic() - started
    assert answer.text == "42"
    seen = {o["step"]: o for o in plans_of(answer)[0]["observations"]}
    first_three = [seen[n] for n in (1, 2, 3)]
    assert max(o["started"] for o in first_three) - min(o["started"] for o in first_three) < 0.1
    assert seen[4]["started"] >= max(o["finished"] for o in first_three)
    assert seen[4]["value"] == "1 2 3"
    assert elapsed < 0.7  # 0.3 + 0.1 with overlap; 1.0 one after another
    assert ctx.ledger.spent.tool_calls == 4


async def test_a_call_starts_before_the_plans_last_line_arrives() -> None:
    plan = "1. wait(0.05, 1)\n2. wait(0.05, 2)\n3. join()"
    # The stream is held back 0.5 s before its join line.
    backend = backend_for(
        planner_script(plan), token_delay=lambda at, word: 0.5 if word.startswith("3.") else 0
    )
    [answer] = await ToolDAG().run(context(backend), [])
    [run] = plans_of(answer)
    assert run["plan_done"] - run["first_call"] > 0.4
    assert all(o["finished"] < run["plan_done"] for o in run["observations"])


async def test_references_keep_their_types_through_the_executor() -> None:
    plan = (
        '1. wait(0, [1, 2])\n2. wait(0, {"k": "v"})\n3. wait(0, 3)\n'
        '4. wait(0, [$1, $3, {"d": $2}])\n5. wait(0, "$3 and $1")\n6. wait(0, $3)\n7. join()'
    )
    [answer] = await ToolDAG(max_calls=6).run(context(backend_for(planner_script(plan))), [])
    values = [o["value"] for o in plans_of(answer)[0]["observations"]]
    assert values[3] == [[1, 2], 3, {"d": {"k": "v"}}]
    assert values[4] == "3 and [1, 2]"
    assert values[5] == 3 and isinstance(values[5], int)


async def test_a_failed_call_is_an_observation_and_its_dependents_are_skipped() -> None:
    plan = '1. fail("no network")\n2. wait(0, $1)\n3. wait(0, 5)\n4. join()'
    backend = backend_for(planner_script(plan))
    [answer] = await ToolDAG().run(context(backend), [])
    seen = plans_of(answer)[0]["observations"]
    assert seen[0]["status"] == "error" and "no network" in seen[0]["error"]
    assert seen[1]["status"] == "skipped" and seen[1]["error"] == "not run: $1 failed"
    assert seen[1]["started"] is None
    assert seen[2]["value"] == 5
    [joiner] = prompts(backend, "Reply with")
    assert "$2 skipped: not run: $1 failed" in joiner and "$3 = 5" in joiner


async def test_a_tool_call_the_budget_refuses_is_an_observation() -> None:
    plan = "1. wait(0, 1)\n2. wait(0.05, 2)\n3. join()"
    ctx = context(backend_for(planner_script(plan)), budget=Budget(tool_calls=1))
    [answer] = await ToolDAG().run(ctx, [])
    statuses = sorted(o["status"] for o in plans_of(answer)[0]["observations"])
    assert statuses == ["ok", "refused"]
    assert ctx.ledger.spent.tool_calls == 1 and answer.text == "42"


async def test_the_joiner_may_ask_for_a_new_plan_at_most_replans_times() -> None:
    backend = backend_for(planner_script("1. wait(0, 1)\n2. join()", "Replan: need more"))
    [answer] = await ToolDAG(replans=1).run(context(backend), [])
    assert len(prompts(backend, "Write a plan")) == 2
    joiner_requests = [r for r in backend.requests if "Reply with" in r.messages[-1].content]  # type: ignore[index]
    assert len(joiner_requests) == 2
    grammars = [r.structured_outputs.grammar for r in joiner_requests]  # type: ignore[union-attr]
    assert "Replan" in grammars[0] and "Replan" not in grammars[1]
    assert "Not enough to answer: need more" in prompts(backend, "Write a plan")[1]
    assert [p["replan"] for p in plans_of(answer)] == ["need more", None]
    assert answer.text == "need more"  # the last joiner could only answer
    backend = backend_for(planner_script("1. wait(0, 1)\n2. join()", "Replan: need more"))
    await ToolDAG(replans=0).run(context(backend), [])
    assert len(backend.requests) == 2


async def test_a_plan_that_fails_a_check_is_sent_back_with_the_problem() -> None:
    plans = ["1. nope(1)\n2. join()", "1. wait(0, 7)\n2. join()"]
    backend = backend_for(planner_script(plans))
    [answer] = await ToolDAG(constrained=False).run(context(backend), [])
    second = prompts(backend, "Write a plan")[1]
    assert "unknown tool 'nope'; the tools are: fail, wait" in second
    runs = plans_of(answer)
    assert "unknown tool" in runs[0]["error"] and runs[1]["error"] is None
    assert [o["value"] for o in runs[1]["observations"]] == [7]
    assert backend.requests[0].structured_outputs is None


async def test_without_repairs_left_the_valid_lines_run_and_the_joiner_answers() -> None:
    backend = backend_for(planner_script("1. wait(0, 1)\n2. wait(0, $3)\n3. join()"))
    [answer] = await ToolDAG(constrained=False, repairs=0).run(context(backend), [])
    [run] = plans_of(answer)
    assert "uses $3, a later line" in run["error"]
    assert [o["value"] for o in run["observations"]] == [1]
    assert "The plan could not run whole" in prompts(backend, "Reply with")[0]


async def test_cancelling_the_node_cancels_every_task() -> None:
    began: list[str] = []
    both_began = asyncio.Event()

    @tool
    async def slow(label: str) -> str:
        """Sleeps long."""
        began.append(label)
        if len(began) == 2:
            both_began.set()
        await asyncio.sleep(30)
        return label

    plan = '1. slow("a")\n2. slow("b")\n3. slow("$1$2")\n4. join()'
    ctx = context(backend_for(planner_script(plan)), tools=ToolRegistry([slow]))
    node = asyncio.create_task(ToolDAG().run(ctx, []))
    await asyncio.wait_for(both_began.wait(), 5)
    node.cancel()
    with pytest.raises(asyncio.CancelledError):
        await node
    assert asyncio.all_tasks() == {asyncio.current_task()}
    tool_events = [e for e in ctx.trace.events if e.kind == "tool"]
    assert sorted(e.status for e in tool_events) == ["cancelled", "cancelled"]
    assert began == ["a", "b"]


async def test_a_refused_planner_call_ends_the_node_with_the_refusal() -> None:
    ctx = context(backend_for(planner_script("1. wait(0, 1)\n2. join()")), budget=Budget(calls=1))
    with pytest.raises(BudgetExhausted):  # the plan ran, the joiner's call does not fit
        await ToolDAG().run(ctx, [])
    assert asyncio.all_tasks() == {asyncio.current_task()}


# -- composition, rounds, config -------------------------------------------------------------


async def test_a_tool_dag_composes_with_self_consistency() -> None:
    backend = backend_for(
        planner_script("1. wait(0.1, 5)\n2. join()", ["Answer: 5", "Answer: 7", "Answer: 5"])
    )
    ctx = context(backend)
    node = SelfConsistency(inner=ToolDAG(temperature=0.7), repeats=3)
    ranked = await node.run(ctx, [])
    assert ranked[0].answer == "5" and ranked[0].scores["vote_share"] == pytest.approx(2 / 3)
    seeds = {r.seed for r in backend.requests if "Write a plan" in r.messages[-1].content}  # type: ignore[index]
    assert len(seeds) == 3  # each run its own rollout
    assert ctx.ledger.spent.tool_calls == 3
    assert node.worst_case() == ToolDAG().worst_case() * 3


def rounds_script(batches: list[str], answer: str = "Answer: 9") -> Any:
    turn = iter(range(100))

    def script(request: GenerationRequest, index: int) -> str:
        content = request.messages[-1].content  # type: ignore[index]
        if "Reply with" in content:
            return answer
        return batches[min(next(turn), len(batches) - 1)]

    return script


async def test_rounds_run_each_batch_together_and_answer_when_the_model_does() -> None:
    batch = "1. wait(0.3, 1)\n2. wait(0.3, 2)\n3. join()"
    backend = backend_for(rounds_script([batch, "Answer: 3"]))
    started = time.monotonic()
    [answer] = await ToolRounds(rounds=3).run(context(backend), [])
    assert time.monotonic() - started < 0.55 and answer.text == "3"
    first, second = plans_of(answer, "tool_rounds")
    assert [o["value"] for o in first["observations"]] == [1, 2]
    assert second["answer"] == "3"
    round_two = backend.requests[1].messages[-1].content  # type: ignore[index]
    assert "Round 1:\nwait(0.3, 1) = 1\nwait(0.3, 2) = 2" in round_two
    assert "Answer: " not in backend.requests[0].structured_outputs.grammar  # type: ignore[union-attr]
    assert 'line1 | "Answer: "' in backend.requests[1].structured_outputs.grammar  # type: ignore[union-attr]


async def test_rounds_are_bounded_and_a_last_call_must_answer() -> None:
    backend = backend_for(rounds_script(["1. wait(0, 1)\n2. join()"]))
    [answer] = await ToolRounds(rounds=2).run(context(backend), [])
    assert len(backend.requests) == 3 and answer.text == "9"
    last = backend.requests[-1].structured_outputs.grammar  # type: ignore[union-attr]
    assert last.startswith('root ::= "Answer: "') and "Replan" not in last
    assert ToolRounds(rounds=2).worst_case().calls == 3


def test_the_example_pipeline_loads_and_is_bounded() -> None:
    pipeline = load_pipeline(ROOT / "examples" / "tool_dag.yaml")
    assert pipeline.worst_case() is not None
    assert load_pipeline(ROOT / "examples" / "tool_rounds.yaml").worst_case() is not None


# -- the real server -------------------------------------------------------------------------

QUESTIONS = [
    "What is 17 times 23 plus 5?",
    "A shop sells pens at 3 dollars each. How much do 14 pens cost?",
    "What is the square root of 144 plus 10?",
    "How many minutes are in 3 days?",
    "If a train travels 60 km per hour for 5 hours, how far does it go?",
    "What is 15% of 200?",
    "Add 1234 and 4321, then divide by 5.",
    "What is 2 to the power of 10 minus 24?",
    "A rectangle is 7 m by 9 m. What are its area and its perimeter?",
    "Sam has 45 apples and gives away 17. How many are left?",
    "What is the average of 10, 20 and 60?",
    "How many seconds are in 2 hours?",
    "What is 999 divided by 3?",
    "Compute (5 + 7) * (3 - 1).",
    "What is 100 minus 37 minus 21?",
    "A dozen eggs costs 4 dollars. How much do 5 dozen cost?",
    "What is 12 squared minus 12?",
    "Split 360 degrees into 8 equal parts: how big is each?",
    "What is 7 factorial divided by 5 factorial?",
    "How many legs do 13 spiders and 4 cats have?",
]


def _real_tools() -> ToolRegistry:
    try:
        from itc.tools.calculator import calculator_tool
    except ImportError:  # pragma: no cover - the built-in calculator is not there yet
        return ToolRegistry([wait])
    built: Tool = calculator_tool()
    return ToolRegistry([built])


@pytest.mark.vllm
async def test_grammar_constrained_plans_from_the_bundled_model_always_parse(backend) -> None:  # type: ignore[no-untyped-def]
    runtime = Runtime(backend=backend, tools=_real_tools())
    node = ToolDAG(repairs=0, replans=0)
    for number, question in enumerate(QUESTIONS):
        problem = Problem(id=f"q{number}", prompt=question)
        ctx = NodeContext(problem, runtime, Ledger(Budget()), Trace(problem_id=problem.id))
        [answer] = await node.run(ctx, [])
        [run] = plans_of(answer)
        assert run["error"] is None, (question, run["text"])
        assert run["calls"] and len(run["observations"]) == len(run["calls"]), run["text"]
        assert run["first_call"] is not None and run["first_call"] < run["plan_done"]
        joiner = [e for e in ctx.trace.events if e.node == "joiner"]
        assert [e.status for e in joiner] == ["ok"], question
        assert answer.text.strip(), question


async def test_best_of_n_picks_among_tool_dags_of_a_pipeline_graph() -> None:
    from itc.config import parse_pipeline
    from itc.planner.executor import Planner

    backend = backend_for(
        planner_script("1. wait(0.05, 7)\n2. join()", ["Answer: 3 + 4 = 8", "Answer: 3 + 4 = 7"])
    )
    pipeline = parse_pipeline({
        "name": "two-dags-then-pick",
        "nodes": {
            "cold": {"type": "tool_dag", "temperature": 0.2},
            "hot": {"type": "tool_dag", "temperature": 1.0},
            "pick": {"type": "best_of_n", "inputs": ["cold", "hot"], "scorer": "arithmetic_check"},
        },
    })
    result = await Planner(Runtime(backend=backend, tools=TOOLS)).run(
        pipeline, Problem(id="p", prompt="What is three plus four?", answer="7")
    )
    assert result.answer == "7"  # the joiner answer whose equation holds
    assert result.usage.tool_calls == 2  # one plan line each, both DAGs ran


async def test_search_explores_tool_dag_configurations() -> None:
    from itc.bench.datasets.base import Dataset
    from itc.search.space import parse_space
    from itc.search.study import search

    space = parse_space({
        "name": "dags",
        "fixed": {"answer": "math", "tools": {"calculator": True}},
        "pipeline": {"type": "tool_dag", "max_calls": "$calls", "replans": "$replans"},
        "params": {"calls": {"values": [2, 4]}, "replans": {"values": [0, 1]}},
    })
    data = Dataset("sums", tuple(
        Problem(id=f"s{i}", prompt=f"What is 3 + 4? ({i})", answer="7") for i in range(3)
    ))
    backend = backend_for(planner_script('1. calculator("3 + 4")\n2. join()', "Answer: 7"))
    result = await search(space, data, backend, budget=2000, trials=3, sample_size=3, top=0,
                          poll=0.01, math_verify=False, anytime=True)
    done = [t for t in result.study.trials if "accuracy" in t.user_attrs]
    assert len(done) == 3 and all(t.user_attrs["accuracy"] == 1.0 for t in done)
    assert result.best is not None and result.best.tools is not None
