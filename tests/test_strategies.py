"""Strategy logic on the scripted backend: votes, early stops, ranking, graphs."""

from __future__ import annotations

import pytest

from itc.backends.scripted import ScriptedBackend
from itc.config import PipelineConfig
from itc.planner.executor import Planner
from itc.runtime.context import Runtime
from itc.strategies.best_of_n import BestOfN
from itc.strategies.generate import Generate
from itc.strategies.self_consistency import EarlyStop, SelfConsistency, Tally
from itc.types import Budget, Candidate, Problem
from itc.verifiers.judge import LLMJudge, p_yes
from tests.helpers import PROBLEM, answers, context


def test_tally_orders_by_weight_then_first_seen() -> None:
    tally = Tally()
    for key, weight in [("4", 1.0), ("5", 1.0), ("5", 0.5), ("4", 1.0), (None, 1.0)]:
        tally.add(key, Candidate(text=str(key)), weight)
    assert tally.standings() == [("4", 2.0), ("5", 1.5)]
    assert tally.votes == 5


def test_tally_decided_only_when_leader_cannot_be_overtaken() -> None:
    tally = Tally()
    for key in ["4", "4", "4", "5"]:
        tally.add(key, Candidate(text=key), 1.0)
    rule = EarlyStop(min_votes=3)
    assert tally.decided(remaining_weight=1.0, rule=rule)
    assert not tally.decided(remaining_weight=2.0, rule=rule)
    assert tally.decided(remaining_weight=9.0, rule=EarlyStop(min_votes=3, agreement=0.75))
    assert not tally.decided(remaining_weight=0.0, rule=EarlyStop(min_votes=5))


async def test_self_consistency_majority_over_equivalent_answers() -> None:
    backend = ScriptedBackend(
        answers("so the answer is 4", "The answer is 5.", "#### 4.0", "I think 8/2", "7")
    )
    node = SelfConsistency(inner=Generate(n=5))
    ranked = await node.run(context(backend), [])
    assert ranked[0].answer in {"4", "4.0", "8/2"}
    assert ranked[0].scores["vote_share"] == pytest.approx(3 / 5)
    assert len(ranked[0].lineage) == 3
    assert [c.scores["vote_share"] for c in ranked[1:]] == [pytest.approx(0.2)] * 2
    assert len(backend.requests) == 1 and backend.requests[0].n == 5


async def test_weighted_vote_can_overturn_the_majority() -> None:
    backend = ScriptedBackend(answers("answer is 1", "answer is 1", "answer is 2"))

    class Favour2(SelfCertaintyLike):
        pass

    node = SelfConsistency(inner=Generate(n=3), scorer=Favour2())
    ranked = await node.run(context(backend), [])
    assert ranked[0].answer == "2"


async def test_early_stop_cancels_outstanding_samples_and_saves_tokens() -> None:
    backend = ScriptedBackend(
        answers(" ".join(["step"] * 40) + " answer is 4"), seconds_per_token=0.002
    )
    early = SelfConsistency(inner=Generate(n=1), repeats=12, early_stop=EarlyStop(min_votes=3))
    ctx = context(backend, max_in_flight=3)
    ranked = await early.run(ctx, [])
    assert ranked[0].answer == "4"
    # 12 unanimous samples: after 7 agree, the 5 left cannot overturn it.
    finished = [e for e in ctx.trace.events if e.status == "ok"]
    cancelled = [e for e in ctx.trace.events if e.status == "cancelled"]
    assert len(finished) < 12 and len(finished) >= 7
    assert len(finished) + len(cancelled) <= 12
    assert ctx.ledger.spent.completion_tokens < 12 * 43


async def test_early_stop_over_one_n_sample_request_samples_one_at_a_time() -> None:
    backend = ScriptedBackend(
        answers(" ".join(["step"] * 40) + " answer is 4"), seconds_per_token=0.002
    )
    early = SelfConsistency(inner=Generate(n=12), early_stop=EarlyStop(min_votes=3))
    ctx = context(backend, max_in_flight=3)
    ranked = await early.run(ctx, [])
    assert ranked[0].answer == "4"
    assert {e.n for e in ctx.trace.events} == {1}
    finished = [e for e in ctx.trace.events if e.status == "ok"]
    assert 7 <= len(finished) < 12 and ctx.ledger.spent.completion_tokens < 12 * 43
    # Each run has its own seed, as 12 repeats of n=1 would.
    seeds = {r.seed for r in backend.requests}
    assert len(seeds) == len(backend.requests)
    # Without an early stop the n samples stay one request.
    plain = context(ScriptedBackend(answers("4")))
    await SelfConsistency(inner=Generate(n=12)).run(plain, [])
    assert [e.n for e in plain.trace.events] == [12]


async def test_best_of_n_keeps_highest_scores() -> None:
    backend = ScriptedBackend(answers("a", "b", "c"))

    node = BestOfN(inner=Generate(n=3), scorer=ByLength(), keep=2)
    backend.script = answers("one", "one two three", "one two")
    ranked = await node.run(context(backend), [])
    assert [c.text for c in ranked] == ["one two three", "one two"]
    assert ranked[0].scores["by_length"] > ranked[1].scores["by_length"]


def test_p_yes_pools_variants_and_bounds_missing_side() -> None:
    assert p_yes({"Yes": -0.1, " yes": -3.0, "No": -2.5}) > 0.9
    assert p_yes({"No": -0.05, "Maybe": -4.0}) < 0.05
    assert p_yes({"Hmm": -0.1}) == 0.5
    assert 0.0 <= p_yes({"Yes": -0.7, "No": -0.7}) == pytest.approx(0.5)


