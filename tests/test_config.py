"""Config as data: round trips and one clear error per bad input."""

from __future__ import annotations

import json

import pytest
import yaml

from itc.config import ConfigError, PipelineConfig, load_pipeline, parse_pipeline, save_pipeline
from itc.strategies.best_of_n import BestOfN
from itc.strategies.generate import Generate
from itc.strategies.self_consistency import EarlyStop, SelfConsistency
from itc.types import Budget
from itc.verifiers.judge import LLMJudge

NESTED = PipelineConfig(
    name="sc-over-bon",
    nodes={
        "main": SelfConsistency(
            inner=BestOfN(inner=Generate(n=4, temperature=0.9), scorer=LLMJudge()),
            repeats=3,
            early_stop=EarlyStop(min_votes=2),
        )
    },
    budget=Budget(tokens=5000, calls=40),
)


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_round_trip_through_files(tmp_path, suffix: str) -> None:
    path = tmp_path / f"pipeline{suffix}"
    save_pipeline(NESTED, path)
    loaded = load_pipeline(path)
    assert loaded == NESTED
    assert isinstance(loaded.nodes["main"].inner.scorer, LLMJudge)  # type: ignore[attr-defined]
    assert loaded.fingerprint() == NESTED.fingerprint()


def test_single_node_shorthand_and_graph() -> None:
    single = parse_pipeline({"type": "generate", "n": 3, "budget": {"tokens": 10}})
    assert single.nodes["main"] == Generate(n=3) and single.budget.tokens == 10
    graph = parse_pipeline(
        {
            "nodes": {
                "gen": {"type": "generate", "n": 8},
                "rank": {"type": "best_of_n", "inner": None, "inputs": ["gen"], "keep": 3},
                "vote": {"type": "self_consistency", "inner": None, "inputs": ["rank"]},
            }
        }
    )
    assert graph.output_node == "vote"


