"""One Answer component reads, keys and grades answers for the planner, the vote and the runner."""

from __future__ import annotations

from typing import Literal

import pytest

from itc.backends.scripted import ScriptedBackend
from itc.config import ConfigError, PipelineConfig, Registry, parse_pipeline
from itc.nodes import Answer
from itc.planner.executor import Planner
from itc.runtime.context import Runtime
from itc.strategies.generate import Generate
from itc.strategies.self_consistency import SelfConsistency
from itc.types import Problem
from itc.verifiers.answers import ChoiceAnswer, CodeAnswer, MathAnswer, TextAnswer
from itc.verifiers.math import MathGrader

from .helpers import answers

Q = Problem(id="q", prompt="?", answer="12")


def problem(gold: str | None, **metadata: object) -> Problem:
    return Problem(id="q", prompt="?", answer=gold, metadata=metadata)


async def test_math_answer_without_a_grader_compares_numbers_exactly() -> None:
    math = MathAnswer()
    assert math.extract("So 3 * 4 = 12.\n#### 12") == "12"
    assert await math.key("1,200.0") == await math.key("1200") == "1200"
    assert await math.key("0.5") == await math.key("1/2")
    assert await math.is_correct(problem("1200"), "1,200", None) is True
    assert await math.is_correct(problem("1200"), "1201", None) is False
    assert await math.is_correct(problem("1200"), None, "no answer") is False
    assert await math.is_correct(problem(None), "3", None) is None


async def test_math_answer_with_a_grader_compares_expressions() -> None:
    math = MathAnswer()
    async with MathGrader() as grader:
        assert await math.key("\\frac{1}{2}", grader) == await math.key("0.5", grader)
        assert await math.is_correct(problem("\\frac{\\sqrt{2}}{2}"), "\\sqrt{2}/2", None, grader)
        assert not await math.is_correct(problem("\\frac{1}{3}"), "0.5", None, grader)
        text = "Halving gives \\boxed{0.5}."
        assert await math.is_correct(problem("\\frac{1}{2}"), math.extract(text), text, grader)


async def test_text_answer_normalises_words_and_numbers() -> None:
    text = TextAnswer()
    assert text.extract("  The Mariana Trench.\n") == "The Mariana Trench."
    assert text.extract("   ") is None
    assert await text.key("The Mariana Trench.") == await text.key("mariana trench")
    assert await text.key("5,931.80") == await text.key("5931.8")
    assert await text.is_correct(problem("Mariana Trench"), "the mariana trench!", None)
    assert await text.is_correct(problem("5931.80"), "about 5,931.8 km", None)
    assert not await text.is_correct(problem("5931.80"), "5931 or 5932", None)


@pytest.mark.parametrize(
    ("text", "letter"),
    [
        ("After weighing the options, the answer is (C).", "C"),
        ("Answer: B", "B"),
        ("so \\boxed{D}", "D"),
        ("(A) is wrong, (B) too; I pick (D)", "D"),
        ("A seems plausible but B is right", "B"),
        ("none of these", None),
    ],
)
def test_choice_answer_reads_the_chosen_letter(text: str, letter: str | None) -> None:
    assert ChoiceAnswer().extract(text) == letter


async def test_choice_answer_keys_and_grades_letters_within_its_options() -> None:
    choice = ChoiceAnswer(options="abcde")
    assert choice.options == "ABCDE"
    assert choice.extract("The answer is (E)") == "E"
    assert await choice.key("(e)") == "E"
    assert await choice.key("F") is None
    assert await choice.is_correct(problem("E"), "e", None) is True
    assert await choice.is_correct(problem("E"), "F", None) is False
    with pytest.raises(ValueError, match="distinct letters"):
        ChoiceAnswer(options="AAB")


async def test_code_answer_extracts_keys_and_runs_the_tests() -> None:
    code = CodeAnswer()
    reply = "Here:\n```python\ndef add(a, b):\n    return a + b   \n\n```\n"
    assert code.extract(reply) == "def add(a, b):\n    return a + b"
    same = await code.key("def f():\n    return 1")
    assert await code.key("def f():\n\n    return 1  \n") == same
    task = problem(
        None,
        entry_point="add",
        test="def check(candidate):\n    assert candidate(2, 3) == 5\n",
        prompt='def add(a, b):\n    """The sum."""\n',
    )
    assert await code.is_correct(task, None, reply) is True
    assert await code.is_correct(task, None, reply.replace("a + b", "a - b")) is False
    assert await code.is_correct(problem("5"), None, reply) is None  # not a code task


