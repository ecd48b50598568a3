"""Math answer extraction, numeric normalisation and math-verify equivalence (no server)."""

from __future__ import annotations

import asyncio
import pathlib
import time
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

import itc.verifiers.math as math_verifier
from itc.verifiers.math import MathGrader, extract_answer, normalize_number

# ---------------------------------------------------------------------------------------------
# extract_answer
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # \boxed / \fbox: the last complete one, nested braces balanced.
        ("First \\boxed{1}, then corrected: \\boxed{2}.", "2"),
        ("So $\\boxed{\\frac{1}{2}}$.", "\\frac{1}{2}"),
        ("\\boxed{\\sqrt{\\frac{a}{b^{2}}}}", "\\sqrt{\\frac{a}{b^{2}}}"),
        ("\\fbox{7}", "7"),
        ("\\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),
        ("\\boxed{5} but the output was cut: \\boxed{\\frac{1}{", "5"),
        ("\\boxed{ 12 }", "12"),
        ("so $\\boxed 5$", "5"),
        # A box beats every other form, wherever they appear.
        ("\\boxed{3}. The answer is 4.\n#### 5", "3"),
        # Answer phrases: case-insensitive, last one wins, X runs to sentence or line end.
        ("The answer is 42.", "42"),
        ("THE ANSWER IS 9", "9"),
        ("the answer is $\\frac{1}{2}$.", "\\frac{1}{2}"),
        ("Final answer: 7", "7"),
        ("**Final Answer:** 12", "12"),
        ("**Final Answer**: 12", "12"),
        ("Answer: **3.5**.", "3.5"),
        ("The answer is 3.75. That is because 15/4 = 3.75", "3.75"),
        ("The answer is 3. No wait, the answer is 4.", "4"),
        ("Answer: x = 5\nCheck: 2 + 3 = 5", "x = 5"),
        ("Final answer:\n\n  -8", "-8"),
        ("The answer is 1,234 dollars.", "1,234"),
        # A phrase beats GSM8K markers, which beat a bare last number.
        ("#### 5\nSo the answer is 6", "6"),
        ("Natalia sold 48 + 24 = 72 clips.\n#### 72", "72"),
        ("#### 1,234", "1,234"),
        ("#### 18\nThat took 3 steps.", "18"),
        # Last number: negatives, decimals, thousands separators, fractions.
        ("I have 3 apples and 5 pears", "5"),
        ("The temperature fell to -2.5 degrees", "-2.5"),
        ("x = -4", "-4"),
        ("Total: $1,200.50.", "1,200.50"),
        ("over 1,234,567 people", "1,234,567"),
        ("a share of 3/4 of it", "3/4"),
        ("pi is roughly 3.14", "3.14"),
        ("compute 5-3", "3"),
        ("a .5 chance", ".5"),
    ],
)
def test_extract_answer(text: str, expected: str) -> None:
    assert extract_answer(text) == expected


@pytest.mark.parametrize("text", ["", "no digits here at all", "Answer: ", "\\boxed{}"])
def test_extract_answer_none(text: str) -> None:
    assert extract_answer(text) is None


# ---------------------------------------------------------------------------------------------
# normalize_number
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("5", "5"),
        ("5.0", "5"),
        ("5.", "5"),
        ("-0", "0"),
        ("+3", "3"),
        ("0.5", "1/2"),
        (".5", "1/2"),
        ("1/2", "1/2"),
        ("2/4", "1/2"),
        ("-6/3", "-2"),
        ("\\frac{1}{2}", "1/2"),
        ("-\\dfrac{2}{4}", "-1/2"),
        ("1,234", "1234"),
        ("1,234,567.50", "2469135/2"),
        ("$1,000", "1000"),
        ("\\$5", "5"),
        ("-$5", "-5"),
        ("$\\frac{3}{4}$", "3/4"),
        ("1{,}000", "1000"),
        ("1\\,000", "1000"),
        ("−7", "-7"),
        ("50%", "50"),
        ("12.5\\%", "25/2"),
        (" 42 ", "42"),
    ],
)
def test_normalize_number(raw: str, expected: str) -> None:
    assert normalize_number(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "x",
        "5 apples",
        "1,23",
        "12,34,567",
        "1/0",
        "\\frac{1}{0}",
        "1/2/3",
        "\\sqrt{2}",
        "1e5",
        "2+3",
        "%",
        "9" * 2000,
    ],
)
def test_normalize_number_rejects(raw: str) -> None:
    assert normalize_number(raw) is None


# ---------------------------------------------------------------------------------------------
# MathGrader
# ---------------------------------------------------------------------------------------------


@pytest_asyncio.fixture(scope="module")
async def grader() -> AsyncIterator[MathGrader]:
    async with MathGrader() as g:
        yield g


@pytest.mark.parametrize(
    ("gold", "predicted"),
    [
        ("\\frac{1}{2}", "0.5"),
        ("0.5", "\\frac{1}{2}"),
        ("1,000", "1000"),
        ("1,234", "1234.00"),
        ("18", "$18"),
        ("x^2+2x+1", "(x+1)^2"),
        ("\\sqrt{2}/2", "\\frac{\\sqrt 2}{2}"),
        ("\\frac{\\pi}{2}", "\\pi/2"),
        ("\\frac{1}{3}", "0.3333333"),
        ("\\{1, 2\\}", "\\{2, 1\\}"),
        ("5", "x = 5"),
        ("50", "50\\%"),
    ],
)
async def test_equivalent(grader: MathGrader, gold: str, predicted: str) -> None:
    assert await grader.is_equivalent(gold, predicted)


