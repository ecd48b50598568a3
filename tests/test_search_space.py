"""Search spaces as data, sampling through Optuna trials, and static worst-case cost bounds."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from itc.backends.base import PoolingRequest
from itc.backends.scripted import ScriptedBackend
from itc.config import PipelineConfig
from itc.nodes import CostBound, Scorer, StepScorer, Strategy
from itc.planner.executor import Planner, ProblemResult
from itc.runtime.context import Runtime
from itc.runtime.steps import StepConfig
from itc.search.space import (
    Option,
    Param,
    SearchSpace,
    SpaceError,
    load_space,
    over_budget,
    parse_space,
    sample,
    static_feasible,
)
from itc.strategies.a_star import AStar
from itc.strategies.beam_search import BeamSearch
from itc.strategies.best_of_n import BestOfN
from itc.strategies.dvts import DVTS
from itc.strategies.early_pruning import EarlyPruning
from itc.strategies.generate import Generate
from itc.strategies.particle_filtering import ParticleFiltering
from itc.strategies.rpc import RPC
from itc.strategies.self_consistency import EarlyStop, SelfConsistency
from itc.types import Budget, Problem
from itc.verifiers.arithmetic import ArithmeticCheck
from itc.verifiers.judge import LLMJudge, PartialProbe, StepJudge
from itc.verifiers.reward_model import OutcomeRewardModel, ProcessRewardModel
from itc.verifiers.self_certainty import SelfCertainty, StepCertainty
from tests.helpers import PROBLEM

optuna.logging.set_verbosity(optuna.logging.WARNING)

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "search" / "gsm8k_space.yaml"

SPACE = """
name: tiny
fixed: {answer: math, budget: {completion_tokens: 1000}}
pipeline: $strategy
params:
  temperature: {float: [0.1, 1.0]}
  strategy:
    options:
      vote:
        template:
          type: self_consistency
          inner: {type: generate, n: $n, temperature: $temperature, max_tokens: 50}
        params:
          n: {int: [1, 16], log: true}
      rank:
        template:
          type: best_of_n
          inner: {type: generate, n: $n, temperature: $temperature, max_tokens: 50}
          scorer: $scorer
        params:
          n: {int: [2, 8], step: 2}
          scorer:
            options:
              free: {template: self_certainty}
              judge:
                template: {type: llm_judge, top_logprobs: $top}
                params:
                  top: {values: [5, 20]}
      steps:
        template:
          type: beam_search
          beams: $beams
          expand: 2
          reward: {type: arithmetic_check, neutral: $neutral}
          step: {max_tokens: 20, max_steps: 4}
        params:
          beams: {values: [2, 4, 8]}
          neutral: {float: [0.3, 0.7], step: 0.1}
"""

# Which Optuna parameters each branch of SPACE draws.
BRANCHES = {
    "vote": {"temperature", "strategy", "strategy.vote.n"},
    "rank": {"temperature", "strategy", "strategy.rank.n", "strategy.rank.scorer"},
    "steps": {"temperature", "strategy", "strategy.steps.beams", "strategy.steps.neutral"},
}
JUDGE_TOP = "strategy.rank.scorer.judge.top"


def tiny() -> SearchSpace:
    return parse_space(yaml.safe_load(SPACE), source="SPACE")


# -- the space as data -----------------------------------------------------------------------


def test_spaces_round_trip_through_yaml(tmp_path: Path) -> None:
    for space in (tiny(), load_space(EXAMPLE)):
        path = tmp_path / f"{space.name}.yaml"
        path.write_text(space.to_yaml())
        again = load_space(path)
        assert again == space
        assert again.to_yaml() == space.to_yaml()
    # A space built in Python (a range by its field name) is written with the YAML names.
    built = SearchSpace(
        name="built",
        pipeline="$strategy",
        params={
            "strategy": Param(options={
                "one": Option(template={"type": "generate", "n": "$n"},
                              params={"n": Param(int_range=(1, 4))}),
                "vote": Option(template="self_consistency"),
            })
        },
    )
    path = tmp_path / "built.yaml"
    path.write_text(built.to_yaml())
    assert load_space(path) == built
    assert yaml.safe_load(built.to_yaml())["params"]["strategy"]["options"]["one"] == {
        "template": {"type": "generate", "n": "$n"}, "params": {"n": {"int": [1, 4]}}
    }
    # Aliases and defaults: ranges are written as `int:`/`float:`, unset fields left out.
    written = yaml.safe_load(tiny().to_yaml())
    assert written["params"]["temperature"] == {"float": [0.1, 1.0]}
    assert written["params"]["strategy"]["options"]["vote"]["params"]["n"] == {
        "int": [1, 16], "log": True
    }


def test_the_example_space_samples_every_strategy_it_declares() -> None:
    space = load_space(EXAMPLE)
    strategies = space.params["strategy"].options
    assert strategies is not None and len(strategies) >= 8
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    seen: set[str] = set()
    for _ in range(80):
        trial = study.ask()
        pipeline = sample(space, trial)
        seen.add(trial.params["strategy"])
        assert pipeline.budget == Budget(completion_tokens=2200)
        assert pipeline.answer.type == "math" and pipeline.name == "gsm8k-space"
        study.tell(trial, 0.0)
    assert seen == set(strategies)


def test_load_errors_name_every_bad_path(tmp_path: Path) -> None:
    bad = """
