"""Tools a node may call: typed async functions, registered by name, with no global table.

A tool's arguments are a pydantic model (field order is the positional order), so a plan
that writes `calculator("2 + 3")` or `search(query="x", top_k=2)` is checked and coerced
before anything runs. What a call returns is an observation, `ToolResult`: a tool that
raises, times out or is given bad arguments gives `ok=False` with the reason, never an
exception, so one broken step cannot take a whole plan down. Calls are made through
`NodeContext.call_tool`, which charges them to the budget and traces them.
"""

from __future__ import annotations

import asyncio
import inspect
import re
import time
import typing
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, overload

from pydantic import BaseModel, ConfigDict, ValidationError, create_model
from pydantic_core import ErrorDetails, PydanticUndefined, to_jsonable_python

ToolFunction = Callable[[Any], Awaitable[Any]]
"""Takes the validated arguments model, returns a JSON-able value."""

_MISSING: Any = object()


class ToolArgumentError(ValueError):
    """Arguments that do not fit a tool's signature (the message says how)."""


@dataclass(frozen=True)
class Tool:
    """One callable tool. `latency` is a simulated delay slept before each call (benchmarks
    give tools a fixed latency); `timeout` cuts a call that runs longer (None: no limit
    but the problem's own deadline)."""

    name: str
    description: str
    arguments: type[BaseModel]
    function: ToolFunction
    latency: float = 0.0
    timeout: float | None = None

    def __post_init__(self) -> None:
        if not self.name.isidentifier():
            raise ValueError(f"tool name {self.name!r} is not an identifier (plans call it)")
        if self.latency < 0 or (self.timeout is not None and self.timeout <= 0):
            raise ValueError(f"tool {self.name!r}: latency must be >= 0 and timeout > 0")

    def signature(self) -> str:
        """How the tool is called, for prompts: `calculator(expression: str)`."""
        parts = []
        for name, field in self.arguments.model_fields.items():
            part = f"{name}: {_type_name(field.annotation)}"
            if not field.is_required():
                part += f" = {field.get_default(call_default_factory=True)!r}"
            parts.append(part)
        return f"{self.name}({', '.join(parts)})"

    def bind(self, arguments: Mapping[str, Any] | Sequence[Any]) -> BaseModel:
        """The arguments validated (and coerced) by the tool's model; positional values map
        to fields in order. Raises ToolArgumentError saying what does not fit."""
        fields = list(self.arguments.model_fields)
        if isinstance(arguments, Mapping):
            named = dict(arguments)
        elif isinstance(arguments, Sequence) and not isinstance(arguments, str | bytes):
            if len(arguments) > len(fields):
                raise ToolArgumentError(
                    f"{self.signature()} takes {len(fields)} argument"
                    f"{'' if len(fields) == 1 else 's'} but {len(arguments)} were given"
                )
            named = dict(zip(fields, arguments, strict=False))
        else:
            raise ToolArgumentError(
                f"{self.name}: arguments must be a list or a mapping, not "
                f"{type(arguments).__name__}"
            )
        unknown = sorted(str(key) for key in named if key not in self.arguments.model_fields)
        if unknown:
            raise ToolArgumentError(
                f"{self.signature()} has no argument {', '.join(map(repr, unknown))}"
            )
        try:
            return self.arguments.model_validate(named)
        except ValidationError as error:
            problems = "; ".join(_problem(e) for e in error.errors())
            raise ToolArgumentError(f"{self.signature()}: {problems}") from None

    async def run(self, arguments: BaseModel) -> ToolResult:
        """Call the tool on bound arguments. Every failure of the tool becomes an
        observation; only cancellation (the caller's deadline included) propagates."""
        started = time.monotonic()
        try:
            async with asyncio.timeout(self.timeout) as limit:
                if self.latency:
                    await asyncio.sleep(self.latency)
                value = to_jsonable_python(await self.function(arguments))
        except TimeoutError as error:
            reason = f"timed out after {self.timeout:g}s" if limit.expired() else _reason(error)
            return self._result(started, error=reason)
        except Exception as error:  # a tool's failure (or unserialisable value) is observed
            return self._result(started, error=_reason(error))
        return self._result(started, value=value)

    def _result(self, started: float, value: Any = None, error: str | None = None) -> ToolResult:
        return ToolResult(
            tool=self.name,
            ok=error is None,
            value=value,
            error=error,
            latency=time.monotonic() - started,
        )


