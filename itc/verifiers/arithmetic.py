"""Arithmetic claims checked exactly: a cheap, real process verifier for word problems.

Every `a op b = c` a solution states ("96 - 39 = 57", "7 x 7 = 49 stickers", "(3 + 4) * 2 = 14")
is parsed by a small recursive-descent parser over exact fractions and compared with the
number stated after `=`. Model text is never evaluated as code. A step with no claim is
neutral; a step is right when all its claims hold and wrong when any fails.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import ClassVar, Literal

from pydantic import Field

from itc.nodes import CostBound, StepScorer, fold
from itc.runtime.context import NodeContext
from itc.runtime.steps import Partial
from itc.types import Candidate

_TOKEN = re.compile(
    r"(?P<num>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?)"
    r"|(?P<op>[-+*/×÷·−])"
    r"|(?P<times>(?<![A-Za-z])x)(?=\s*\$?\d)"
    r"|(?P<open>\()|(?P<close>\))"
    r"|(?P<eq>=)"
    r"|(?P<skip>[ \t$])"
    r"|(?P<other>.)",
    re.DOTALL,
)
_OPS = {"×": "*", "·": "*", "x": "*", "÷": "/", "−": "-"}


@dataclass(frozen=True)
class Claim:
    """One stated equation: its left side as written, its exact value, the stated result."""

    expression: str
    value: Fraction
    stated: Fraction

    @property
    def holds(self) -> bool:
        return self.value == self.stated


_LATEX = (
    (re.compile(r"\\text\{[^{}]*\}|\\(?:mathrm|textbf|mbox)\{[^{}]*\}"), " "),  # units
    (re.compile(r"\\d?frac\{([^{}]*)\}\{([^{}]*)\}"), r"(\1)/(\2)"),
    (re.compile(r"\\(?:times|cdot)(?![A-Za-z])"), "*"),
    (re.compile(r"\\div(?![A-Za-z])"), "/"),
    (re.compile(r"\\left|\\right|\\[\[\]()]|\\[,;!]"), " "),
    (re.compile(r"\\\$"), "$"),
    (re.compile(r"\{"), "("),
    (re.compile(r"\}"), ")"),
)


def _plain(text: str) -> str:
    """LaTeX arithmetic as plain operators: `\\[ 3 \\times 4 \\text{ eggs} = 12 \\]` reads as
    `3 * 4 = 12` (models write both forms)."""
    if "\\" not in text:
        return text
    for pattern, replacement in _LATEX:
        text = pattern.sub(replacement, text)
    return text


def _tokens(text: str) -> list[tuple[str, str]]:
    found = []
    for match in _TOKEN.finditer(_plain(text)):
        kind = match.lastgroup
        assert kind is not None
        if kind == "skip":
            continue
        value = match.group()
        if kind == "times":
            kind = "op"
        if kind == "op":
            value = _OPS.get(value, value)
        found.append((kind, value))
    return found


class _Parser:
    """expr := term (('+'|'-') term)*; term := factor (('*'|'/') factor)*;
    factor := '-' factor | number | '(' expr ')'."""

    def __init__(self, tokens: Sequence[tuple[str, str]]) -> None:
        self.tokens = tokens
        self.at = 0

    def parse(self) -> Fraction | None:
        try:
            value = self._expr()
        except (ValueError, ZeroDivisionError):
            return None
        return value if self.at == len(self.tokens) else None

    def _peek(self) -> tuple[str, str] | None:
        return self.tokens[self.at] if self.at < len(self.tokens) else None

    def _take(self) -> tuple[str, str]:
        token = self._peek()
        if token is None:
            raise ValueError("expression ends early")
        self.at += 1
        return token

    def _expr(self) -> Fraction:
        value = self._term()
        while (token := self._peek()) is not None and token[1] in ("+", "-"):
            self.at += 1
            value = value + self._term() if token[1] == "+" else value - self._term()
        return value

    def _term(self) -> Fraction:
        value = self._factor()
        while (token := self._peek()) is not None and token[1] in ("*", "/"):
            self.at += 1
            value = value * self._factor() if token[1] == "*" else value / self._factor()
        return value

    def _factor(self) -> Fraction:
        kind, value = self._take()
        if kind == "op" and value == "-":
            return -self._factor()
        if kind == "num":
            return Fraction(value.replace(",", ""))
        if kind == "open":
            inner = self._expr()
            if self._take()[0] != "close":
                raise ValueError("unclosed parenthesis")
            return inner
        raise ValueError(f"unexpected {value!r}")


def claims(text: str) -> list[Claim]:
    """Every equation in `text` whose left side has an operator and whose right side is a
    number, in order. Restatements ("x = 5"), prose and malformed expressions are skipped."""
    tokens = _tokens(text)
    found = []
    for index, (kind, _) in enumerate(tokens):
        if kind != "eq" or index + 1 >= len(tokens):
            continue
        start = index
        while start > 0 and tokens[start - 1][0] in ("num", "op", "open", "close"):
            start -= 1
        left = list(tokens[start:index])
        while left and (
            (left[0][0] == "open" and _unbalanced(left)) or left[0] in (("op", "*"), ("op", "/"))
        ):
            left.pop(0)  # "(so 5 + 3 = 8)": the parenthesis opens the aside, not the sum
        right = tokens[index + 1]
        negative = right == ("op", "-") and index + 2 < len(tokens)
        if negative:
            right = tokens[index + 2]
        if right[0] != "num" or not any(k == "op" for k, _ in left[1:]):
            continue
        value = _Parser(left).parse()
        if value is None:
            continue
        stated = Fraction(right[1].replace(",", ""))
        expression = " ".join(v for _, v in left)
        found.append(Claim(expression, value, -stated if negative else stated))
    return found


def _unbalanced(tokens: Sequence[tuple[str, str]]) -> bool:
    depth = sum(1 if k == "open" else -1 if k == "close" else 0 for k, _ in tokens)
    return depth > 0


def step_verdicts(steps: Sequence[str]) -> list[bool | None]:
    """Per step: True when all its claims hold, False when one fails, None with no claim."""
    verdicts: list[bool | None] = []
    for step in steps:
        stated = claims(step)
        verdicts.append(all(c.holds for c in stated) if stated else None)
    return verdicts


class ArithmeticCheck(StepScorer):
    """Scores a solution by the arithmetic it states, step by step, with no LLM call.

    A step whose claims all hold scores 1, one with a false claim 0, one with no claim
    `neutral`. As an outcome scorer the text is split at `delimiter` (a line, by default) and
    folded by `aggregate` (`min`, the default: one false equation spoils a solution, as a
    process verifier should judge it).
    """

    type: Literal["arithmetic_check"] = "arithmetic_check"
    delimiter: str = Field(default="\n", min_length=1, description="What separates steps.")
    neutral: float = Field(
        default=0.5, ge=0.0, le=1.0, description="Score of a step that states no arithmetic."
    )
    needs_token_logprobs: ClassVar[bool] = False

    def step_reward(self, step: str) -> float:
        stated = claims(step)
        if not stated:
            return self.neutral
        return 1.0 if all(c.holds for c in stated) else 0.0

    def step_scores(self, text: str) -> list[float]:
        steps = [s for s in text.split(self.delimiter) if s.strip()]
        return [self.step_reward(s) for s in steps] or [self.neutral]

    def score_text(self, text: str) -> float:
        return fold(self.step_scores(text), self.aggregate)

    async def score_steps(self, ctx: NodeContext, prefixes: list[Partial]) -> list[float]:
        return [self.step_reward(p.steps[-1]) if p.steps else self.neutral for p in prefixes]

    def worst_case_steps(self, steps: int) -> CostBound:
        return CostBound()

    async def score(self, ctx: NodeContext, candidates: list[Candidate]) -> list[float]:
        return [self.score_text(c.text) for c in candidates]
