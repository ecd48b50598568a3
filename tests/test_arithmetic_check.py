"""The arithmetic checker: exact, never evaluates model text, scores steps, ranks solutions."""

from __future__ import annotations

from fractions import Fraction

import pytest

from itc.backends.scripted import ScriptedBackend
from itc.config import PipelineConfig, parse_pipeline
from itc.planner.executor import Planner
from itc.runtime.context import Runtime
from itc.strategies.best_of_n import BestOfN
from itc.strategies.generate import Generate
from itc.types import Problem
from itc.verifiers.arithmetic import ArithmeticCheck, claims, step_verdicts

from .helpers import PROBLEM, answers


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("96 - 39 = 57", [("96 - 39", 57, True)]),
        ("Hiro buys 7 packs: 7 x 7 = 49 stickers", [("7 * 7", 49, True)]),
        ("7 × 7 = 48", [("7 * 7", 49, False)]),
        ("(3 + 4) * 2 = 14", [("( 3 + 4 ) * 2", 14, True)]),
        ("2 + 3 * 4 = 20", [("2 + 3 * 4", 14, False)]),  # precedence, not left to right
        ("so (5 + 3 = 8)", [("5 + 3", 8, True)]),
        ("1,200 + 300 = 1,500", [("1,200 + 300", 1500, True)]),
        ("$5 + $3 = $8", [("5 + 3", 8, True)]),
        ("3 - 5 = -2", [("3 - 5", -2, True)]),
        ("0.1 + 0.2 = 0.3", [("0.1 + 0.2", Fraction(3, 10), True)]),  # exact, not float
        ("96 - 39 = 57 - 31 = 26", [("96 - 39", 57, True), ("57 - 31", 26, True)]),
        ("7 / 2 = 3.5", [("7 / 2", Fraction(7, 2), True)]),
        ("x = 5", []),  # a restatement, not arithmetic
        ("10 / 0 = 1", []),  # undefined: no claim, not a crash
        ("the answer = 42", []),
        ("__import__('os').system('echo hi') + 1 = 2", []),  # text, never code
    ],
)
def test_claims_are_parsed_and_checked_exactly(text: str, expected: list) -> None:  # type: ignore[type-arg]
    found = [(c.expression, c.value, c.holds) for c in claims(text)]
    assert found == [(e, Fraction(v), h) for e, v, h in expected]


def test_steps_are_right_wrong_or_neutral() -> None:
    steps = ["Olga has 96.", "96 - 39 = 57", "57 - 31 = 27", "27 + 53 = 80 so 80 it is"]
    assert step_verdicts(steps) == [None, True, False, True]


@pytest.mark.parametrize(
    ("aggregate", "score"), [("min", 0.0), ("mean", 0.625), ("last", 1.0), ("product", 0.0)]
)
def test_aggregation(aggregate: str, score: float) -> None:
    text = "Olga has 96.\n96 - 39 = 57\n57 - 31 = 27\n27 + 53 = 80"
    assert ArithmeticCheck(aggregate=aggregate).score_text(text) == pytest.approx(score)
    assert ArithmeticCheck().score_text("No sums here.") == 0.5


async def test_best_of_n_ranks_by_checked_arithmetic_and_round_trips() -> None:
    wrong = "96 - 39 = 58\n58 - 31 = 27\nThe answer is 27."
    right = "96 - 39 = 57\n57 - 31 = 26\nThe answer is 26."
    silent = "I think it is 30."
    backend = ScriptedBackend(answers(wrong, silent, right))
    node = BestOfN(inner=Generate(n=3), scorer=ArithmeticCheck(), keep=3)
    pipeline = PipelineConfig.single(node)
    result = await Planner(Runtime(backend=backend)).run(pipeline, PROBLEM)
    assert [c.scores["arithmetic_check"] for c in result.candidates] == [1.0, 0.5, 0.0]
    assert result.answer == "26"
    assert parse_pipeline(pipeline.to_data()) == pipeline
    assert backend.requests[0].logprobs is False  # the check needs no logprobs


@pytest.mark.vllm
async def test_the_checker_scores_real_samples_consistently(backend) -> None:  # type: ignore[no-untyped-def]
    problem = Problem(
        id="olga",
        prompt="Olga has 96 marbles. She loses 39 and then finds 53. How many now? "
        "Show each calculation as an equation on its own line.",
        answer="110",
    )
    node = BestOfN(
        inner=Generate(n=6, max_tokens=96, temperature=0.9, seed=4),
        scorer=ArithmeticCheck(),
        keep=6,
    )
    result = await Planner(Runtime(backend=backend)).run(PipelineConfig.single(node), problem)
    scores = [c.scores["arithmetic_check"] for c in result.candidates]
    assert len(scores) == 6 and scores == sorted(scores, reverse=True)
    checker = ArithmeticCheck()
    assert scores == [checker.score_text(c.text) for c in result.candidates]
    assert set(scores) <= {0.0, 0.5, 1.0}