def test_answers_round_trip_as_config_data() -> None:
    for answer, dumped in [
        (MathAnswer(), "math"),
        (TextAnswer(), "text"),
        (ChoiceAnswer(options="ABCDE"), {"type": "multiple_choice", "options": "ABCDE"}),
    ]:
        pipeline = PipelineConfig.single(SelfConsistency(answer=answer), answer=answer)
        data = pipeline.to_data()
        assert data["answer"] == dumped and data["nodes"]["main"]["answer"] == dumped
        assert parse_pipeline(data) == pipeline


def test_a_bad_answer_in_a_config_names_its_path() -> None:
    with pytest.raises(ConfigError) as error:
        parse_pipeline({"type": "generate", "answer": "roman"})
    assert "answer.type: unknown answer 'roman'; expected one of ['code', 'math'," in str(
        error.value
    )
    with pytest.raises(ConfigError, match=r"nodes\.main\.answer\.options"):
        parse_pipeline({"type": "self_consistency", "answer": {"type": "multiple_choice",
                                                               "options": "A"}})


class Parity(Answer):
    """A plugin answer kind: votes on whether the stated number is even."""

    type: Literal["parity"] = "parity"

    def extract(self, text: str) -> str | None:
        digits = [w for w in text.split() if w.isdigit()]
        return digits[-1] if digits else None

    async def key(self, answer: str, grader: object = None) -> str | None:
        return "even" if int(answer) % 2 == 0 else "odd"

    async def is_correct(self, problem, answer, text, grader=None):  # type: ignore[no-untyped-def]
        return None if problem.answer is None or answer is None else (
            await self.key(answer) == problem.answer
        )


async def test_the_vote_and_the_planner_use_the_pipelines_answer_kind() -> None:
    backend = ScriptedBackend(answers("it is 3", "it is 8", "maybe 10", "so 5", "say 4"))
    registry = Registry.default()
    registry.register(Parity)
    pipeline = parse_pipeline(
        {"type": "self_consistency", "inner": {"type": "generate", "n": 5}, "answer": "parity"},
        registry,
    )
    result = await Planner(Runtime(backend=backend)).run(pipeline, problem("even"))
    # Three even numbers outvote two odd ones; the winner keeps its own stated answer.
    assert result.candidates[0].scores["vote_share"] == pytest.approx(3 / 5)
    assert result.answer in {"8", "10", "4"}
    assert await pipeline.answer.is_correct(problem("even"), result.answer, result.text)


async def test_text_votes_group_answers_that_differ_only_in_case_and_punctuation() -> None:
    backend = ScriptedBackend(answers("Paris.", "paris", "Lyon", "The Paris"))
    pipeline = PipelineConfig.single(
        SelfConsistency(inner=Generate(n=4), answer=TextAnswer()), answer=TextAnswer()
    )
    result = await Planner(Runtime(backend=backend)).run(pipeline, Q)
    assert result.candidates[0].scores["vote_share"] == pytest.approx(3 / 4)
    assert await TextAnswer().key(result.answer or "") == "paris"


# -- against the real vLLM server ---------------------------------------------------------------

COLOURS = Problem(
    id="colour",
    prompt="Which of these is a primary colour? (A) green (B) red (C) purple (D) orange. "
    "Reply with the letter only.",
    answer="B",
)


@pytest.mark.vllm
async def test_a_multiple_choice_vote_on_the_real_server(backend) -> None:  # type: ignore[no-untyped-def]
    choice = ChoiceAnswer()
    node = SelfConsistency(
        inner=Generate(n=8, temperature=1.0, max_tokens=16, seed=3), answer=choice
    )
    result = await Planner(Runtime(backend=backend)).run(
        PipelineConfig.single(node, answer=choice), COLOURS
    )
    assert result.error is None and [e.n for e in result.trace.events] == [8]
    groups = result.candidates
    keys = [await choice.key(c.answer or "") for c in groups]
    # One candidate per distinct letter, each letter one of the options, shares summing to 1.
    assert groups and None not in keys and len(set(keys)) == len(keys)
    assert set(keys) <= set("ABCD")
    assert sum(c.scores["vote_share"] for c in groups) == pytest.approx(1.0)
    assert sum(len(c.lineage) for c in groups) <= 8
    assert result.answer == groups[0].answer
    assert await choice.is_correct(COLOURS, result.answer, result.text) == (keys[0] == "B")


@pytest.mark.vllm
async def test_math_answers_need_no_grader_process_for_numbers(backend) -> None:  # type: ignore[no-untyped-def]
    word = Problem(id="w", prompt="Tom has 3 apples and buys 4 more. How many now?", answer="7")
    pipeline = PipelineConfig.single(Generate(temperature=0.0, max_tokens=64))
    result = await Planner(Runtime(backend=backend)).run(pipeline, word)
    assert result.text is not None
    assert result.answer == MathAnswer().extract(result.text)
    expected = result.answer is not None and await MathAnswer().key(result.answer) == "7"
    assert await pipeline.answer.is_correct(word, result.answer, result.text) == expected