async def test_llm_judge_scores_through_the_planner() -> None:
    backend = ScriptedBackend(answers("Yes"))
    ctx = context(backend)
    scores = await LLMJudge().score(ctx, [Candidate(text="4"), Candidate(text="5")])
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert all(r.max_tokens == 1 and r.structured_outputs for r in backend.requests)


async def test_graph_pipeline_generate_rank_vote_and_traces() -> None:
    backend = ScriptedBackend(answers("answer is 3", "answer is 4. And more words", "answer is 4"))
    pipeline = PipelineConfig(
        nodes={
            "gen": Generate(n=6),
            "rank": BestOfN(inner=None, scorer=ByLength(), keep=4, inputs=("gen",)),
            "vote": SelfConsistency(inner=None, inputs=("rank",)),
        }
    )
    planner = Planner(Runtime(backend=backend))
    problems = [PROBLEM, Problem(id="p2", prompt="again ?")]
    seen: list[str] = []
    results = await planner.run_many(
        pipeline, problems, on_result=lambda r: seen.append(r.problem_id)
    )
    assert [r.problem_id for r in results] == ["p1", "p2"] and sorted(seen) == ["p1", "p2"]
    assert results[0].answer == "4"
    nodes = results[0].trace.by_node()
    assert nodes["gen"].calls == 1 and "rank" not in nodes
    assert results[0].usage.calls == 1


async def test_budget_exhaustion_is_reported_not_raised() -> None:
    backend = ScriptedBackend(answers("answer is 4"))
    pipeline = PipelineConfig.single(Generate(n=1))
    result = await Planner(Runtime(backend=backend)).run(pipeline, PROBLEM, Budget(tokens=3))
    assert result.budget_exhausted == "tokens" and result.answer is None
    assert backend.requests == []


# -- small scorers used above ------------------------------------------------------------

from typing import Literal  # noqa: E402

from itc.nodes import Scorer  # noqa: E402


class ByLength(Scorer):
    type: Literal["by_length"] = "by_length"

    async def score(self, ctx, candidates):  # type: ignore[no-untyped-def]
        return [len(c.text.split()) / 10 for c in candidates]


class SelfCertaintyLike(Scorer):
    type: Literal["favour2"] = "favour2"

    async def score(self, ctx, candidates):  # type: ignore[no-untyped-def]
        return [0.9 if "2" in c.text else 0.3 for c in candidates]


def test_graph_inputs_replace_the_default_sampler() -> None:
    from itc.config import parse_pipeline

    pipeline = parse_pipeline(
        {
            "nodes": {
                "gen": {"type": "generate", "n": 3},
                "vote": {"type": "self_consistency", "inputs": ["gen"]},
                "rank": {"type": "best_of_n", "inputs": ["gen"]},
                "out": {"type": "best_of_n", "inputs": ["vote", "rank"], "keep": 2},
            }
        }
    )
    assert [pipeline.nodes[n].inner for n in ("vote", "rank", "out")] == [None, None, None]
    # Without inputs the defaults stay: a vote over 8 samples, a best of 4.
    assert SelfConsistency().inner == Generate(n=8) and BestOfN().inner == Generate(n=4)


async def test_a_vote_over_its_inputs_sends_no_extra_request() -> None:
    backend = ScriptedBackend(answers("4", "4", "5"))
    pipeline = PipelineConfig(
        nodes={"gen": Generate(n=3), "vote": SelfConsistency(inputs=("gen",))}
    )
    result = await Planner(Runtime(backend=backend)).run(pipeline, PROBLEM)
    assert len(backend.requests) == 1 and result.answer == "4"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            {"type": "best_of_n", "inner": None},
            "nodes.main: Value error, needs an `inner` strategy or graph `inputs`",
        ),
        (
            {"type": "generate", "template": "Solve: {questoin}"},
            "nodes.main.template: Value error, unknown placeholder {questoin}; "
            "the template may use {question}",
        ),
        (
            {"type": "best_of_n", "scorer": {"type": "llm_judge", "template": "{answer}"}},
            "nodes.main.scorer.template: Value error, unknown placeholder {answer}",
        ),
        ({"type": "generate", "template": "{question"}, "not a valid template"),
        ({"type": "self_consistency", "repeats": 10**9}, "nodes.main.repeats: Input should be"),
    ],
)
def test_nonsense_is_refused_at_load_time(data, expected: str) -> None:  # type: ignore[no-untyped-def]
    from itc.config import ConfigError, parse_pipeline

    with pytest.raises(ConfigError) as error:
        parse_pipeline(data)
    assert expected in str(error.value)


async def test_a_nested_vote_with_no_answers_is_not_called_a_budget_problem() -> None:
    backend = ScriptedBackend(answers("no digits here", "none at all"))
    inner_vote = SelfConsistency(inner=Generate(n=2))
    pipeline = PipelineConfig.single(SelfConsistency(inner=inner_vote, repeats=2))
    result = await Planner(Runtime(backend=backend)).run(pipeline, PROBLEM)
    assert result.budget_exhausted is None and result.error is None
    assert result.answer is None and result.candidates == []


async def test_a_vote_that_no_run_fits_names_the_limit_that_stopped_it() -> None:
    backend = ScriptedBackend(answers("4"))
    pipeline = PipelineConfig.single(
        SelfConsistency(inner=Generate(n=1), repeats=3), budget=Budget(wall_time=1e-9)
    )
    result = await Planner(Runtime(backend=backend)).run(pipeline, PROBLEM)
    assert result.budget_exhausted == "wall_time" and backend.requests == []
