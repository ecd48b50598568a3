"""The plan language: numbered tool calls whose arguments may use earlier results.

    1. calculator("17 * 23")
    2. document_search(query="Ada Lovelace", top_k=2)
    3. calculator("$1 + ${1} / 2")
    4. join()

An argument is a JSON literal or a reference `$N` / `${N}` to line N's result, several per
argument: inside a list or an object (`[$1, $2]`) or a string (`"$1 + $2"`). A reference
that is a whole argument is the result itself, of its own type (never stringified); one
inside a string puts the result's text there (`$$` is a literal `$`). The plan ends at its
`join()` line; anything after it is ignored. Blank lines and `Thought: ...` lines are
skipped. Arguments are read by a small parser of their own, never `eval`.

`PlanParser` reads a plan as it streams and gives each line as soon as it is complete.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

JOIN = "join"
"""The tool name that ends a plan (no tool may be named so)."""
ANSWER = "Answer:"
ACTION = "Action:"
"""What starts a ReAct turn's one tool call (`Action: tool(args)`)."""

_LINE = re.compile(r"\s*(?:(\d+)\s*\.\s*)?([A-Za-z_][A-Za-z0-9_]*)\s*\((.*)\)\s*", re.DOTALL)
_REFERENCE = re.compile(r"\$\$|\$(\d+)|\$\{(\d+)\}")
_KEYWORD = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*=(?!=)")
_DECODER = json.JSONDecoder()


@dataclass(frozen=True)
class Ref:
    """A reference to line `step`'s result."""

    step: int

    def __str__(self) -> str:
        return f"${self.step}"


@dataclass(frozen=True)
class Template:
    """A string with references in it: its parts are joined as text once they are known."""

    parts: tuple[str | Ref, ...]


class PlanError(ValueError):
    """A plan the executor cannot run, with the line at fault: the planner is re-prompted
    with the message."""

    def __init__(self, line: int, text: str, problem: str) -> None:
        self.line, self.text, self.problem = line, text, problem
        shown = f" `{text.strip()[:160]}`" if text.strip() else ""
        super().__init__(f"line {line}{shown}: {problem}")

    @classmethod
    def several(cls, problems: list[PlanError]) -> PlanError:
        """One error for all of a plan's problems, one per line of its message."""
        if len(problems) == 1:
            return problems[0]
        error = cls(problems[0].line, problems[0].text, problems[0].problem)
        error.args = ("\n".join(str(p) for p in problems),)
        return error


@dataclass(frozen=True)
class Step:
    """One plan line: `number. tool(args, name=value, ...)` as written (not yet checked)."""

    number: int | None
    tool: str
    args: tuple[Any, ...] = ()
    kwargs: tuple[tuple[str, Any], ...] = ()
    line: int = 0
    """Where it stands in the plan text (1-based, blank lines counted)."""
    text: str = ""

    @property
    def is_join(self) -> bool:
        return self.tool == JOIN

    @property
    def refs(self) -> list[int]:
        """The lines it uses, in the order written."""
        found: list[int] = []
        for value in (*self.args, *(v for _, v in self.kwargs)):
            found.extend(r.step for r in references(value) if r.step not in found)
        return found


