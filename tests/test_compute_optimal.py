"""Compute-optimal allocation: probe agreement -> difficulty -> bin -> that bin's strategy, the
probe's samples voting on, table checks at load time, budgets, and the static bound."""

from __future__ import annotations

from pathlib import Path

import pytest

from itc.backends.base import GenerationRequest
from itc.backends.scripted import ScriptedBackend
from itc.config import ConfigError, PipelineConfig, load_pipeline, parse_pipeline
from itc.planner.executor import Planner
from itc.runtime.budget import BudgetExhausted, Ledger
from itc.runtime.context import NodeContext, Runtime
from itc.runtime.trace import Trace
from itc.strategies.allocate import CHOICE, ComputeOptimal
from itc.strategies.generate import Generate
from itc.strategies.particle_filtering import ParticleFiltering
from itc.strategies.self_consistency import SelfConsistency
from itc.types import Budget, Problem

from .helpers import context

EXAMPLE = Path(__file__).parents[1] / "examples" / "compute_optimal.yaml"

# Each bin's strategy asks with its own max_tokens, so the requests say which one ran.
PROBE, EASY, MIDDLE, HARD = 11, 12, 13, 14


def _node(**fields: object) -> ComputeOptimal:
    data: dict[str, object] = {
        "probe": Generate(n=3, max_tokens=PROBE),
        "bins": (0.2, 0.5),
        "table": (
            Generate(n=1, temperature=0.0, max_tokens=EASY),
            SelfConsistency(inner=Generate(n=4, max_tokens=MIDDLE)),
            SelfConsistency(inner=Generate(n=8, max_tokens=HARD)),
        ),
    }
    return ComputeOptimal.model_validate({**data, **fields})


def _by_size(probe: list[str], solve: str = "The answer is 5"):  # type: ignore[no-untyped-def]
    """Probe samples answer `probe[index]`; every later sample says `solve`."""

    def script(request: GenerationRequest, index: int) -> str:
        return probe[index] if request.max_tokens == PROBE else solve

    return script


def test_the_bin_is_read_from_the_edges_a_difficulty_on_an_edge_goes_up() -> None:
    node = _node()
    assert [node.bin_of(d) for d in (0.0, 0.19, 0.2, 1 / 3, 0.5, 2 / 3, 1.0)] == [
        0, 0, 1, 1, 2, 2, 2
    ]


async def test_a_probe_that_agrees_runs_the_easy_row_only() -> None:
    backend = ScriptedBackend(_by_size(["The answer is 4"] * 3))
    ctx = context(backend)
    result = await _node().run(ctx.child("main"), [])
    assert [(r.n, r.max_tokens, r.temperature) for r in backend.requests] == [
        (3, PROBE, 0.7),
        (1, EASY, 0.0),
    ]
    [only] = result
    assert only.answer is None and only.text == "The answer is 5"  # the easy row's sample
    assert only.metadata[CHOICE] == {
        "difficulty": 0.0, "agreement": 1.0, "bin": 0, "strategy": "generate"
    }
    [entry] = ctx.trace.search
    assert entry.node == "main" and "bin 0 of 3, generate" in (entry.note or "")
    assert {e.node for e in ctx.trace.events} == {"main/probe", "main/bin0"}


async def test_a_split_probe_runs_the_hard_row() -> None:
    backend = ScriptedBackend(_by_size(["The answer is 1", "The answer is 2", "no idea"]))
    ctx = context(backend)
    result = await _node().run(ctx.child("main"), [])
    assert [(r.n, r.max_tokens) for r in backend.requests] == [(3, PROBE), (8, HARD)]
    choice = result[0].metadata[CHOICE]
    assert choice["bin"] == 2 and choice["strategy"] == "self_consistency"
    assert choice["difficulty"] == pytest.approx(2 / 3, abs=1e-4)
    # The probe and the solver are different rollouts, so they draw with different seeds.
    assert backend.requests[0].seed != backend.requests[1].seed