@pytest.mark.parametrize(
    ("gold", "predicted"),
    [
        ("\\frac{1}{3}", "0.5"),
        ("1,000", "100"),
        ("2", "-2"),
        ("x^2", "x^3"),
        ("\\sqrt{2}/2", "\\sqrt{3}/2"),
        ("\\pi", "3.14"),
        ("7", "seven apples and no number"),
    ],
)
async def test_not_equivalent(grader: MathGrader, gold: str, predicted: str) -> None:
    assert not await grader.is_equivalent(gold, predicted)


async def test_canonical_keys_group_equivalent_answers(grader: MathGrader) -> None:
    halves = ["0.5", "\\frac{1}{2}", "1/2", "2/4", "$.50$"]
    assert {await grader.canonical_key(a) for a in halves} == {"1/2"}
    assert await grader.canonical_key("1,000") == await grader.canonical_key("1000.0") == "1000"
    root = await grader.canonical_key("\\sqrt{2}/2")
    assert root == await grader.canonical_key("\\frac{\\sqrt 2}{2}")
    assert root != await grader.canonical_key("\\sqrt{3}/2")
    # Numbers math-verify reaches (here via \sqrt) print like normalize_number's output.
    assert await grader.canonical_key("\\sqrt{4}") == "2"


async def test_canonical_key_text_fallback(grader: MathGrader) -> None:
    assert await grader.canonical_key("  }{   ") == "}{"


async def test_numbers_need_no_worker_process() -> None:
    g = MathGrader()
    assert await g.canonical_key("1,234") == "1234"
    assert await g.is_equivalent("1,234", "1234")
    assert g._pool is None
    g.close()


async def test_math_answers_grade_solution_texts(grader: MathGrader) -> None:
    from itc.types import Problem
    from itc.verifiers.answers import MathAnswer

    async def grade(gold: str, text: str) -> bool | None:
        math = MathAnswer()
        task = Problem(id="q", prompt="?", answer=gold)
        return await math.is_correct(task, math.extract(text), text, grader)

    assert await grade("\\frac{1}{2}", "Halving gives \\boxed{0.5}.")
    assert await grade("1,234", "She pays 1000 + 234 = 1,234 dollars.\n#### 1,234")
    assert await grade("72", "In May she sold 48/2 = 24, so 48 + 24 = 72 in total.")
    assert not await grade("72", "So the answer is 70.")
    assert not await grade("72", "I do not know.")


def test_closed_grader_refuses_work() -> None:
    with MathGrader() as g:
        pass
    with pytest.raises(RuntimeError, match="closed"):
        g._ensure_pool()


@pytest.fixture(scope="module")
def warm_parent() -> None:
    """Warm math-verify in this process, so that forked workers (including the replacements
    after a timeout) start warm: the timeout tests stay fast. Forked workers also resolve this
    module's helpers such as ``_hang`` without importing the test module again."""
    math_verifier._warm_up_job()


@pytest_asyncio.fixture(scope="module")
async def forked_grader(warm_parent: None) -> AsyncIterator[MathGrader]:
    async with MathGrader(max_workers=1, mp_context="fork") as g:
        yield g


async def test_hung_worker_is_killed_and_grader_recovers(
    forked_grader: MathGrader, monkeypatch: pytest.MonkeyPatch
) -> None:
    g = forked_grader
    assert await g.is_equivalent("x^2+2x+1", "(x+1)^2")  # pool up and warm
    pool = g._pool
    assert pool is not None
    workers = list(pool._processes.values())  # type: ignore[union-attr]
    monkeypatch.setattr(g, "timeout", 0.3)
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        await g._run(time.sleep, 60)
    assert time.monotonic() - start < 3
    assert g._pool is not pool
    # Killed at once; the pool's own manager thread may reap the exit a moment later.
    for worker in workers:
        worker.join(5)
    assert workers and not any(w.is_alive() for w in workers)
    monkeypatch.undo()
    assert await g.is_equivalent("x^2+2x+1", "(x+1)^2")
    assert not await g.is_equivalent("x^2", "x^3")
    assert await g.canonical_key("\\frac{\\sqrt 2}{2}") == "sqrt(2)/2"


def _hang(*args: str) -> bool:
    time.sleep(60)
    return True


async def test_timeout_counts_as_not_equivalent(
    forked_grader: MathGrader, monkeypatch: pytest.MonkeyPatch
) -> None:
    g = forked_grader
    with monkeypatch.context() as patch:
        patch.setattr(g, "timeout", 0.3)
        patch.setattr(math_verifier, "_verify_job", _hang)
        patch.setattr(math_verifier, "_key_job", _hang)
        assert not await g.is_equivalent("x^2+2x+1", "(x+1)^2")
        assert await g.canonical_key("x  +  1") == "x + 1"  # text fallback
    assert await g.is_equivalent("x^2+2x+1", "(x+1)^2")


def _hang_first_time(marker: str) -> str:
    """Hang unless ``marker`` exists (creating it), so only a retried call comes back."""
    path = pathlib.Path(marker)
    if not path.exists():
        path.touch()
        time.sleep(60)
    return "retried"


async def test_calls_killed_by_another_calls_timeout_are_retried(
    warm_parent: None, tmp_path: pathlib.Path
) -> None:
    # Two workers: one hangs, the other is running a job when the pool is killed.
    async with MathGrader(timeout=0.5, max_workers=2, mp_context="fork") as g:
        assert await g.is_equivalent("x^2+2x+1", "(x+1)^2")  # both workers up and warm

        async def hang() -> None:
            with pytest.raises(TimeoutError):
                await g._run(time.sleep, 60)

        async def collateral() -> str:
            await asyncio.sleep(0.25)  # in the second worker when the first one is killed
            return await g._run(_hang_first_time, str(tmp_path / "marker"))

        _, result = await asyncio.gather(hang(), collateral())
        assert result == "retried"
