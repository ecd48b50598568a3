"""What the planner and the joiner are shown: the tools, an example plan made of the real
tools, earlier plans with their results."""

from __future__ import annotations

import typing
from collections.abc import Mapping, Sequence
from typing import Any

from itc.runtime.tools import Tool
from itc.strategies.tool_dag.execute import Observation
from itc.strategies.tool_dag.plan import ACTION, JOIN

PLAN_TEMPLATE = (
    "Answer the question with the help of these tools:\n{tools}\n\n"
    "Write a plan: numbered lines, one tool call each, then a join line. A call can use the "
    "result of an earlier line N as $N, alone or inside a string. Calls that do not use each "
    "other's results run at the same time. For example:\n{example}\n\n{context}"
    "Question: {question}"
)
JOIN_TEMPLATE = (
    "Question: {question}\n\n{context}\n\n"
    "Reply with `Answer: ` and the answer to the question{replan}."
)
ROUNDS_TEMPLATE = (
    "Answer the question with the help of these tools:\n{tools}\n\n"
    "Work in rounds. Each round, either write `Answer: ` and the answer, or write numbered "
    "tool calls that do not use each other's results (they run at the same time), then a "
    "join line. For example:\n{example}\n\n{context}Question: {question}"
)
REACT_TEMPLATE = (
    "Answer the question with the help of these tools:\n{tools}\n\n"
    "Work one step at a time. Each turn, write either one tool call as `Action: ` and the "
    "call (you will see its result), or `Answer: ` and the answer. For example:\n"
    "{example}\n\nQuestion: {question}\n\n{context}"
)
REPLAN = ", or `Replan: ` and what is missing if the results are not enough to answer"


def example_plan(tools: Mapping[str, Tool], references: bool = True) -> str:
    """Two calls of the first tool (the second using the first's result when references
    are allowed) and the join line, so the example shows the real syntax."""
    tool = next(iter(tools.values()))
    first = f"1. {tool.name}({_sample_arguments(tool, None)})"
    second = f"2. {tool.name}({_sample_arguments(tool, 1 if references else None)})"
    return "\n".join([first, second, f"3. {JOIN}()"])


def example_call(tools: Mapping[str, Tool]) -> str:
    """One call of the first tool, as a ReAct turn writes it."""
    tool = next(iter(tools.values()))
    return f"{ACTION} {tool.name}({_sample_arguments(tool, None)})"


def _sample_arguments(tool: Tool, ref: int | None) -> str:
    values = []
    for name, field in tool.arguments.model_fields.items():
        if not field.is_required():
            continue
        annotation = field.annotation
        if typing.get_origin(annotation) is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        if ref is not None and not values:
            values.append(f'"... ${ref} ..."' if annotation is str else f"${ref}")
        else:
            values.append(_sample(annotation, name))
    return ", ".join(values)


def _sample(annotation: Any, name: str) -> str:
    if annotation is str:
        return f'"<{name}>"'
    if annotation is int:
        return "1"
    if annotation is float:
        return "1.5"
    if annotation is bool:
        return "true"
    return "null"


def plan_lines(calls: Sequence[str]) -> str:
    return "\n".join(calls) if calls else "(no calls)"


def results_text(observations: Sequence[Observation], max_chars: int) -> str:
    """One line per result: `$N = value`, or why there is none."""
    if not observations:
        return "(no results)"
    return "\n".join(
        f"${o.step} = {o.shown(max_chars)}" if o.ok else f"${o.step} {o.shown(max_chars)}"
        for o in observations
    )


def round_results_text(
    calls: Sequence[str], observations: Sequence[Observation], max_chars: int
) -> str:
    """A round's calls with their results: `tool(args) = value`."""
    by_step = {o.step: o for o in observations}
    lines = []
    for number, text in enumerate(calls, 1):
        call = text.split(".", 1)[1].strip() if "." in text else text
        seen = by_step.get(number)
        shown = "not run" if seen is None else seen.shown(max_chars)
        lines.append(f"{call} = {shown}" if seen is not None and seen.ok else f"{call}: {shown}")
    return "\n".join(lines) or "(no calls)"
