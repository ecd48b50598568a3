"""Sweeps: variants are whole validated configs; bad paths and values fail clearly."""

from __future__ import annotations

import pytest

from itc.bench.sweep import expand_sweep, parse_sweep_options
from itc.bench.values import parse_sweep_option
from itc.config import ConfigError, PipelineConfig
from itc.strategies.best_of_n import BestOfN
from itc.strategies.generate import Generate
from itc.strategies.self_consistency import SelfConsistency

SC = PipelineConfig.single(SelfConsistency(inner=Generate(n=2)), name="sc")


def test_one_path_gives_named_variants_with_distinct_fingerprints() -> None:
    variants = expand_sweep(SC, {"nodes.main.inner.n": [1, 4, 16]})
    assert [v.name for v in variants] == ["sc[n=1]", "sc[n=4]", "sc[n=16]"]
    assert [v.nodes["main"].inner.n for v in variants] == [1, 4, 16]  # type: ignore[attr-defined]
    fingerprints = {v.fingerprint() for v in variants} | {SC.fingerprint()}
    assert len(fingerprints) == 4
    # Everything not swept is left as it was.
    assert all(v.nodes["main"].inner.temperature == 0.7 for v in variants)  # type: ignore[attr-defined]


def test_shorthand_and_cartesian_product_in_order() -> None:
    variants = expand_sweep(SC, {"main.inner.n": [2, 8], "budget.tokens": [1000, None]})
    assert [v.name for v in variants] == [
        "sc[n=2,tokens=1000]",
        "sc[n=2,tokens=null]",
        "sc[n=8,tokens=1000]",
        "sc[n=8,tokens=null]",
    ]
    assert variants[1].budget.tokens is None and variants[2].budget.tokens == 1000
    assert len({v.fingerprint() for v in variants}) == 4


def test_deeply_nested_path_and_clashing_labels_are_told_apart() -> None:
    nested = PipelineConfig.single(
        SelfConsistency(inner=BestOfN(inner=Generate(n=2)), repeats=2), name="nest"
    )
    variants = expand_sweep(nested, {"main.inner.inner.n": [3], "main.inner.keep": [1, 2]})
    assert [v.name for v in variants] == ["nest[n=3,keep=1]", "nest[n=3,keep=2]"]
    assert variants[0].nodes["main"].inner.inner.n == 3  # type: ignore[attr-defined]

    graph = PipelineConfig(
        name="g",
        nodes={"a": Generate(n=2), "b": Generate(n=2), "c": BestOfN(inner=None, inputs=("a", "b"))},
    )
    [variant] = expand_sweep(graph, {"a.n": [4], "b.n": [8]})
    assert variant.name == "g[a.n=4,b.n=8]"
    assert variant.nodes["a"].n == 4 and variant.nodes["b"].n == 8  # type: ignore[attr-defined]


def test_repeated_values_are_dropped_and_no_assignments_is_the_pipeline() -> None:
    assert [v.name for v in expand_sweep(SC, {"main.repeats": [2, 2, 3]})] == [
        "sc[repeats=2]",
        "sc[repeats=3]",
    ]
    assert expand_sweep(SC, {}) == [SC]


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("main.inner.nn", "main.inner.nn: no key 'nn' at nodes.main.inner; available keys: "),
        ("mian.n", "mian.n: no key 'mian' at the top level; available keys: answer, budget"),
        ("main.inner.n.x", "main.inner.n.x: nodes.main.inner.n is 2, not a mapping"),
        ("main..n", "empty component"),
    ],
)
def test_bad_path_names_it_and_what_was_available(path: str, expected: str) -> None:
    with pytest.raises(ConfigError) as error:
        expand_sweep(SC, {path: [1]})
    message = str(error.value)
    assert expected in message
    if "available keys" in expected and path.startswith("main.inner"):
        assert "max_tokens, model, n, seed" in message
    if path == "mian.n":
        assert "(or a node name: main)" in message