class ToolResult(BaseModel):
    """What one tool call gave: a JSON-able `value`, or the `error` that stopped it."""

    model_config = ConfigDict(frozen=True)

    tool: str
    ok: bool
    value: Any = None
    error: str | None = None
    latency: float = 0.0


def _problem(error: ErrorDetails) -> str:
    where = ".".join(map(str, error["loc"])) or "arguments"
    got = "" if error["type"] == "missing" else f" (got {error.get('input')!r:.60})"
    return f"{where}: {error['msg']}{got}"


def _reason(error: BaseException) -> str:
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _type_name(annotation: Any) -> str:
    if annotation is None or annotation is type(None):
        return "None"
    if isinstance(annotation, type) and typing.get_origin(annotation) is None:
        return annotation.__name__
    return re.sub(r"\b(?:typing|collections\.abc)\.", "", repr(annotation))


class UnknownTool(KeyError):
    """A tool name the registry does not hold (its message lists the names it does)."""

    def __str__(self) -> str:
        return str(self.args[0])


class ToolRegistry(Mapping[str, Tool]):
    """The tools of a run, by name: immutable, built from an iterable of tools, passed in
    (`Runtime.tools`) rather than looked up in a global."""

    def __init__(self, tools: Iterable[Tool] = ()) -> None:
        found: dict[str, Tool] = {}
        for item in tools:
            if item.name in found:
                raise ValueError(f"two tools are named {item.name!r}")
            found[item.name] = item
        self._tools = found

    def __getitem__(self, name: str) -> Tool:
        try:
            return self._tools[name]
        except KeyError:
            known = ", ".join(sorted(self._tools)) or "none"
            raise UnknownTool(f"unknown tool {name!r}; the tools are: {known}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._tools)

    def __len__(self) -> int:
        return len(self._tools)

    def __repr__(self) -> str:
        return f"ToolRegistry({sorted(self._tools)})"

    def get(self, name: str, default: Any = _MISSING) -> Any:
        """The tool called `name`; without a `default`, an unknown name raises KeyError
        listing the known ones (a planner can be re-prompted with it)."""
        if default is not _MISSING and name not in self._tools:
            return default
        return self[name]

    def describe(self) -> str:
        """One line per tool, signature then description, for a planner's prompt."""
        return "\n".join(f"{t.signature()}: {t.description}" for t in self._tools.values())


@overload
def tool(function: Callable[..., Awaitable[Any]]) -> Tool: ...


@overload
def tool(
    function: None = None, *, name: str | None = None, description: str | None = None
) -> Callable[[Callable[..., Awaitable[Any]]], Tool]: ...


def tool(
    function: Callable[..., Awaitable[Any]] | None = None,
    *,
    name: str | None = None,
    description: str | None = None,
) -> Tool | Callable[[Callable[..., Awaitable[Any]]], Tool]:
    """A Tool from a typed async function (`@tool` or `@tool(name=...)`): its parameters
    become the arguments model (annotations, defaults and `Annotated[..., Field(...)]`
    descriptions kept), its docstring's first paragraph the description."""

    def make(function: Callable[..., Awaitable[Any]]) -> Tool:
        if not inspect.iscoroutinefunction(function):
            raise TypeError(f"{function.__name__}: a tool must be an async function")
        hints = typing.get_type_hints(function, include_extras=True)
        fields: dict[str, Any] = {}
        for parameter in inspect.signature(function).parameters.values():
            if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
                raise TypeError(f"{function.__name__}: *args and **kwargs cannot be typed")
            default = parameter.default
            fields[parameter.name] = (
                hints.get(parameter.name, Any),
                PydanticUndefined if default is parameter.empty else default,
            )
        title = name or function.__name__
        model = create_model(  # type: ignore[call-overload]
            f"{title}_arguments", __config__=ConfigDict(extra="forbid"), **fields
        )

        async def call(arguments: BaseModel) -> Any:
            return await function(**dict(arguments))

        doc = inspect.cleandoc(function.__doc__ or "").split("\n\n")[0]
        return Tool(
            name=title,
            description=description or " ".join(doc.split()),
            arguments=model,
            function=call,
        )

    return make if function is None else make(function)