async def test_the_probe_samples_vote_in_an_aggregator_row() -> None:
    # Two of three probe samples agree on 7: the middle row samples 4 more, all saying 9.
    backend = ScriptedBackend(
        _by_size(["The answer is 7", "The answer is 7", "The answer is 9"], "The answer is 9")
    )
    ctx = context(backend)
    ranked = await _node().run(ctx.child("main"), [])
    assert [(r.n, r.max_tokens) for r in backend.requests] == [(3, PROBE), (4, MIDDLE)]
    assert [c.answer for c in ranked] == ["9", "7"]
    # 9 holds 5 of 7 votes (4 new + 1 probe), 7 holds the probe's other 2.
    assert ranked[0].scores["vote_share"] == pytest.approx(5 / 7)
    assert ranked[1].scores["vote_share"] == pytest.approx(2 / 7)
    assert len(ranked[0].lineage) == 5 and len(ranked[1].lineage) == 2
    assert all(c.metadata[CHOICE]["bin"] == 1 for c in ranked)


async def test_a_row_that_is_not_an_aggregator_does_not_get_the_probe_samples() -> None:
    backend = ScriptedBackend(_by_size(["The answer is 1", "The answer is 2", "The answer is 3"]))
    node = _node(table=(Generate(max_tokens=EASY), Generate(max_tokens=MIDDLE),
                        Generate(n=2, max_tokens=HARD)))
    result = await node.run(context(backend).child("main"), [])
    assert [c.text for c in result] == ["The answer is 5"] * 2


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"bins": (0.5, 0.2)}, "edges must rise strictly"),
        ({"bins": (0.2, 0.2)}, "edges must rise strictly"),
        ({"bins": (0.0, 0.5)}, r"must lie in \(0, 1\]"),
        ({"bins": (0.5, 1.5)}, r"must lie in \(0, 1\]"),
        ({"bins": (0.5,)}, "1 bin edges make 2 difficulty bins but the table has 3 strategies"),
        ({"table": (Generate(),)}, "2 bin edges make 3 difficulty bins but the table has 1"),
        ({"probe": Generate(n=1)}, "at least 2 probe samples"),
    ],
)
def test_a_table_that_does_not_fit_its_bins_is_refused_at_load_time(
    fields: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        _node(**fields)


def test_a_config_names_the_node_and_builds_table_rows_by_type() -> None:
    with pytest.raises(ConfigError, match=r"nodes\.main: .*table has 2 strategies"):
        parse_pipeline(
            {"type": "compute_optimal", "bins": [0.3, 0.6], "table": ["generate", "generate"]}
        )
    with pytest.raises(ConfigError, match=r"nodes\.main\.table\[1\]\.type: unknown strategy"):
        parse_pipeline({"type": "compute_optimal", "bins": [0.5], "table": ["generate", "nope"]})
    pipeline = load_pipeline(EXAMPLE)
    node = pipeline.nodes["main"]
    assert isinstance(node, ComputeOptimal)
    assert [type(s) for s in node.table] == [Generate, SelfConsistency, ParticleFiltering]
    assert PipelineConfig.from_yaml(pipeline.to_yaml()) == pipeline


async def test_a_refused_probe_stops_before_any_strategy_runs() -> None:
    backend = ScriptedBackend(_by_size(["The answer is 4"] * 3))
    ctx = context(backend, Budget(completion_tokens=2))  # the probe cannot even get 1 each
    with pytest.raises(BudgetExhausted):
        await _node().run(ctx.child("main"), [])
    assert backend.requests == [] and ctx.trace.search == []
    assert [(e.node, e.status) for e in ctx.trace.events] == [("main/probe", "refused")]


async def test_a_refused_row_answers_with_the_probe_vote() -> None:
    backend = ScriptedBackend(_by_size(["The answer is 4", "The answer is 4", "The answer is 6"]))
    ctx = context(backend, Budget(calls=1))  # the probe's one request, nothing more
    node = _node(table=(Generate(), Generate(max_tokens=MIDDLE), Generate()))
    ranked = await node.run(ctx.child("main"), [])
    assert len(backend.requests) == 1
    assert [c.answer for c in ranked] == ["4", "6"]
    assert ranked[0].scores["vote_share"] == pytest.approx(2 / 3)
    choice = ranked[0].metadata[CHOICE]
    assert choice["bin"] == 1 and choice["stop"].startswith("budget: calls")


async def test_the_bound_holds_when_every_sample_runs_to_max_tokens() -> None:
    def long(request: GenerationRequest, index: int) -> str:
        return f"{index} " + "pad " * 500  # cut at max_tokens; the answer is the first word

    node = _node()
    bound = node.worst_case()
    assert bound is not None
    assert bound.completion_tokens == 3 * PROBE + 8 * HARD and bound.calls == 2
    # A split probe picks the costliest row: the bound is reached, not passed.
    backend = ScriptedBackend(long)
    ctx = context(backend)
    await node.run(ctx.child("main"), [])
    assert [e.finish_reasons for e in ctx.trace.events] == [["length"] * 3, ["length"] * 8]
    assert ctx.ledger.spent.completion_tokens == bound.completion_tokens
    assert ctx.ledger.spent.calls == bound.calls
    # An agreeing probe picks the easy row: well under the bound.
    backend = ScriptedBackend(lambda request, index: "4 " + "pad " * 500)
    ctx = context(backend)
    await node.run(ctx.child("main"), [])
    assert ctx.ledger.spent.completion_tokens == 3 * PROBE + EASY < bound.completion_tokens


def test_the_bound_counts_the_probe_samples_as_a_row_s_inputs() -> None:
    from itc.strategies.best_of_n import BestOfN
    from itc.verifiers.judge import LLMJudge

    # A judge scores every candidate it ranks: the probe's 3 and graph inputs' 2 included.
    ranking = BestOfN(inner=Generate(n=2, max_tokens=10), scorer=LLMJudge())
    node = _node(table=(Generate(max_tokens=10), ranking, Generate(max_tokens=10)))
    judge = LLMJudge().worst_case(2 + 2 + 3)
    assert judge is not None
    assert node.worst_case(2) == Generate(n=3, max_tokens=PROBE).worst_case() + (
        Generate(n=2, max_tokens=10).worst_case() + judge
    )
    assert node.worst_case(None) is None  # unknown inputs: the judge's cost is unknown


async def test_the_example_runs_through_the_planner_on_a_scripted_server() -> None:
    pipeline = load_pipeline(EXAMPLE)
    backend = ScriptedBackend(lambda request, index: "3 + 4 = 7. The answer is 7")
    problem = Problem(id="p", prompt="What is 3 + 4?", answer="7")
    result = await Planner(Runtime(backend=backend)).run(pipeline, problem)
    assert result.error is None and result.answer == "7"
    assert result.candidates[0].metadata[CHOICE]["strategy"] == "generate"
    assert [r.n for r in backend.requests] == [3, 1]


REAL = Problem(
    id="apples", prompt="Tom has 3 boxes with 4 apples each. How many apples?", answer="12"
)


@pytest.mark.vllm
async def test_real_compute_optimal_runs_one_problem_within_its_budget(  # type: ignore[no-untyped-def]
    backend,
) -> None:
    # Both rows vote, so whichever bin the real probe lands in, its samples must vote too.
    node = ComputeOptimal(
        probe=Generate(n=3, max_tokens=96, temperature=0.8),
        bins=(0.5,),
        table=(
            SelfConsistency(inner=Generate(n=2, max_tokens=80)),
            SelfConsistency(inner=Generate(n=4, max_tokens=80)),
        ),
    )
    budget = Budget(tokens=4000)
    runtime = Runtime(backend=backend, max_in_flight=8, log_samples=True)
    ctx = NodeContext(REAL, runtime, Ledger(budget), Trace(problem_id=REAL.id))
    result = await node.run(ctx.child("main"), [])
    assert result
    choice = result[0].metadata[CHOICE]
    assert 0.0 <= choice["difficulty"] <= 1.0
    row = choice["bin"]
    assert row == node.bin_of(choice["difficulty"]) and choice["strategy"] == "self_consistency"
    assert all(c.metadata[CHOICE] == choice for c in result)
    ok = [e for e in ctx.trace.events if e.status == "ok"]
    assert [(e.node, e.n) for e in ok] == [("main/probe", 3), (f"main/bin{row}/inner", 2 + 2 * row)]
    # The vote counted the probe's 3 samples along with the row's own.
    voters = [c for c in ctx.trace.candidates if c.node == f"main/bin{row}"]
    assert len(voters) == 3 + 2 + 2 * row
    assert ctx.ledger.spent.total_tokens <= budget.tokens
    bound = node.worst_case()
    assert bound is not None and ctx.ledger.spent.completion_tokens <= bound.completion_tokens
    assert f"bin {row} of 2" in (ctx.trace.search[0].note or "")