def test_invalid_value_gets_the_config_error_of_the_variant() -> None:
    with pytest.raises(ConfigError) as error:
        expand_sweep(SC, {"main.inner.n": [4, 0]})
    message = str(error.value)
    assert "sc[n=0]" in message
    assert "nodes.main.inner.n: Input should be greater than or equal to 1 (got 0)" in message


def test_same_setting_twice_and_empty_values_are_errors() -> None:
    with pytest.raises(ConfigError, match="same setting"):
        expand_sweep(SC, {"main.inner.n": [1], "nodes.main.inner.n": [2]})
    with pytest.raises(ConfigError, match="no values"):
        expand_sweep(SC, {"main.inner.n": []})
    with pytest.raises(ConfigError, match="expected a list"):
        expand_sweep(SC, {"main.inner.n": "1,2"})  # type: ignore[dict-item]


@pytest.mark.parametrize(
    ("text", "path", "values"),
    [
        ("main.inner.n=1..64", "main.inner.n", [1, 2, 4, 8, 16, 32, 64]),
        ("n=1..8:lin", "n", [1, 2, 3, 4, 5, 6, 7, 8]),
        ("n=1..8:pow2", "n", [1, 2, 4, 8]),
        ("n=3..50", "n", [3, 6, 12, 24, 48]),
        ("n=-1..1:lin", "n", [-1, 0, 1]),
        ("n=1..4,6, 4", "n", [1, 2, 4, 6]),
        ("t=0.5,1,null,greedy,true", "t", [0.5, 1, None, "greedy", True]),
        ("budget.tokens = 1000 , 2000", "budget.tokens", [1000, 2000]),
    ],
)
def test_parse_sweep_option_forms(text: str, path: str, values: list[object]) -> None:
    parsed_path, parsed = parse_sweep_option(text)
    assert parsed_path == path
    assert parsed == values
    assert [type(v) for v in parsed] == [type(v) for v in values]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("n", "expected PATH="),
        ("=1,2", "expected PATH="),
        ("n=", "expected PATH="),
        ("n=1,,2", "empty value"),
        ("n=8..1", "empty"),
        ("n=0..8", "LO >= 1"),
        ("n=1..8:cubic", "unknown range kind"),
        ("n=0.5..2", "integer bounds"),
        ("n={a: 1}", "not a scalar"),
        ("my path=1", "spaces"),
    ],
)
def test_parse_sweep_option_errors(text: str, expected: str) -> None:
    with pytest.raises(ValueError, match=expected):
        parse_sweep_option(text)


def test_options_feed_expand_sweep() -> None:
    assignments = parse_sweep_options(["main.inner.n=1..4", "main.repeats=1,3"])
    variants = expand_sweep(SC, assignments)
    assert len(variants) == 6 and variants[-1].name == "sc[n=4,repeats=3]"
    with pytest.raises(ValueError, match="already swept"):
        parse_sweep_options(["n=1", "n=2"])


def test_expand_sweeps_keeps_baselines_and_rejects_partial_or_absent_paths() -> None:
    from itc.bench.sweep import expand_sweeps
    from itc.strategies.generate import Generate
    from itc.strategies.self_consistency import SelfConsistency

    greedy = PipelineConfig.single(Generate(temperature=0.0), name="greedy")
    sc = PipelineConfig.single(SelfConsistency(inner=Generate(n=2)), name="sc")
    variants = expand_sweeps([greedy, sc], {"main.inner.n": [1, 4]})
    assert [v.name for v in variants] == ["greedy", "sc[n=1]", "sc[n=4]"]
    with pytest.raises(ConfigError, match="no key 'inner'"):
        expand_sweeps([greedy], {"main.inner.n": [1, 4]})
    with pytest.raises(ConfigError, match="no key 'bogus'"):
        expand_sweeps([sc], {"main.inner.n": [1], "main.bogus": [2]})
