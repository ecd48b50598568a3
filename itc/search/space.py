"""Search spaces as data: the pipelines a search may try, written as a pipeline with holes.

`pipeline` is ordinary pipeline data (one node, or a graph of `nodes`) in which any value
written "$name" is filled by the parameter `name`. A parameter is an `int` or `float` range
(optionally `log`), a list of `values`, or a choice among `options`: each option is a
template with parameters of its own, which exist only when that option is taken, so choices
nest (a scorer choice inside best-of-N). `fixed` sets the name, budget and answer of every
sampled pipeline. A graph node with a `$layers` key is repeated that many times, each layer
reading the one before, the last keeping the node's name (layered stacks).

Sampling is Optuna's define-by-run: each parameter is named by its path through the choices
above it ("strategy.best_of_n.scorer"), so it keeps one distribution across trials and a
sampler such as TPE sees which parameters belong to which choice.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import networkx as nx
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    StringConstraints,
    ValidationError,
    model_serializer,
    model_validator,
)

from itc.config import ConfigError, PipelineConfig, Registry, build_component, parse_pipeline
from itc.nodes import Answer
from itc.types import Budget

if TYPE_CHECKING:
    from optuna.trial import BaseTrial

LAYERS = "$layers"
"""The key that repeats a graph node as a stack of layers."""

_REFERENCE = re.compile(r"^\$([A-Za-z_][A-Za-z0-9_-]*)$")
Name = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_-]*$")]
"""Parameter and option names: they become parts of Optuna parameter names."""
Scalar = None | bool | int | float | str
"""What Optuna can store as a categorical value."""


class SpaceError(ConfigError):
    """An invalid search space, or a sampled pipeline that does not validate; the message
    names every bad path."""

    def __init__(self, source: str, problems: list[str]) -> None:
        super().__init__(source, problems)
        lines = "\n".join(f"  {p}" for p in problems)
        self.args = (f"invalid search space {source}:\n{lines}",)


class Param(BaseModel):
    """One parameter: exactly one of `int`, `float`, `values` or `options`."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    int_range: tuple[int, int] | None = Field(
        default=None, alias="int", description="Whole numbers from low to high, both included."
    )
    float_range: tuple[float, float] | None = Field(
        default=None, alias="float", description="Numbers from low to high."
    )
    log: bool = Field(default=False, description="Sample a range on a log scale.")
    step: int | float | None = Field(
        default=None, gt=0, description="Spacing of a range's values (default: 1 for int)."
    )
    values: tuple[Scalar, ...] | None = Field(
        default=None, min_length=1, description="Categorical values (plain scalars)."
    )
    options: dict[Name, Option] | None = Field(
        default=None, min_length=1, description="A choice: option name -> its template."
    )

    @model_validator(mode="after")
    def _one_kind(self) -> Param:
        kinds = ("int_range", "float_range", "values", "options")
        kinds = [k for k in kinds if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError("give exactly one of int: [low, high], float: [low, high], "
                             "values: [...] or options: {...}")
        ranges = self.int_range or self.float_range
        if ranges is None:
            if self.log or self.step is not None:
                raise ValueError("log and step apply to int and float ranges only")
            if self.values is not None and len({(type(v), v) for v in self.values}) < len(
                self.values
            ):
                raise ValueError("values must be distinct")
            return self
        low, high = ranges
        if low > high:
            raise ValueError(f"low {low} is above high {high}")
        # Optuna samples a log range continuously: it takes no step (but an int range's 1).
        plain_step = self.step is None or (self.int_range is not None and self.step == 1)
        if self.log and (low <= 0 or not plain_step):
            raise ValueError("a log range needs low > 0 and no step")
        if self.int_range is not None and self.step is not None:
            if not isinstance(self.step, int) or (high - low) % self.step:
                raise ValueError(f"step must be a whole number dividing high - low ({high - low})")
        return self

    def suggest(self, trial: BaseTrial, name: str) -> Any:
        """A value of a range or of `values` (a choice is drawn by `sample`)."""
        if self.int_range is not None:
            low, high = self.int_range
            return trial.suggest_int(name, low, high, step=int(self.step or 1), log=self.log)
        if self.float_range is not None:
            low, high = self.float_range
            return trial.suggest_float(name, low, high, step=self.step, log=self.log)
        assert self.values is not None
        return trial.suggest_categorical(name, list(self.values))


class Option(BaseModel):
    """One option of a choice: what it fills in, and the parameters only it has."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    template: Any = Field(description="The option's value: any data, with $references.")
    params: dict[Name, Param] = Field(
        default_factory=dict, description="Parameters that exist only when this option is taken."
    )


class Fixed(BaseModel):
    """What every sampled pipeline shares (these win over the template's own)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str | None = Field(default=None, description="Their name (default: the space's).")
    budget: Budget | None = Field(default=None, description="Hard limits for each problem.")
    answer: Any = Field(default=None, description="How final answers are read (a kind's name).")
    tools: Any = Field(default=None, description="The tools they may call (a `tools:` section).")

    @model_serializer(mode="wrap")
    def _unset_tools_unwritten(self, handler: SerializerFunctionWrapHandler) -> Any:
        # Written only when set: studies made before tools keep their settings (and resume).
        data = handler(self)
        if self.tools is None and isinstance(data, dict):
            data.pop("tools", None)
        return data


class SearchSpace(BaseModel):
    """The pipelines a search may try."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(default="search", description="Names the study and the pipelines.")
    description: str | None = Field(default=None, description="Free text for people.")
    fixed: Fixed = Field(default=Fixed(), description="Parts every pipeline shares.")
    pipeline: Any = Field(description="Pipeline data (one node or `nodes`) with $references.")
    params: dict[Name, Param] = Field(
        default_factory=dict, description="The parameters the templates refer to."
    )

    @model_validator(mode="after")
    def _references_resolve(self) -> SearchSpace:
        problems = _reference_problems(self)
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def to_yaml(self) -> str:
        """YAML that `load_space` reads back to an equal space (defaults left out)."""
        data = self.model_dump(mode="json", by_alias=True, exclude_defaults=True)
        return yaml.safe_dump(data, sort_keys=False)


Param.model_rebuild()


# Load-time checks: every $reference names a parameter in scope, every parameter is used,
# and no choice's options refer back to it (which would make filling it endless).


@dataclass(frozen=True)
class _Scope:
    path: str
    """Where its parameters are, as a path in the space file ("params." at the top)."""
    params: Mapping[str, Param]


def _references(template: Any, where: str) -> Iterator[tuple[str, str]]:
    """Every ($name, path) in a template."""
    if isinstance(template, str):
        match = _REFERENCE.match(template)
        if match:
            yield match[1], where
    elif isinstance(template, Mapping):
        for key, value in template.items():
            yield from _references(value, f"{where}.{key}")
    elif isinstance(template, list | tuple):
        for i, value in enumerate(template):
            yield from _references(value, f"{where}[{i}]")


def _reference_problems(space: SearchSpace) -> list[str]:
    problems: list[str] = []
    used: set[str] = set()
    declared: list[str] = []
    refers: nx.DiGraph = nx.DiGraph()  # choice -> choices its options' templates refer to

    def check(template: Any, where: str, scopes: list[_Scope], owner: str | None) -> None:
        for name, at in _references(template, where):
            scope = next((s for s in scopes if name in s.params), None)
            if scope is None:
                known = sorted({n for s in scopes for n in s.params})
                problems.append(f"{at}: ${name} names no parameter in scope (known: {known})")
                continue
            used.add(scope.path + name)
            if owner is not None and scope.params[name].options is not None:
                refers.add_edge(owner, scope.path + name)

    def walk(scope: _Scope, outer: list[_Scope]) -> None:
        scopes = [scope, *outer]
        for name, param in scope.params.items():
            declared.append(scope.path + name)
            for option_name, option in (param.options or {}).items():
                at = f"{scope.path}{name}.options.{option_name}"
                inner = _Scope(f"{at}.params.", option.params)
                check(option.template, f"{at}.template", [inner, *scopes], scope.path + name)
                walk(inner, scopes)

    top = _Scope("params.", space.params)
    check(space.pipeline, "pipeline", [top], None)
    walk(top, [])
    problems += [f"{path}: declared but never used" for path in declared if path not in used]
    for cycle in nx.simple_cycles(refers):
        loop = " -> ".join([*cycle, cycle[0]])
        problems.append(f"{cycle[0]}: its options refer back to it ({loop})")
    return problems


# Sampling.


@dataclass(frozen=True)
class _Chosen:
    """A choice's drawn option, filled in where it is referred to."""

    template: Any
    scopes: list[dict[str, Any]]


def _draw(
    trial: BaseTrial, params: Mapping[str, Param], prefix: str, outer: list[dict[str, Any]]
) -> dict[str, Any]:
    """Values of `params` in declaration order; a chosen option's own parameters are drawn
    right after it, named under it."""
    values: dict[str, Any] = {}
    scopes = [values, *outer]
    for name, param in params.items():
        key = prefix + name
        if param.options is None:
            values[name] = param.suggest(trial, key)
            continue
        picked = trial.suggest_categorical(key, list(param.options))
        option = param.options[picked]
        inner = _draw(trial, option.params, f"{key}.{picked}.", scopes)
        values[name] = _Chosen(option.template, [inner, *scopes])
    return values


def _fill(template: Any, scopes: list[dict[str, Any]]) -> Any:
    if isinstance(template, str):
        match = _REFERENCE.match(template)
        if match is None:
            return template[1:] if template.startswith("$$") else template
        value = next(s[match[1]] for s in scopes if match[1] in s)
        return _fill(value.template, value.scopes) if isinstance(value, _Chosen) else value
    if isinstance(template, Mapping):
        return {key: _fill(value, scopes) for key, value in template.items()}
    if isinstance(template, list | tuple):
        return [_fill(value, scopes) for value in template]
    return template


def _stack_layers(data: Any) -> tuple[Any, list[str]]:
    """Nodes with `$layers: k` as k chained copies (the last keeps the name); the data and
    any problems."""
    if not isinstance(data, Mapping):
        return data, []
    if LAYERS in data:
        return data, [f"pipeline.{LAYERS}: layers need the `nodes` form of a pipeline"]
    nodes = data.get("nodes")
    if not isinstance(nodes, Mapping):
        return data, []
    stacked: dict[str, Any] = {}
    problems: list[str] = []
    for name, node in nodes.items():
        if not (isinstance(node, Mapping) and LAYERS in node):
            stacked[name] = node
            continue
        node = {k: v for k, v in node.items() if k != LAYERS}
        count = nodes[name][LAYERS]
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            problems.append(f"nodes.{name}.{LAYERS}: expected a whole number >= 1, got {count!r}")
            continue
        names = [f"{name}_{i}" for i in range(1, count)] + [name]
        for i, layer in enumerate(names):
            if layer in nodes and layer != name:
                problems.append(f"nodes.{name}.{LAYERS}: layer {layer!r} is already a node")
            stacked[layer] = node if i == 0 else {**node, "inputs": [names[i - 1]]}
    return {**data, "nodes": stacked}, problems


def sample(
    space: SearchSpace, trial: BaseTrial, registry: Registry | None = None
) -> PipelineConfig:
    """A pipeline drawn from the space through `trial` (an Optuna Trial or FixedTrial),
    validated like a pipeline file; one that does not validate is a SpaceError naming the
    trial's parameters and every bad path."""
    data = _fill(space.pipeline, [_draw(trial, space.params, "", [])])
    data, problems = _stack_layers(data)
    if isinstance(data, Mapping):
        data = {**data, **space.fixed.model_dump(exclude_none=True)}
        data.setdefault("name", space.name)
    source = f"{space.name!r} sampled with {trial.params}"
    if problems:
        raise SpaceError(source, problems)
    try:
        return parse_pipeline(data, registry, source=source)
    except ConfigError as error:
        raise SpaceError(source, error.problems) from None


# Static cost.


def over_budget(
    pipeline: PipelineConfig, budget: Budget | None = None, *, strict: bool = False
) -> list[str]:
    """The limits of `budget` (default: the pipeline's own) that the pipeline's worst case
    exceeds, each with both numbers; empty when it fits.

    The worst case counts generated tokens and calls, not prompt tokens, so a `tokens` limit
    is checked on generated tokens alone (the runtime's hard limit still binds the rest). A
    pipeline whose worst case is unknown fits unless `strict`.
    """
    budget = budget or pipeline.budget
    bound = pipeline.worst_case()
    if bound is None:
        return ["worst case unknown: a node's cost has no static bound"] if strict else []
    checks = (
        ("completion_tokens", budget.completion_tokens, bound.completion_tokens, "tokens"),
        ("tokens", budget.tokens, bound.completion_tokens, "generated tokens"),
        ("calls", budget.calls, bound.calls, "calls"),
        ("reward_calls", budget.reward_calls, bound.reward_calls, "reward calls"),
    )
    return [
        f"{limit}: up to {worst} {what} where {allowed} are allowed"
        for limit, allowed, worst, what in checks
        if allowed is not None and worst > allowed
    ]


def static_feasible(
    pipeline: PipelineConfig, budget: Budget | None = None, *, strict: bool = False
) -> bool:
    """Whether the pipeline's worst case fits `budget`, known before any call (see
    `over_budget`)."""
    return not over_budget(pipeline, budget, strict=strict)


# Files.


def _problems(error: ValidationError) -> list[str]:
    """One line per error with its dotted path; the space's own checks name their paths."""
    lines: list[str] = []
    for item in error.errors():
        if item["type"] == "value_error" and not item["loc"]:
            lines += str(item["ctx"]["error"]).splitlines()
            continue
        path = ".".join(str(p) for p in item["loc"]) or "<root>"
        got = item.get("input")
        shown = "" if isinstance(got, Mapping) else f" (got {got!r:.60})"
        lines.append(f"{path}: {item['msg'].removeprefix('Value error, ')}{shown}")
    return lines


def parse_space(
    data: Any, registry: Registry | None = None, source: str = "<data>"
) -> SearchSpace:
    """Validate plain data (from YAML, JSON or Python) into a search space."""
    try:
        space = SearchSpace.model_validate(data)
    except ValidationError as error:
        raise SpaceError(source, _problems(error)) from None
    if space.fixed.answer is not None:
        try:
            registry = registry or Registry.default()
            build_component(space.fixed.answer, Answer, registry, "fixed.answer")
        except ConfigError as error:
            raise SpaceError(source, error.problems) from None
    return space


def load_space(path: str | Path, registry: Registry | None = None) -> SearchSpace:
    """A search space from a YAML (or JSON) file; a SpaceError names every bad path."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise SpaceError(str(path), [f"cannot read: {error.strerror}"]) from None
    except UnicodeDecodeError as error:
        raise SpaceError(str(path), [f"not UTF-8 text (byte {error.start})"]) from None
    except yaml.YAMLError as error:
        raise SpaceError(str(path), [f"not valid YAML: {error}"]) from None
    return parse_space(data, registry, source=str(path))