name: broken
fixed: {answer: mathh, budgett: {calls: 3}}
pipeline: {type: generate, n: $n, temperature: $temp}
params:
  n: {int: [8, 2]}
  unused: {values: [1, 2]}
  both: {int: [1, 2], values: [3]}
  lg: {float: [0, 1], log: true}
  odd: {int: [1, 10], step: 4}
  "bad name": {values: [1]}
  loop:
    options:
      a: {template: $loop}
"""
    path = tmp_path / "broken.yaml"
    path.write_text(bad)
    with pytest.raises(SpaceError) as caught:
        load_space(path)
    message = str(caught.value)
    assert message.startswith(f"invalid search space {path}:")
    problems = caught.value.problems
    expected = [
        "fixed.budgett: Extra inputs are not permitted",
        "params.n: low 8 is above high 2",
        "params.both: give exactly one of",
        "params.lg: a log range needs low > 0",
        "params.odd: step must be a whole number dividing high - low (9)",
        "params.bad name.[key]: String should match pattern",
    ]
    for start in expected:
        assert any(p.startswith(start) for p in problems), (start, problems)
    # The reference checks run once the parameters themselves are valid.
    path.write_text("""
pipeline: {type: generate, n: $n, temperature: $temp, stop: ["$$n"]}
params:
  n: {int: [1, 4]}
  unused: {values: [1, 2]}
  loop:
    options:
      a: {template: {type: best_of_n, inner: $loop}}
  inner:
    options:
      x:
        template: 1
        params: {deep: {values: [1]}}
