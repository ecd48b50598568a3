"""Checking a plan before it runs. Each problem names its line and says what to write
instead, because the message is what the planner is re-prompted with.

`PlanChecker` checks lines one by one as they stream (the executor starts each line it
accepts); `check_plan` checks a whole plan at once and reports every problem, cycles too.
Lines are numbered 1, 2, 3, ... in order and a line may use only the results of lines
above it, so a plan that passes is a DAG by construction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import networkx as nx
from pydantic import ValidationError

from itc.runtime.tools import Tool
from itc.strategies.tool_dag.plan import JOIN, PlanError, Step, references


@dataclass(frozen=True)
class Call:
    """A checked plan line: its tool and arguments by name (values may hold references)."""

    number: int
    tool: str
    arguments: dict[str, Any] = field(hash=False)
    refs: tuple[int, ...] = ()
    text: str = ""


def bind(step: Step, tool: Tool) -> dict[str, Any]:
    """The step's arguments by field name, literal ones checked against the tool's model
    (those holding references are checked when they are known); ValueError says what is
    wrong."""
    fields = list(tool.arguments.model_fields)
    if len(step.args) > len(fields):
        plural = "" if len(fields) == 1 else "s"
        raise ValueError(
            f"{tool.signature()} takes {len(fields)} argument{plural} "
            f"but {len(step.args)} were given"
        )
    named = dict(zip(fields, step.args, strict=False))
    for name, value in step.kwargs:
        if name not in fields:
            raise ValueError(f"{tool.signature()} has no argument {name!r}")
        if name in named:
            raise ValueError(f"{tool.signature()} is given {name!r} twice")
        named[name] = value
    literal = {k: v for k, v in named.items() if not any(references(v))}
    try:
        tool.arguments.model_validate(literal)
    except ValidationError as error:
        problems = [
            f"{'.'.join(map(str, e['loc'])) or 'arguments'}: {e['msg']}"
            + ("" if e["type"] == "missing" else f" (got {e.get('input')!r:.60})")
            for e in error.errors()
            if not (e["loc"] and e["loc"][0] in named and e["loc"][0] not in literal)
        ]
        if problems:
            raise ValueError(f"{tool.signature()}: {'; '.join(problems)}") from None
    return named


class PlanChecker:
    """Checks a streamed plan line by line: `add` each step as it is parsed (PlanError at
    the first problem), then `finish`. With `references=False` (a round of independent
    calls) no line may use another's result."""

    def __init__(
        self,
        tools: Mapping[str, Tool],
        *,
        references: bool = True,
        max_calls: int | None = None,
        lines: set[int] | None = None,
    ) -> None:
        self.tools = tools
        self.references = references
        self.max_calls = max_calls
        self.lines = lines
        """Every line number of the plan, when it is known whole (not streamed)."""
        self.calls: list[Call] = []
        self.skipped = 0
        self.joined = False
        self._last_line = 0

    def add(self, step: Step) -> Call | None:
        """The checked call, or None for the join line."""
        self._last_line = step.line
        problem = self._problem(step)
        if problem is not None:
            raise PlanError(step.line, step.text, problem)
        if step.is_join:
            self.joined = True
            return None
        assert step.number is not None
        call = Call(
            number=step.number,
            tool=step.tool,
            arguments=bind(step, self.tools[step.tool]),
            refs=tuple(step.refs),
            text=step.text,
        )
        self.calls.append(call)
        return call

    def finish(self) -> None:
        if not self.joined:
            raise PlanError(
                self._last_line + 1,
                "",
                f"the plan ends without a join line: finish it with "
                f"`{len(self.calls) + self.skipped + 1}. {JOIN}()`",
            )

    def _problem(self, step: Step) -> str | None:
        if step.is_join:
            return None if not (step.args or step.kwargs) else "join() takes no arguments"
        expected = len(self.calls) + self.skipped + 1
        if step.number != expected:
            return f"is numbered {step.number}; expected {expected} (number the lines 1, 2, 3, ...)"
        if self.max_calls is not None and expected > self.max_calls:
            return (
                f"a plan may have at most {self.max_calls} calls: "
                f"end it with `{expected}. {JOIN}()`"
            )
        if step.tool not in self.tools:
            known = ", ".join(sorted(self.tools)) or "none"
            return f"unknown tool {step.tool!r}; the tools are: {known}"
        for ref in step.refs:
            problem = self._reference_problem(step.number, ref)
            if problem is not None:
                return problem
        try:
            bind(step, self.tools[step.tool])
        except ValueError as error:
            return str(error)
        return None

    def _reference_problem(self, number: int, ref: int) -> str | None:
        if not self.references:
            return (
                f"uses ${ref}, but the calls of one round run at the same time and cannot use "
                f"each other's results: combine them in the next round"
            )
        if ref == number:
            return f"uses its own result ${ref}: a line can use only the lines above it"
        if ref < 1:
            return f"uses ${ref}, but the lines are numbered from 1"
        if self.lines is not None and ref not in self.lines:
            return f"uses ${ref}, but there is no line {ref}"
        if ref > number:
            return f"uses ${ref}, a later line: a line can use only the results of lines above it"
        return None


def check_plan(
    steps: Sequence[Step], tools: Mapping[str, Tool], *, references: bool = True
) -> tuple[list[Call], list[PlanError]]:
    """A whole plan's calls, or every problem in it: each line's own problems (a reference
    to a line that does not exist among them), cycles, a missing join."""
    numbers = {s.number for s in steps if not s.is_join and s.number is not None}
    checker = PlanChecker(tools, references=references, lines=numbers)
    problems: list[PlanError] = []
    for step in steps:
        try:
            checker.add(step)
        except PlanError as error:
            problems.append(error)
            checker.skipped += 1  # later lines are not all misnumbered for one bad line
        if checker.joined:
            break
    try:
        checker.finish()
    except PlanError as error:
        problems.append(error)
    problems += _cycles(steps)
    problems.sort(key=lambda e: e.line)
    return ([] if problems else checker.calls), problems


def _cycles(steps: Sequence[Step]) -> list[PlanError]:
    lines = {s.number: s for s in steps if not s.is_join and s.number is not None}
    graph = nx.DiGraph()
    graph.add_edges_from(
        (ref, number) for number, s in lines.items() for ref in s.refs if ref in lines
    )
    found = []
    for cycle in nx.simple_cycles(graph):
        first = lines[min(cycle)]
        path = " -> ".join(f"${n}" for n in [*sorted(cycle), min(cycle)])
        found.append(
            PlanError(first.line, first.text, f"lines {path} form a cycle: none of them can start")
        )
    return found
