"""Grammars (EBNF, as vLLM's `structured_outputs.grammar` takes it) that make a model's
plan parse and pass its checks, whatever the model's size.

Built from the tools' names and argument types: line k is numbered k and calls a known tool
with its required arguments in order (then any optional ones by name), each of its type
(a string, an integer, a list of numbers, ...) or a reference `$j` to a line above it
(j < k), so forward references and cycles cannot be written at all. Strings and lists are
bounded, so a plan always finishes within its token budget; after at most `max_calls`
calls comes `N. join()` and the end.
"""

from __future__ import annotations

import collections.abc
import enum
import json
import types
import typing
from collections.abc import Mapping
from typing import Any

from itc.runtime.tools import Tool
from itc.strategies.tool_dag.plan import ACTION, ANSWER, JOIN

_SEQUENCES = (list, tuple, set, frozenset, collections.abc.Sequence)


def literal(text: str) -> str:
    """An EBNF string literal matching `text` exactly."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def plan_grammar(
    tools: Mapping[str, Tool],
    *,
    max_calls: int = 6,
    references: bool = True,
    max_string_chars: int = 60,
    answer_chars: int = 0,
) -> str:
    """A plan of 1 to `max_calls` calls then a join line; with `references=False` no line
    may use another's result (a round of independent calls). `answer_chars` > 0 also allows
    `Answer: ...` (at most that many characters) instead of a plan."""
    if not tools:
        raise ValueError("a plan grammar needs at least one tool")
    if JOIN in tools:
        raise ValueError(f"no tool may be named {JOIN!r}: it ends a plan")
    rules = _Rules(max_string_chars)
    for k in range(1, max_calls + 1):
        level = k - 1 if references else 0
        call = rules.call(tools, level)
        after = literal(f"{k + 1}. {JOIN}()")
        more = f"(line{k + 1} | {after})" if k < max_calls else after
        rules.add(f"line{k}", f'{literal(f"{k}. ")} {call} "\\n" {more}')
    root = "line1"
    if answer_chars > 0:
        root = f"line1 | {literal('Answer: ')} {rules.text(answer_chars)}"
    return rules.render(root)


def action_grammar(
    tools: Mapping[str, Tool], *, max_string_chars: int = 60, answer_chars: int = 200
) -> str:
    """One ReAct turn: `Action: tool(args)` (no references: earlier results are in the
    prompt as observations) or, when `answer_chars` > 0, `Answer: ...`."""
    if not tools:
        raise ValueError("an action grammar needs at least one tool")
    rules = _Rules(max_string_chars)
    root = f"{literal(ACTION + ' ')} {rules.call(tools, 0)}"
    if answer_chars > 0:
        root += f" | {literal(ANSWER + ' ')} {rules.text(answer_chars)}"
    return rules.render(root)


def decision_grammar(replan: bool, max_chars: int = 200) -> str:
    """`Answer: ...`, or also `Replan: ...` when a new plan may still be asked for."""
    rules = _Rules(0)
    text = rules.text(max_chars)
    root = f"{literal('Answer: ')} {text}"
    if replan:
        root += f" | {literal('Replan: ')} {text}"
    return rules.render(root)


class _Rules:
    """Named rules, each added once; value rules are per reference level (how many lines
    above may be referred to; 0: none)."""

    def __init__(self, max_string_chars: int) -> None:
        self.max_string_chars = max_string_chars
        self.rules: dict[str, str] = {}

    def add(self, name: str, body: str) -> str:
        self.rules.setdefault(name, body)
        return name

    def render(self, root: str) -> str:
        return "\n".join([f"root ::= {root}", *(f"{n} ::= {b}" for n, b in self.rules.items())])

    def text(self, max_chars: int) -> str:
        return self.add(f"line_text{max_chars}", f"[^\\n ] [^\\n]{{0,{max_chars - 1}}}")

    def call(self, tools: Mapping[str, Tool], level: int) -> str:
        options = [self._tool(tool, level) for tool in tools.values()]
        return self.add(f"call_{level}", " | ".join(options))

    def _tool(self, tool: Tool, level: int) -> str:
        parts: list[str] = []
        for name, field in tool.arguments.model_fields.items():
            value = self.value(field.annotation, level)
            if field.is_required():
                parts.append(value if not parts else f'", " {value}')
            elif parts:  # optional ones by name, after the required ones
                parts.append(f"({literal(f', {name}=')} {value})?")
        body = " ".join([literal(f"{tool.name}("), *parts, literal(")")])
        return self.add(f"tool_{tool.name}_{level}", body)

    def value(self, annotation: Any, level: int) -> str:
        """A value of the type, or a reference to a line above."""
        typed = self._typed(annotation, level)
        return f"({typed} | {self.reference(level)})" if level else typed

    def reference(self, level: int) -> str:
        numbers = " | ".join(literal(str(n)) for n in range(level, 0, -1))
        return self.add(f"ref_{level}", f'"$" ({numbers})')

    def _typed(self, annotation: Any, level: int) -> str:
        origin = typing.get_origin(annotation)
        args = typing.get_args(annotation)
        if origin is typing.Annotated:
            return self._typed(args[0], level)
        if annotation is None or annotation is type(None):
            return '"null"'
        if origin in (typing.Union, types.UnionType):
            return "(" + " | ".join(self._typed(a, level) for a in args) + ")"
        if origin is typing.Literal:
            return "(" + " | ".join(literal(json.dumps(a)) for a in args) + ")"
        if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
            return "(" + " | ".join(literal(json.dumps(m.value)) for m in annotation) + ")"
        if annotation is str:
            return self.string(level)
        if annotation is bool:
            return '("true" | "false")'
        if annotation is int:
            return self.integer()
        if annotation is float:
            return self.number()
        if origin in _SEQUENCES or annotation in _SEQUENCES:
            kinds = {a for a in args if a is not Ellipsis}
            item = self.value(args[0], level) if len(kinds) == 1 else self._item(level)
            return self._sequence(item)
        return self.json(level)

    def integer(self) -> str:
        return self.add("integer", '"-"? ("0" | [1-9] [0-9]{0,11})')

    def number(self) -> str:
        return self.add("number", f'{self.integer()} ("." [0-9]{{1,8}})?')

    def _item(self, level: int) -> str:
        name = self.json(level)
        return f"({name} | {self.reference(level)})" if level else name

    def _sequence(self, item: str) -> str:
        return f'"[" ({item} ({literal(", ")} {item}){{0,15}})? "]"'

    def string(self, level: int) -> str:
        """A JSON string of at most `max_string_chars` pieces; with references, `$j` may
        stand in it (not followed by a digit, which would make another number)."""
        self.add("char", '[^"\\\\$\\x00-\\x1f] | "\\\\" ["\\\\/nt]')
        bound = f"{{0,{self.max_string_chars}}}"
        if not level:
            return self.add("string_0", f'"\\"" char{bound} "\\""')
        self.add("after_ref", '[^"\\\\$0-9\\x00-\\x1f] | "\\\\" ["\\\\/nt]')
        ref = self.reference(level)
        piece = self.add(f"piece_{level}", f"char | {ref} after_ref")
        return self.add(f"string_{level}", f'"\\"" {piece}{bound} {ref}? "\\""')

    def json(self, level: int) -> str:
        """Any JSON value (references allowed in it), lists and objects bounded."""
        name = f"json_{level}"
        if name in self.rules:
            return name
        self.rules[name] = ""  # reserved: the body refers to itself
        item = self._item(level)
        pair = f'{self.string(0)} ": " {item}'
        self.rules[name] = " | ".join(
            [
                self.string(level),
                self.number(),
                '"true" | "false" | "null"',
                self._sequence(item),
                f'"{{" ({pair} ({literal(", ")} {pair}){{0,15}})? "}}"',
            ]
        )
        return name