""")
    with pytest.raises(SpaceError) as caught:
        load_space(path)
    problems = caught.value.problems
    assert "pipeline.temperature: $temp names no parameter in scope (known: "\
        "['inner', 'loop', 'n', 'unused'])" in problems
    assert "params.unused: declared but never used" in problems
    assert "params.inner: declared but never used" in problems
    assert "params.inner.options.x.params.deep: declared but never used" in problems
    assert any(p.startswith("params.loop: its options refer back to it") for p in problems)
    assert not any(p.startswith("pipeline.stop") for p in problems)  # "$$n" is text, "$n"
    # The answer kind goes through the registry, with a hint.
    path.write_text("fixed: {answer: mathh}\npipeline: {type: generate}\n")
    with pytest.raises(SpaceError, match=r"fixed\.answer\.type: unknown answer 'mathh'; did"):
        load_space(path)
    with pytest.raises(SpaceError, match="cannot read"):
        load_space(tmp_path / "missing.yaml")
    path.write_text("pipeline: [unclosed\n")
    with pytest.raises(SpaceError, match="not valid YAML"):
        load_space(path)


# -- sampling ---------------------------------------------------------------------------------


def test_fixed_trials_draw_only_the_chosen_branch() -> None:
    space = tiny()
    # A FixedTrial fails on any parameter it was not given: each branch asks for its own only.
    vote = optuna.trial.FixedTrial({"temperature": 0.5, "strategy": "vote", "strategy.vote.n": 4})
    pipeline = sample(space, vote)
    node = pipeline.nodes["main"]
    assert isinstance(node, SelfConsistency) and isinstance(node.inner, Generate)
    assert (node.inner.n, node.inner.temperature) == (4, 0.5)
    assert set(vote.params) == BRANCHES["vote"]

    judged = optuna.trial.FixedTrial(
        {
            "temperature": 0.3,
            "strategy": "rank",
            "strategy.rank.n": 6,
            "strategy.rank.scorer": "judge",
            JUDGE_TOP: 5,
        }
    )
    node = sample(space, judged).nodes["main"]
    assert isinstance(node, BestOfN) and isinstance(node.scorer, LLMJudge)
    assert node.scorer.top_logprobs == 5 and node.inner == Generate(n=6, temperature=0.3,
                                                                    max_tokens=50)
    free = optuna.trial.FixedTrial(
        {"temperature": 0.3, "strategy": "rank", "strategy.rank.n": 2,
         "strategy.rank.scorer": "free"}
    )
    assert isinstance(sample(space, free).nodes["main"].scorer, SelfCertainty)  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match=r"strategy\.vote\.n"):
        sample(space, optuna.trial.FixedTrial({"temperature": 0.5, "strategy": "vote"}))


def test_tpe_trials_carry_a_parameter_only_when_its_parent_is_chosen() -> None:
    space = tiny()
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=11, n_startup_trials=10))
    for _ in range(60):
        trial = study.ask()
        pipeline = sample(space, trial)
        bound = pipeline.worst_case()
        assert bound is not None
        study.tell(trial, bound.completion_tokens / 1000 + trial.params["temperature"])
    branches = {t.params["strategy"] for t in study.trials}
    assert branches == set(BRANCHES)  # every branch was tried
    for trial in study.trials:
        keys = set(trial.params)
        chosen = trial.params["strategy"]
        judged = trial.params.get("strategy.rank.scorer") == "judge"
        assert keys == BRANCHES[chosen] | ({JUDGE_TOP} if judged else set())
    judges = [t for t in study.trials if t.params.get("strategy.rank.scorer") == "judge"]
    assert judges and all(t.params[JUDGE_TOP] in (5, 20) for t in judges)


def test_a_doubled_dollar_is_text_and_fixed_parts_win() -> None:
    space = parse_space(
        {
            "fixed": {"budget": {"calls": 2}, "name": "mine"},
            "pipeline": {"type": "generate", "n": "$n", "stop": ["$$n", "$5"],
                         "budget": {"calls": 9}},
            "params": {"n": {"values": [3]}},
        }
    )
    pipeline = sample(space, optuna.trial.FixedTrial({"n": 3}))
    assert pipeline.nodes["main"] == Generate(n=3, stop=("$n", "$5"))
    assert (pipeline.name, pipeline.budget) == ("mine", Budget(calls=2))


def test_same_seed_same_sequence_of_configs() -> None:
    def configs(seed: int) -> list[str]:
        space = tiny()
        study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=seed))
        found = []
        for _ in range(25):
            trial = study.ask()
            pipeline = sample(space, trial)
            found.append(pipeline.fingerprint())
            study.tell(trial, len(pipeline.to_yaml()) % 7)
        return found

    first = configs(5)
    assert configs(5) == first
    assert configs(6) != first
    assert len(set(first)) > 5


def test_layers_stack_a_node_each_reading_the_one_before() -> None:
    space = load_space(EXAMPLE)
    params = {"strategy": "judge_stack", "strategy.judge_stack.layers": 3}
    pipeline = sample(space, optuna.trial.FixedTrial(params))
    assert list(pipeline.nodes) == ["sample", "rank_1", "rank_2", "rank"]
    inputs = {name: node.inputs for name, node in pipeline.nodes.items()}
    assert inputs == {
        "sample": (), "rank_1": ("sample",), "rank_2": ("rank_1",), "rank": ("rank_2",)
    }
    assert pipeline.output_node == "rank"
    assert all(isinstance(pipeline.nodes[n], BestOfN) for n in ("rank_1", "rank_2", "rank"))
    one = sample(space, optuna.trial.FixedTrial({**params, "strategy.judge_stack.layers": 1}))
    assert list(one.nodes) == ["sample", "rank"]
    # The judges score 4 samples, then the 2 kept by each layer below.
    assert pipeline.worst_case() == CostBound(
        completion_tokens=4 * 320 + 4 + 2 + 2, calls=1 + 4 + 2 + 2, reward_calls=4 + 2 + 2
    )


def test_a_sampled_config_that_cannot_exist_is_a_clear_error() -> None:
    space = parse_space(
        {
            "name": "odd",
            "pipeline": {"type": "beam_search", "beams": "$beams", "expand": 4,
                         "reward": "$reward"},
            "params": {"beams": {"values": [4, 6]}, "reward": {"values": ["arithmetic_check",
                                                                           "step_certainy"]}},
        }
    )
    assert sample(space, optuna.trial.FixedTrial({"beams": 4, "reward": "arithmetic_check"}))
    with pytest.raises(SpaceError) as caught:
        sample(space, optuna.trial.FixedTrial({"beams": 6, "reward": "step_certainy"}))
    message = str(caught.value)
    assert "'odd' sampled with {'beams': 6, 'reward': 'step_certainy'}" in message
    assert "nodes.main.reward.type: unknown scorer 'step_certainy'; did you mean" in message
    assert "beams (6) must be a multiple of expand (4)" in message


# -- static worst-case cost -------------------------------------------------------------------

STEP = StepConfig(max_tokens=6, max_steps=3)


def every_token() -> ScriptedBackend:
    """A backend whose every sample runs to its max_tokens: each is longer than any limit and
    distinct (so no search merges duplicates), with no step delimiter, EOS or answer in it."""
    counter = itertools.count()

    def script(request, index):  # type: ignore[no-untyped-def]
        k = next(counter)
        return " ".join(f"w{k}x{i}" for i in range(600))

    def rows(request: PoolingRequest) -> list[list[float]]:
        text = request.messages[-1].content if request.messages else request.prompt or ""
        return [[0.4, 0.6]] * (text.count("<extra_0>") or 1)

    return ScriptedBackend(script, pool_script=rows)


async def spend(pipeline: PipelineConfig, budget: Budget | None = None) -> ProblemResult:
    backend = every_token()
    runtime = Runtime(backend=backend, backends={"prm": backend, "orm": backend})
    result = await Planner(runtime).run(pipeline, PROBLEM, budget or Budget())
    assert result.error is None, result.error
    return result


def fitted(bound: CostBound) -> Budget:
    """A budget exactly as large as the bound."""
    return Budget(
        completion_tokens=bound.completion_tokens or None,
        calls=bound.calls or None,
        reward_calls=bound.reward_calls or None,
    )


def used(result: ProblemResult) -> CostBound:
    usage = result.usage
    return CostBound(
        completion_tokens=usage.completion_tokens, calls=usage.calls,
        reward_calls=usage.reward_calls,
    )


# Each built-in strategy (and scorer) with the bound it must reach when every sample takes
# its full max_tokens; None where the search may stop sooner (A* ends at its first goal).
EXACT: list[tuple[str, Strategy, CostBound | None]] = [
    ("generate", Generate(n=3, max_tokens=40), CostBound(completion_tokens=120, calls=1)),
    (
        "best_of_n judge",
        BestOfN(inner=Generate(n=4, max_tokens=30), scorer=LLMJudge()),
        CostBound(completion_tokens=124, calls=5, reward_calls=4),
    ),
    (
        "best_of_n free",
        BestOfN(inner=Generate(n=4, max_tokens=30), scorer=SelfCertainty()),
        CostBound(completion_tokens=120, calls=1),
    ),
    (
        "self_consistency",
        SelfConsistency(inner=Generate(n=2, max_tokens=25), repeats=3, scorer=PartialProbe()),
        CostBound(completion_tokens=156, calls=9, reward_calls=6),
    ),
    (
        "self_consistency early stop",
        SelfConsistency(inner=Generate(n=5, max_tokens=20), early_stop=EarlyStop(min_votes=2)),
        CostBound(completion_tokens=100, calls=5),
    ),
    ("rpc", RPC(inner=Generate(n=5, max_tokens=20)), CostBound(completion_tokens=100, calls=1)),
    (
        "early_pruning vote",
        EarlyPruning(samples=6, prefix_tokens=8, max_tokens=30, keep=0.5),
        CostBound(completion_tokens=6 * 8 + 3 * 22 + 6, calls=1 + 3 + 6, reward_calls=6),
    ),
    (
        "early_pruning best by judge",
        EarlyPruning(samples=4, prefix_tokens=8, max_tokens=30, keep=0.25, select="best",
                     scorer=LLMJudge()),
        # All 4 starts are open, so 4 probes; the 1 continued sample is the only final.
        CostBound(completion_tokens=4 * 8 + 22 + 5, calls=2 + 5, reward_calls=5),
    ),
    (
        "particle_filtering",
        ParticleFiltering(particles=3, reward=ArithmeticCheck(), step=STEP, iterations=2),
        # The second (Gibbs) iteration never extends its reference particle.
        CostBound(completion_tokens=3 * 6 * (3 + 2), calls=(1 + 2 * 3) + (1 + 2 * 2)),
    ),
    (
        "particle_filtering step judge",
        ParticleFiltering(particles=2, reward=StepJudge(), step=STEP),
        CostBound(completion_tokens=3 * 2 * 6 + 6, calls=(1 + 2 * 2) + 6, reward_calls=6),
    ),
    (
        "beam_search prm",
        BeamSearch(beams=4, expand=2, reward=ProcessRewardModel(), step=STEP),
        CostBound(completion_tokens=3 * 4 * 6, calls=(1 + 2 * 2) + 12, reward_calls=12),
    ),
    (
        "dvts",
        DVTS(beams=6, expand=3, reward=StepCertainty(), step=STEP),
        CostBound(completion_tokens=3 * 6 * 6, calls=1 + 2 * 2),
    ),
    ("a_star", AStar(expand=2, max_expansions=5, reward=StepJudge(), step=STEP), None),
]


@pytest.mark.parametrize(("name", "node", "exact"), EXACT, ids=[e[0] for e in EXACT])
async def test_each_strategy_spends_at_most_its_static_bound(
    name: str, node: Strategy, exact: CostBound | None
) -> None:
    pipeline = PipelineConfig.single(node)
    bound = pipeline.worst_case()
    assert bound is not None
    if exact is not None:
        assert bound == exact
    result = await spend(pipeline)
    assert result.candidates
    spent = used(result)
    assert spent.completion_tokens <= bound.completion_tokens
    assert spent.calls <= bound.calls and spent.reward_calls <= bound.reward_calls
    if exact is not None and "early stop" not in name:
        assert spent == bound  # the bound is reached, not just respected
    # A budget of exactly the bound never refuses or clips a call: it is the worst case.
    again = await spend(pipeline, fitted(bound))
    assert (again.refused_calls, again.clipped_calls, again.budget_exhausted) == (0, 0, None)
    if "early stop" not in name:
        assert used(again) == spent


def test_scorer_bounds() -> None:
    assert LLMJudge().worst_case(5) == CostBound(completion_tokens=5, calls=5, reward_calls=5)
    assert PartialProbe().worst_case(None) is None  # how many candidates is unknown
    assert OutcomeRewardModel().worst_case(3) == CostBound(calls=3, reward_calls=3)
    for free in (SelfCertainty(), StepCertainty(), ArithmeticCheck()):
        assert free.worst_case(None) == CostBound()
    # A process reward scoring whole solutions splits them into steps it cannot count ahead.
    assert StepJudge().worst_case(4) is None and ProcessRewardModel().worst_case(4) is None
    assert StepJudge().worst_case_steps(3) == CostBound(
        completion_tokens=3, calls=3, reward_calls=3
    )

    class Opaque(Scorer):
        type: str = "opaque"

    class OpaqueSteps(StepScorer):
        type: str = "opaque_steps"

    # A component that says nothing about its cost is unknown, not free.
    assert Opaque().worst_case(1) is None and OpaqueSteps().worst_case_steps(1) is None
    assert BestOfN(scorer=Opaque()).worst_case() is None


def test_graph_bounds_add_up_and_count_what_parents_pass_on() -> None:
    ranked = PipelineConfig(
        nodes={
            "sample": Generate(n=4, max_tokens=50),
            "more": Generate(n=2, max_tokens=10),
            "rank": BestOfN(inputs=("sample", "more"), scorer=LLMJudge(), keep=2),
            "vote": SelfConsistency(inputs=("rank",), inner=None, scorer=LLMJudge()),
        }
    )
    assert ranked.worst_case() == CostBound(
        completion_tokens=200 + 20 + 6 + 2, calls=1 + 1 + 6 + 2, reward_calls=6 + 2
    )
    # Self-consistency returns one candidate per answer: how many is not known before, so a
    # paid scorer over its output is unbounded, and a free one is not.
    voted = {"vote": SelfConsistency(inner=Generate(n=3, max_tokens=10))}
    judged = PipelineConfig(
        nodes={**voted, "rank": BestOfN(inputs=("vote",), scorer=LLMJudge())}
    )
    assert judged.worst_case() is None
    free = PipelineConfig(
        nodes={**voted, "rank": BestOfN(inputs=("vote",), scorer=SelfCertainty())}
    )
    assert free.worst_case() == CostBound(completion_tokens=30, calls=1)


def test_over_budget_names_each_limit_and_unknown_bounds_pass_unless_strict() -> None:
    pipeline = PipelineConfig.single(
        BestOfN(inner=Generate(n=4, max_tokens=100), scorer=LLMJudge())
    )  # 404 tokens, 5 calls, 4 reward calls
    assert over_budget(pipeline, Budget(completion_tokens=404, calls=5, reward_calls=4)) == []
    assert over_budget(pipeline, Budget(completion_tokens=403, tokens=300, calls=4,
                                        reward_calls=3)) == [
        "completion_tokens: up to 404 tokens where 403 are allowed",
        "tokens: up to 404 generated tokens where 300 are allowed",
        "calls: up to 5 calls where 4 are allowed",
        "reward_calls: up to 4 reward calls where 3 are allowed",
    ]
    assert static_feasible(pipeline.model_copy(update={"budget": Budget(calls=5)}))
    assert not static_feasible(pipeline.model_copy(update={"budget": Budget(calls=4)}))
    unknown = PipelineConfig.single(BestOfN(scorer=StepJudge()))
    assert unknown.worst_case() is None
    assert static_feasible(unknown, Budget(completion_tokens=1))
    assert not static_feasible(unknown, Budget(completion_tokens=1), strict=True)


async def test_infeasible_configs_are_rejected_before_any_call() -> None:
    space = parse_space(
        {
            "name": "gate",
            "fixed": {"budget": {"completion_tokens": 400}},
            "pipeline": {"type": "generate", "n": "$n", "max_tokens": 100},
            "params": {"n": {"int": [1, 8]}},
        }
    )
    backend = every_token()
    planner = Planner(Runtime(backend=backend))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=2))
    ran = 0
    for _ in range(16):
        trial = study.ask()
        pipeline = sample(space, trial)
        if not static_feasible(pipeline):
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            continue
        result = await planner.run(pipeline, PROBLEM)
        ran += 1
        study.tell(trial, result.usage.completion_tokens)
    pruned = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    assert pruned and ran  # both kinds were drawn
    assert all(t.params["n"] > 4 for t in pruned)
    assert len(backend.requests) == ran  # one call per feasible trial, none for the rest
    assert all(r.n <= 4 for r in backend.requests)
    everything_over = parse_space({**space.model_dump(by_alias=True, exclude_defaults=True),
                                   "fixed": {"budget": {"completion_tokens": 50}}})
    silent = every_token()
    for n in range(1, 9):
        pipeline = sample(everything_over, optuna.trial.FixedTrial({"n": n}))
        if static_feasible(pipeline):
            await Planner(Runtime(backend=silent)).run(pipeline, PROBLEM)
    assert silent.requests == []


# -- property: over random configs the real spend never passes the bound ----------------------


@st.composite
def configs(draw: st.DrawFn) -> Strategy:
    width = draw(st.integers(min_value=1, max_value=4))
    tokens = draw(st.integers(min_value=2, max_value=24))
    step = StepConfig(
        max_tokens=draw(st.integers(min_value=1, max_value=8)),
        max_steps=draw(st.integers(min_value=1, max_value=4)),
    )
    scorer = draw(st.sampled_from([SelfCertainty(), LLMJudge(), PartialProbe(),
                                   ArithmeticCheck(), OutcomeRewardModel()]))
    reward = draw(st.sampled_from([StepCertainty(), ArithmeticCheck(), StepJudge(),
                                   ProcessRewardModel()]))
    sampler = Generate(n=width, max_tokens=tokens)
    kind = draw(st.sampled_from(["generate", "best_of_n", "self_consistency", "rpc",
                                 "early_pruning", "particle_filtering", "a_star",
                                 "beam_search", "dvts", "nested"]))
    if kind == "generate":
        return sampler
    if kind == "best_of_n":
        return BestOfN(inner=sampler, scorer=scorer, keep=draw(st.integers(1, 3)))
    if kind == "self_consistency":
        stop = draw(st.sampled_from([None, EarlyStop(min_votes=2)]))
        judge = draw(st.sampled_from([None, scorer]))
        return SelfConsistency(inner=sampler, repeats=draw(st.integers(1, 3)), scorer=judge,
                               early_stop=stop)
    if kind == "rpc":
        return RPC(inner=sampler)
    if kind == "early_pruning":
        prefix = draw(st.integers(min_value=1, max_value=tokens - 1))
        return EarlyPruning(samples=2 * width, prefix_tokens=prefix, max_tokens=tokens,
                            keep=draw(st.sampled_from([0.25, 0.5, 1.0])), scorer=scorer,
                            select=draw(st.sampled_from(["vote", "best"])))
    if kind == "particle_filtering":
        return ParticleFiltering(particles=width, reward=reward, step=step,
                                 iterations=draw(st.integers(1, 2)),
                                 ess_threshold=draw(st.sampled_from([0.5, 1.0])))
    if kind == "a_star":
        return AStar(expand=width, reward=reward, step=step, parallel=draw(st.integers(1, 2)),
                     max_expansions=draw(st.integers(1, 6)))
    if kind in ("beam_search", "dvts"):
        expand = draw(st.integers(min_value=1, max_value=3))
        kind_class = BeamSearch if kind == "beam_search" else DVTS
        return kind_class(beams=expand * width, expand=expand, reward=reward, step=step)
    return BestOfN(inner=SelfConsistency(inner=sampler, repeats=2), scorer=SelfCertainty())


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(node=configs())
def test_no_config_spends_past_its_static_bound(node: Strategy) -> None:
    pipeline = PipelineConfig.single(node)
    bound = pipeline.worst_case()
    if bound is None:
        return  # nothing to check: the runtime's budget is all that binds it

    async def both() -> tuple[ProblemResult, ProblemResult]:
        return await spend(pipeline), await spend(pipeline, fitted(bound))

    free, fitting = asyncio.run(both())
    for result in (free, fitting):
        spent = used(result)
        assert spent.completion_tokens <= bound.completion_tokens, (node, spent, bound)
        assert spent.calls <= bound.calls and spent.reward_calls <= bound.reward_calls
    assert (fitting.refused_calls, fitting.clipped_calls) == (0, 0), fitting.trace.events


# -- the real server --------------------------------------------------------------------------


@pytest.mark.vllm
async def test_real_spend_stays_within_the_bound_of_sampled_configs(backend: Any) -> None:
    space = parse_space(
        {
            "name": "real",
            "pipeline": "$strategy",
            "params": {
                "strategy": {
                    "options": {
                        "sc": {
                            "template": {"type": "self_consistency",
                                         "inner": {"type": "generate", "n": "$n",
                                                   "max_tokens": 24}},
                            "params": {"n": {"int": [2, 4]}},
                        },
                        "judge": {
                            "template": {"type": "best_of_n",
                                         "inner": {"type": "generate", "n": 2, "max_tokens": 24},
                                         "scorer": "llm_judge"},
                        },
                        "steps": {
                            "template": {"type": "beam_search", "beams": 2, "expand": 2,
                                         "reward": "arithmetic_check",
                                         "step": {"max_tokens": 12, "max_steps": 2}},
                        },
                    }
                }
            },
        }
    )
    problem = Problem(id="p", prompt="What is 3 + 4? Answer with a number.", answer="7")
    planner = Planner(Runtime(backend=backend))
    for option in ("sc", "judge", "steps"):
        params: dict[str, Any] = {"strategy": option}
        if option == "sc":
            params["strategy.sc.n"] = 3
        pipeline = sample(space, optuna.trial.FixedTrial(params))
        bound = pipeline.worst_case()
        assert bound is not None
        result = await planner.run(pipeline, problem, fitted(bound))
        assert result.error is None and result.text is not None
        assert (result.refused_calls, result.clipped_calls) == (0, 0)
        spent = used(result)
        assert spent.completion_tokens <= bound.completion_tokens
        assert spent.calls <= bound.calls and spent.reward_calls <= bound.reward_calls
        assert spent.calls >= 1 and spent.completion_tokens >= 1
