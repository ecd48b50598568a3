"""The built-in answer kinds: math, short text, multiple choice and code.

Each one reads the final answer out of a solution, keys it for votes and grades it, so the
planner, self-consistency and the benchmark runner all see the same answer. More kinds plug in
like scorers (a `Component` subclass with its own `type`, registered or exposed as a plugin).
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from itc.nodes import Answer
from itc.runtime.context import Grader
from itc.types import Problem
from itc.verifiers.code import extract_code, run_humaneval
from itc.verifiers.math import extract_answer, normalize_number
from itc.verifiers.text import exact_match, normal_text


class MathAnswer(Answer):
    """A final number or expression (boxed, "the answer is", GSM8K `####`, or the last number).

    Plain numbers compare exactly with no grader; with one (a `MathGrader`), expressions compare
    symbolically through math-verify (`\\frac{1}{2}` == `0.5`).
    """

    type: Literal["math"] = "math"

    def extract(self, text: str) -> str | None:
        return extract_answer(text)

    async def key(self, answer: str, grader: Grader | None = None) -> str | None:
        if grader is not None:
            return await grader.canonical_key(answer)
        return normalize_number(answer) or " ".join(answer.strip().strip("$").split())

    async def is_correct(
        self, problem: Problem, answer: str | None, text: str | None, grader: Grader | None = None
    ) -> bool | None:
        if problem.answer is None:
            return None
        if answer is None:
            return False
        if grader is not None:
            return await grader.is_equivalent(problem.answer, answer)
        return await self.key(problem.answer) == await self.key(answer)


class TextAnswer(Answer):
    """A short free-text answer: the whole reply, compared after normalisation (case,
    punctuation, a leading article; numbers to the gold's precision)."""

    type: Literal["text"] = "text"

    def extract(self, text: str) -> str | None:
        return text.strip() or None

    async def key(self, answer: str, grader: Grader | None = None) -> str | None:
        return normalize_number(answer) or normal_text(answer) or None

    async def is_correct(
        self, problem: Problem, answer: str | None, text: str | None, grader: Grader | None = None
    ) -> bool | None:
        if problem.answer is None:
            return None
        return exact_match(problem.answer, answer or text or "")


class ChoiceAnswer(Answer):
    """One option letter of a multiple-choice question (GPQA-style), read from a box,
    an "answer is (B)" phrase, or the last standalone option letter."""

    type: Literal["multiple_choice"] = "multiple_choice"
    options: str = Field(default="ABCD", min_length=2, description="The option letters.")

    @field_validator("options")
    @classmethod
    def _letters(cls, options: str) -> str:
        if not options.isalpha() or len(set(options.upper())) != len(options):
            raise ValueError(f"options must be distinct letters, got {options!r}")
        return options.upper()

    def _patterns(self) -> tuple[re.Pattern[str], ...]:
        letter = f"([{self.options}])"
        return (
            re.compile(rf"\\boxed\{{\s*\(?{letter}\)?\s*\}}"),
            re.compile(rf"\banswer\b[^A-Za-z0-9\n]{{0,20}}(?:is\s*)?[:\s]*\(?{letter}\b\)?"),
            re.compile(rf"\({letter}\)"),
            re.compile(rf"(?<![A-Za-z]){letter}(?![A-Za-z])"),
        )

    def extract(self, text: str) -> str | None:
        for pattern in self._patterns():
            found = pattern.findall(text)
            if found:
                return found[-1]
        return None

    async def key(self, answer: str, grader: Grader | None = None) -> str | None:
        letter = answer.strip().strip("()").upper()
        return letter if len(letter) == 1 and letter in self.options else None

    async def is_correct(
        self, problem: Problem, answer: str | None, text: str | None, grader: Grader | None = None
    ) -> bool | None:
        if problem.answer is None:
            return None
        picked = await self.key(answer) if answer is not None else None
        return picked is not None and picked == await self.key(problem.answer)


class CodeAnswer(Answer):
    """A program (HumanEval-style): the last fenced block, graded by running the task's tests
    in a sandboxed subprocess with time and memory limits."""

    type: Literal["code"] = "code"
    timeout: float = Field(default=10.0, gt=0, description="Seconds the tests may run.")
    memory_mb: int = Field(default=1024, ge=64, description="Memory limit of the test run.")

    def extract(self, text: str) -> str | None:
        code = extract_code(text).strip()
        return code or None

    async def key(self, answer: str, grader: Grader | None = None) -> str | None:
        lines = (line.rstrip() for line in answer.strip().splitlines())
        return "\n".join(line for line in lines if line) or None

    async def is_correct(
        self, problem: Problem, answer: str | None, text: str | None, grader: Grader | None = None
    ) -> bool | None:
        if not problem.metadata.get("test"):
            return None
        if text is None:
            return False
        result = await run_humaneval(
            problem, text, timeout=self.timeout, memory_mb=self.memory_mb
        )
        return result.passed


BUILTIN_ANSWERS: tuple[type[Answer], ...] = (MathAnswer, TextAnswer, ChoiceAnswer, CodeAnswer)