def test_errors_name_the_path_and_expectation(tmp_path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "nodes:\n  main:\n    type: self_consistency\n    inner:\n      type: generate\n"
        "      n: -2\n    scorer: {type: nope}\n"
    )
    with pytest.raises(ConfigError) as error:
        load_pipeline(path)
    message = str(error.value)
    assert str(path) in message
    assert "nodes.main.inner.n: Input should be greater than or equal to 1 (got -2)" in message
    assert "nodes.main.scorer.type: unknown scorer 'nope'" in message
    assert "llm_judge" in message


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"nodes": {"a": {"type": "generate", "inputs": ["b"]}}}, "unknown node 'b'"),
        (
            {
                "nodes": {
                    "a": {"type": "best_of_n", "inputs": ["b"]},
                    "b": {"type": "best_of_n", "inputs": ["a"]},
                }
            },
            "cycle",
        ),
        ({"nodes": {"a": {"type": "generate"}, "b": {"type": "generate"}}}, "several final"),
        ({"nodes": {"a": {"type": "generate", "temprature": 1}}}, "nodes.a.temprature: Extra"),
        ({"nodes": {"a": {"type": "generate"}}, "budget": {"tokens": 0}}, "budget.tokens"),
        ({"nodes": {"a": {"n": 2}}}, "nodes.a.type: missing"),
        ([1, 2], "expected a mapping"),
    ],
)
def test_invalid_pipelines(data, expected: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_pipeline(data)
    assert expected in str(error.value)


def test_unreadable_and_malformed_files(tmp_path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_pipeline(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid json"):
        load_pipeline(bad)


def test_yaml_is_plain_data() -> None:
    data = json.loads(json.dumps(NESTED.to_data()))
    assert data["nodes"]["main"]["inner"]["scorer"]["type"] == "llm_judge"


def test_every_bad_path_is_reported_in_one_pass_with_suggestions() -> None:
    data = {
        "name": "x",
        "budget": {"tokens": -1},
        "answr": "math",
        "nodes": {
            "vote": {
                "type": "self_consistency",
                "repeats": "many",
                "inner": {"type": "generat", "n": 2},
                "scorer": {"type": "self_certainty", "wieght": 2},
            },
            "other": {"type": "generate", "temprature": 0.5, "max_tokens": 0},
        },
    }
    with pytest.raises(ConfigError) as error:
        parse_pipeline(data)
    problems = error.value.problems
    expected = [
        "nodes.vote.inner.type: unknown strategy 'generat'; did you mean 'generate'?",
        "nodes.vote.scorer.wieght: Extra inputs are not permitted",
        "nodes.vote.repeats: Input should be a valid integer",
        "nodes.other.temprature: Extra inputs are not permitted; did you mean 'temperature'?",
        "nodes.other.max_tokens: Input should be greater than or equal to 1",
        "budget.tokens: Input should be greater than 0",
        "answr: Extra inputs are not permitted; did you mean 'answer'?",
    ]
    for line in expected:
        assert any(p.startswith(line) for p in problems), (line, problems)
    assert len(problems) == len(expected)


def test_a_custom_strategy_annotated_plainly_keeps_its_inner_fields() -> None:
    from typing import Literal

    from itc import Registry, Strategy

    class Twice(Strategy):
        type: Literal["twice"] = "twice"
        inner: Strategy = Generate()

    registry = Registry.default()
    registry.register(Twice)
    pipeline = PipelineConfig.single(Twice(inner=Generate(n=5, temperature=0.3)))
    assert pipeline.to_data()["nodes"]["main"]["inner"]["n"] == 5
    back = PipelineConfig.from_yaml(pipeline.to_yaml(), registry)
    assert back == pipeline and back.fingerprint() == pipeline.fingerprint()


def test_to_yaml_writes_only_what_differs_from_the_defaults() -> None:
    pipeline = PipelineConfig.single(
        SelfConsistency(inner=Generate(n=4, max_tokens=64), repeats=2), budget=Budget(tokens=900)
    )
    text = pipeline.to_yaml()
    assert yaml.safe_load(text) == {
        "nodes": {
            "main": {
                "type": "self_consistency",
                "inner": {"type": "generate", "n": 4, "max_tokens": 64},
                "repeats": 2,
            }
        },
        "budget": {"tokens": 900},
    }
    assert PipelineConfig.from_yaml(text) == pipeline
    full = yaml.safe_load(pipeline.to_yaml(minimal=False))
    assert full["nodes"]["main"]["inner"]["temperature"] == 0.7 and full["answer"] == "math"
    with pytest.raises(ConfigError, match="not valid YAML"):
        PipelineConfig.from_yaml("nodes: [")


def test_the_json_schema_accepts_every_example_and_rejects_what_the_loader_rejects() -> None:
    from pathlib import Path

    import jsonschema

    from itc.config import Registry

    validator = jsonschema.Draft202012Validator(Registry.default().json_schema())
    examples = sorted((Path(__file__).parents[1] / "examples").glob("*.yaml"))
    assert len(examples) >= 5
    for path in examples:
        assert list(validator.iter_errors(yaml.safe_load(path.read_text()))) == [], path
    for bad in (
        {"nodes": {"a": {"type": "generat"}}},
        {"nodes": {"a": {"type": "generate", "temprature": 1}}},
        {"nodes": {"a": {"type": "best_of_n", "scorer": {"type": "nope"}}}},
        {"nodes": {"a": {"type": "generate"}}, "answer": "roman"},
    ):
        assert not validator.is_valid(bad), bad
    short = {"nodes": {"a": {"type": "best_of_n", "scorer": "self_certainty"}}, "answer": "text"}
    assert validator.is_valid(short)


def test_every_public_field_says_what_it_is_for() -> None:
    from itc.config import BUILTIN_COMPONENTS
    from itc.strategies.self_consistency import EarlyStop

    for model in (*BUILTIN_COMPONENTS, PipelineConfig, Budget, EarlyStop):
        for name, field in model.model_fields.items():
            if name not in ("type", "inputs"):
                assert field.description, f"{model.__name__}.{name}"