def references(value: Any) -> Iterator[Ref]:
    """Every reference in an argument value, however deep."""
    if isinstance(value, Ref):
        yield value
    elif isinstance(value, Template):
        yield from (p for p in value.parts if isinstance(p, Ref))
    elif isinstance(value, list):
        for item in value:
            yield from references(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from references(item)


def parse_step(text: str, line: int = 0) -> Step | None:
    """One plan line read (None for a blank or `Thought:` line); PlanError if it is not
    `N. tool(arguments)`."""
    stripped = text.strip()
    if not stripped or stripped.lower().startswith("thought"):
        return None
    match = _LINE.fullmatch(text)
    if match is None:
        raise PlanError(line, text, "expected `N. tool(arguments)` or `N. join()`")
    number, tool, inside = match.groups()
    if number is None and tool != JOIN:
        raise PlanError(line, text, "a tool call needs its line number: `N. tool(arguments)`")
    try:
        args, kwargs = _Arguments(inside).read()
    except ValueError as error:
        raise PlanError(line, text, f"arguments of {tool}: {error}") from None
    return Step(
        number=None if number is None else int(number),
        tool=tool,
        args=tuple(args),
        kwargs=tuple(kwargs),
        line=line,
        text=stripped,
    )


@dataclass
class PlanParser:
    """Reads a plan as it streams: `feed` gives the lines completed by a piece of text,
    `close` the last one. Each parser has its own state (nothing shared between plans).
    With `answers`, `Answer: ...` may stand instead of a plan (the round-based mode)."""

    answers: bool = False
    text: str = ""
    steps: list[Step] = field(default_factory=list)
    joined: bool = False
    """Whether the join line was read (what follows it is ignored)."""
    answer: str | None = None
    _pending: str = ""
    _lines: int = 0

    @property
    def done(self) -> bool:
        """Whether the plan (or the answer) is complete: later text is ignored."""
        return self.joined or self.answer is not None

    def feed(self, piece: str) -> list[Step]:
        self.text += piece
        *complete, self._pending = (self._pending + piece).split("\n")
        return [step for line in complete for step in self._read(line)]

    def close(self) -> list[Step]:
        last, self._pending = self._pending, ""
        return self._read(last) if last.strip() else []

    def _read(self, text: str) -> list[Step]:
        self._lines += 1
        if self.done:
            return []
        if self.answers and not self.steps and text.strip().startswith(ANSWER):
            self.answer = text.strip()[len(ANSWER) :].strip()
            return []
        step = parse_step(text, self._lines)
        if step is None:
            return []
        self.joined = step.is_join
        self.steps.append(step)
        return [step]


class _Arguments:
    """A recursive-descent reader of `value, value, name=value` where values are JSON with
    references."""

    def __init__(self, text: str) -> None:
        self.text, self.at = text, 0

    def read(self) -> tuple[list[Any], list[tuple[str, Any]]]:
        args: list[Any] = []
        kwargs: list[tuple[str, Any]] = []
        if self._skip() == len(self.text):
            return args, kwargs
        while True:
            keyword = _KEYWORD.match(self.text, self._skip())
            if keyword is not None:
                name = keyword.group(1)
                if any(name == seen for seen, _ in kwargs):
                    raise ValueError(f"{name}= is given twice")
                self.at = keyword.end()
                kwargs.append((name, self._value()))
            elif kwargs:
                raise ValueError("a positional argument after a named one")
            else:
                args.append(self._value())
            if self._skip() == len(self.text):
                return args, kwargs
            self._expect(",")

    def _skip(self) -> int:
        while self.at < len(self.text) and self.text[self.at].isspace():
            self.at += 1
        return self.at

    def _expect(self, char: str) -> None:
        if self._skip() >= len(self.text) or self.text[self.at] != char:
            hint = ""
            if self.text[self.at : self.at + 1] in ("+", "-", "*", "/", "%"):
                hint = ' (to combine results, write them inside a string: "$1 + $2")'
            raise ValueError(f"expected {char!r} at {self._here()}{hint}")
        self.at += 1

    def _here(self) -> str:
        rest = self.text[self.at : self.at + 20]
        return f"{rest!r}" if rest else "the end"

    def _value(self) -> Any:
        self._skip()
        char = self.text[self.at : self.at + 1]
        if char == "$":
            return self._reference()
        if char == "[":
            return self._list()
        if char == "{":
            return self._object()
        try:
            value, end = _DECODER.raw_decode(self.text, self.at)
        except ValueError:
            raise ValueError(
                f"expected a JSON value or a reference $N at {self._here()} (strings take "
                f"double quotes; true, false and null are lowercase; combine results inside a "
                f'string: "$1 + $2")'
            ) from None
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{self.text[self.at : end]} is not a number JSON allows")
        self.at = end
        return _template(value) if isinstance(value, str) else value

    def _reference(self) -> Ref:
        match = re.compile(r"\$(?:(\d+)|\{(\d+)\})").match(self.text, self.at)
        if match is None:
            raise ValueError(f"expected a reference $N or ${{N}} at {self._here()}")
        self.at = match.end()
        return Ref(int(match.group(1) or match.group(2)))

    def _list(self) -> list[Any]:
        self.at += 1
        items: list[Any] = []
        if self._skip() < len(self.text) and self.text[self.at] == "]":
            self.at += 1
            return items
        while True:
            items.append(self._value())
            if self._skip() < len(self.text) and self.text[self.at] == "]":
                self.at += 1
                return items
            self._expect(",")

    def _object(self) -> dict[str, Any]:
        self.at += 1
        items: dict[str, Any] = {}
        if self._skip() < len(self.text) and self.text[self.at] == "}":
            self.at += 1
            return items
        while True:
            self._skip()
            try:
                key, self.at = _DECODER.raw_decode(self.text, self.at)
            except ValueError:
                key = None
            if not isinstance(key, str):
                raise ValueError(f"expected an object key (a JSON string) at {self._here()}")
            self._expect(":")
            items[key] = self._value()
            if self._skip() < len(self.text) and self.text[self.at] == "}":
                self.at += 1
                return items
            self._expect(",")


def _template(text: str) -> str | Template:
    """A decoded string, with its references (if any) split out; `$$` is a literal `$`."""
    parts: list[str | Ref] = []
    last = 0
    for match in _REFERENCE.finditer(text):
        parts.append(text[last : match.start()])
        number = match.group(1) or match.group(2)
        parts.append("$" if number is None else Ref(int(number)))
        last = match.end()
    if not parts:
        return text
    parts.append(text[last:])
    merged: list[str | Ref] = []
    for part in parts:
        if isinstance(part, str) and merged and isinstance(merged[-1], str):
            merged[-1] += part
        elif part != "":
            merged.append(part)
    if not any(isinstance(p, Ref) for p in merged):
        return "".join(str(p) for p in merged)
    return Template(tuple(merged))
