"""Pipelines as data: YAML/JSON <-> Python objects, validated at the edge.

Components (strategies, scorers) are picked by their `type` name from a `Registry`. The
registry is an ordinary object (built-ins plus any installed plugins exposing the
`itc.components` entry point), passed where it is needed: there is no global table.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import types
import typing
import warnings
from collections.abc import Iterable, Mapping
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import networkx as nx
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    TypeAdapter,
    ValidationError,
    model_serializer,
    model_validator,
)
from pydantic_core import to_jsonable_python

from itc.nodes import (
    Answer,
    AnswerNode,
    Component,
    CostBound,
    Scorer,
    StepScorer,
    Strategy,
    StrategyNode,
    total,
)
from itc.strategies.a_star import AStar
from itc.strategies.allocate import ComputeOptimal
from itc.strategies.beam_search import BeamSearch
from itc.strategies.best_of_n import BestOfN
from itc.strategies.critic import Critic
from itc.strategies.dvts import DVTS
from itc.strategies.early_pruning import EarlyPruning
from itc.strategies.ensemble import Ensemble
from itc.strategies.fuser import Fuser
from itc.strategies.generate import Generate
from itc.strategies.particle_filtering import ParticleFiltering
from itc.strategies.ranker import Ranker
from itc.strategies.refine import Refine
from itc.strategies.rpc import RPC
from itc.strategies.self_consistency import SelfConsistency
from itc.strategies.tool_dag.node import ToolDAG
from itc.strategies.tool_dag.react import ToolReact
from itc.strategies.tool_dag.rounds import ToolRounds
from itc.strategies.unit_tests import UnitTestFilter
from itc.strategies.verify_filter import Verify
from itc.tools.config import ToolsConfig
from itc.types import Budget, omit_defaults
from itc.verifiers.answers import BUILTIN_ANSWERS, MathAnswer
from itc.verifiers.arithmetic import ArithmeticCheck
from itc.verifiers.judge import LLMJudge, PartialProbe, StepJudge
from itc.verifiers.reward_model import OutcomeRewardModel, ProcessRewardModel
from itc.verifiers.self_certainty import SelfCertainty, StepCertainty

BUILTIN_COMPONENTS: tuple[type[Component], ...] = (
    Generate,
    BestOfN,
    SelfConsistency,
    ParticleFiltering,
    RPC,
    EarlyPruning,
    AStar,
    BeamSearch,
    DVTS,
    Critic,
    Ranker,
    Fuser,
    Verify,
    Refine,
    Ensemble,
    UnitTestFilter,
    ComputeOptimal,
    ToolDAG,
    ToolRounds,
    ToolReact,
    LLMJudge,
    PartialProbe,
    StepJudge,
    ProcessRewardModel,
    OutcomeRewardModel,
    SelfCertainty,
    StepCertainty,
    ArithmeticCheck,
    *BUILTIN_ANSWERS,
)


class ConfigError(ValueError):
    """An invalid config; the message names every bad path and what was expected there."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  {p}" for p in problems)
        super().__init__(f"invalid config {source}:\n{lines}")


class PluginWarning(UserWarning):
    """A plugin entry point could not be loaded and was skipped."""


class Registry:
    """Maps `type` names to component classes."""

    def __init__(self, components: Iterable[type[Component]] = ()) -> None:
        self._classes: dict[str, type[Component]] = {}
        for component in components:
            self.register(component)

    def register(self, component: type[Component]) -> type[Component]:
        name = component.model_fields["type"].default
        if not isinstance(name, str):
            raise TypeError(f"{component.__name__} needs a default `type` name")
        self._classes[name] = component
        return component

    def names(self, kind: type[Component] = Component) -> list[str]:
        return sorted(n for n, c in self._classes.items() if issubclass(c, kind))

    def lookup(self, name: Any, expected: type[Component], where: str) -> type[Component]:
        known = self.names(expected)
        if not isinstance(name, str):
            raise ConfigError("", [f"{where}.type: missing; expected one of {known}"])
        component = self._classes.get(name)
        if component is None or not issubclass(component, expected):
            raise ConfigError(
                "",
                [
                    f"{where}.type: unknown {expected.kind} {name!r};{_did_you_mean(name, known)}"
                    f" expected one of {known}"
                ],
            )
        return component

    def json_schema(self) -> dict[str, Any]:
        """A JSON schema for pipeline files in which every node, inner strategy, scorer and
        answer is a choice among this registry's components, so an editor can complete and
        check them (the bare model schema only knows the base classes)."""
        classes = [self._classes[name] for name in sorted(self._classes)]
        adapter = TypeAdapter(list[typing.Union[tuple(classes)]])  # type: ignore[misc]  # noqa: UP007
        schema = PipelineConfig.model_json_schema()
        defs = {**schema.get("$defs", {}), **adapter.json_schema()["$defs"]}
        for component in classes:
            required = defs[component.__name__].setdefault("required", [])
            if "type" not in required:
                required.insert(0, "type")
        for base in (Strategy, Scorer, StepScorer, Answer):
            members = [c for c in classes if issubclass(c, base)]
            names = [c.model_fields["type"].default for c in members]
            defs[base.__name__] = {
                "anyOf": [{"$ref": f"#/$defs/{c.__name__}"} for c in members]
                + [{"enum": names, "description": "a component by name, with its defaults"}]
            }
        schema["$defs"] = defs
        return schema

    @classmethod
    def default(cls) -> Registry:
        """Built-in components plus plugins registered under the `itc.components` entry point.

        An entry point names one component class (`name = "package.module:ClassName"`). One that
        cannot be loaded is skipped with a `PluginWarning` naming it, so a broken plugin never
        stops commands that do not use it.
        """
        registry = cls(BUILTIN_COMPONENTS)
        for entry in entry_points(group="itc.components"):
            where = f"plugin entry point {entry.name!r} = {entry.value!r}"
            try:
                loaded = entry.load()
                if not (isinstance(loaded, type) and issubclass(loaded, Component)):
                    raise TypeError(f"it names {loaded!r}, not a Component subclass")
                registry.register(loaded)
            except Exception as error:  # a plugin's own bug must not take the CLI down
                warnings.warn(
                    f"{where} skipped: {type(error).__name__}: {error}", PluginWarning, stacklevel=2
                )
        return registry


def _component_slot(annotation: Any) -> tuple[type[Component], bool] | None:
    """If a field holds components, return (their base class, whether it is a sequence)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _component_slot(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found = _component_slot(arg)
            if found:
                return found
        return None
    if origin in (tuple, list):
        inner = _component_slot(typing.get_args(annotation)[0])
        return (inner[0], True) if inner else None
    if isinstance(annotation, type) and issubclass(annotation, Component):
        return annotation, False
    return None


def build_component(
    data: Any, expected: type[Component], registry: Registry, where: str
) -> Component:
    """Validate a component from plain data, choosing classes by `type` all the way down.

    A bare name stands for that component with its defaults (`answer: math`).
    """
    if isinstance(data, expected):
        return data
    if isinstance(data, str):
        data = {"type": data}
    if not isinstance(data, Mapping):
        raise ConfigError("", [f"{where}: expected a mapping with a 'type', got {data!r:.80}"])
    component = registry.lookup(data.get("type"), expected, where)
    values = dict(data)
    problems: list[str] = []
    broken: set[str] = set()
    for name, field in component.model_fields.items():
        slot = _component_slot(field.annotation)
        if slot is None or values.get(name) is None:
            continue
        base, many = slot
        try:
            if many:
                values[name] = [
                    build_component(item, base, registry, f"{where}.{name}[{i}]")
                    for i, item in enumerate(values[name])
                ]
            else:
                values[name] = build_component(values[name], base, registry, f"{where}.{name}")
        except ConfigError as error:
            problems.extend(error.problems)
            broken.add(name)
    # The rest of this component is still checked, so one pass reports every bad path.
    try:
        built = component.model_validate({k: v for k, v in values.items() if k not in broken})
    except ValidationError as error:
        problems.extend(_describe(error, where, component.model_fields, skip=broken))
    if problems:
        raise ConfigError("", problems)
    return built


def _did_you_mean(name: object, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(str(name), list(known), n=1, cutoff=0.6)
    return f" did you mean {close[0]!r}?" if close else ""


def _extra_key(key: str, known: Iterable[str]) -> str:
    hint = _did_you_mean(key, known)
    return "Extra inputs are not permitted" + (f";{hint}" if hint else "")


def _describe(
    error: ValidationError,
    where: str,
    fields: Mapping[str, Any] | None = None,
    skip: Iterable[str] = (),
) -> list[str]:
    """One line per error: the dotted path, what is wrong, the value, a likely intended key."""
    lines = []
    for item in error.errors():
        loc = [str(p) for p in item["loc"]]
        if loc and loc[0] in skip:
            continue  # a nested part already reported its own, more precise, error
        path = ".".join([where, *loc]) if where else ".".join(loc)
        got = item.get("input")
        shown = "" if isinstance(got, Mapping) else f" (got {got!r:.60})"
        message = item["msg"]
        if item["type"] == "extra_forbidden" and fields is not None and len(loc) == 1:
            message, shown = _extra_key(loc[0], fields), ""
        lines.append(f"{path or '<root>'}: {message}{shown}")
    return lines


class PipelineConfig(BaseModel):
    """A graph of named strategy nodes; edges come from each node's `inputs`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(default="pipeline", description="Names result files and report rows.")
    nodes: dict[str, StrategyNode] = Field(
        min_length=1, description="Named strategy nodes; `inputs` connect them."
    )
    output: str | None = Field(
        default=None, description="The node whose best candidate is the answer (default: the sink)."
    )
    budget: Budget = Field(default=Budget(), description="Hard limits for each problem.")
    answer: AnswerNode = Field(default=MathAnswer(), description="How the final answer is read.")
    description: str | None = Field(default=None, description="Free text for people.")
    tools: ToolsConfig | None = Field(
        default=None, description="Built-in tools its nodes may call, with their options."
    )

    @model_serializer(mode="wrap")
    def _no_tools_unwritten(self, handler: SerializerFunctionWrapHandler) -> Any:
        # Written only when given, so pipelines without tools keep their fingerprints.
        return omit_defaults(handler(self), self, ("tools",))

    @model_validator(mode="after")
    def _valid_graph(self) -> PipelineConfig:
        for name, node in self.nodes.items():
            for parent in node.inputs:
                if parent not in self.nodes:
                    raise ValueError(
                        f"nodes.{name}.inputs: unknown node {parent!r}; "
                        f"known nodes are {sorted(self.nodes)}"
                    )
        graph = self.graph()
        if not nx.is_directed_acyclic_graph(graph):
            cycle = " -> ".join(a for a, _ in nx.find_cycle(graph))
            raise ValueError(f"nodes: the inputs form a cycle ({cycle})")
        if self.output is not None and self.output not in self.nodes:
            raise ValueError(f"output: unknown node {self.output!r}")
        sinks = [n for n in graph if graph.out_degree(n) == 0]
        if self.output is None and len(sinks) != 1:
            raise ValueError(f"output: several final nodes {sinks}; name the one to answer with")
        return self

    def graph(self) -> nx.DiGraph:
        graph = nx.DiGraph()
        graph.add_nodes_from(self.nodes)
        graph.add_edges_from((p, n) for n, node in self.nodes.items() for p in node.inputs)
        return graph

    @property
    def output_node(self) -> str:
        if self.output is not None:
            return self.output
        graph = self.graph()
        return next(n for n in graph if graph.out_degree(n) == 0)

    def worst_case(self) -> CostBound | None:
        """The most one problem may cost before any call, summed over the nodes (None when
        a node's cost is unbounded or unknown). A node's graph inputs are bounded by what
        its parents may return."""
        graph = self.graph()
        bounds = []
        for name, node in self.nodes.items():
            passed = [self.nodes[p].max_outputs() for p in graph.predecessors(name)]
            bounds.append(node.worst_case(None if None in passed else sum(passed)))
        return total(*bounds)

    @classmethod
    def single(cls, node: Strategy, name: str = "pipeline", **fields: Any) -> PipelineConfig:
        return cls(name=name, nodes={"main": node}, **fields)

    def to_data(self) -> dict[str, Any]:
        """Every field, defaults included, each component by its own class (the fingerprint's
        input, so a default changed in a later version changes the fingerprint too)."""
        return self.model_dump(mode="json", serialize_as_any=True)

    def to_yaml(self, *, minimal: bool = True) -> str:
        """YAML that loads back to an equal pipeline; `minimal` leaves out default values."""
        data = compact(self) if minimal else self.to_data()
        return yaml.safe_dump(data, sort_keys=False)

    @classmethod
    def from_yaml(cls, text: str, registry: Registry | None = None) -> PipelineConfig:
        """Parse YAML (or JSON, a subset of it) text into a validated pipeline."""
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise ConfigError("<text>", [f"not valid YAML: {error}"]) from None
        except RecursionError:
            raise ConfigError("<text>", ["<root>: nested too deeply to be a pipeline"]) from None
        return parse_pipeline(data, registry, source="<text>")

    def fingerprint(self) -> str:
        """Stable hash of the config, used to key results and resume runs."""
        canonical = json.dumps(self.to_data(), sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def compact(model: BaseModel) -> Any:
    """A model as plain data without the values its fields default to.

    A component keeps its `type` and the fields it lists in `always_written` (an aggregator's
    `inner`, whose default depends on `inputs`); an answer kind left at its defaults is its
    bare name.
    """
    keep = getattr(model, "always_written", ("type",))
    data: dict[str, Any] = {}
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        if name in keep or value != field.get_default(call_default_factory=True):
            data[field.alias or name] = _compact_value(value)
    if isinstance(model, Answer) and list(data) == ["type"]:
        return data["type"]
    return data


def _compact_value(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return compact(value)
    if isinstance(value, list | tuple):
        return [_compact_value(item) for item in value]
    if isinstance(value, Mapping):
        return {key: _compact_value(item) for key, item in value.items()}
    return to_jsonable_python(value)


def parse_pipeline(
    data: Any, registry: Registry | None = None, source: str = "<data>"
) -> PipelineConfig:
    """Validate plain data (from YAML, JSON or Python) into a pipeline.

    A mapping with a top-level `type` is a single node, wrapped as a one-node pipeline.
    """
    registry = registry or Registry.default()
    try:
        if not isinstance(data, Mapping):
            raise ConfigError("", [f"<root>: expected a mapping, got {type(data).__name__}"])
        data = dict(data)
        if "type" in data:
            # One node standing for a pipeline: its `answer` is the pipeline's too.
            pipeline_fields = {
                k: data.pop(k) for k in ("name", "budget", "answer", "tools") if k in data
            }
            node_class = registry.lookup(data["type"], Strategy, "nodes.main")
            if "answer" in pipeline_fields and "answer" in node_class.model_fields:
                data["answer"] = pipeline_fields["answer"]
            data = {**pipeline_fields, "nodes": {"main": data}}
        nodes = data.get("nodes")
        if not isinstance(nodes, Mapping) or not nodes:
            raise ConfigError("", ["nodes: expected a mapping of node names to nodes"])
        problems: list[str] = []
        built: dict[str, Any] = {}
        for name, node in nodes.items():
            try:
                built[name] = build_component(node, Strategy, registry, f"nodes.{name}")
            except ConfigError as error:
                problems.extend(error.problems)
        if data.get("answer") is not None:
            try:
                data["answer"] = build_component(data["answer"], Answer, registry, "answer")
            except ConfigError as error:
                problems.extend(error.problems)
        if problems:
            # Report the pipeline's own fields too, without the graph checks the broken nodes
            # would confuse.
            problems += _top_level_problems({k: v for k, v in data.items() if k != "nodes"})
            raise ConfigError("", problems)
        try:
            return PipelineConfig.model_validate({**data, "nodes": built})
        except ValidationError as error:
            raise ConfigError("", _describe(error, "", PipelineConfig.model_fields)) from None
    except ConfigError as error:
        raise ConfigError(source, error.problems) from None
    except RecursionError:
        raise ConfigError(source, ["<root>: nested too deeply to be a pipeline"]) from None


def _top_level_problems(fields: Mapping[str, Any]) -> list[str]:
    problems = []
    for name, value in fields.items():
        field = PipelineConfig.model_fields.get(name)
        if field is None:
            problems.append(f"{name}: {_extra_key(name, PipelineConfig.model_fields)}")
        elif name != "answer":  # built (and reported) above
            try:
                TypeAdapter(field.annotation).validate_python(value)
            except ValidationError as error:
                problems += _describe(error, name)
    return problems


def load_pipeline(path: str | Path, registry: Registry | None = None) -> PipelineConfig:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(str(path), [f"cannot read: {error.strerror}"]) from None
    except UnicodeDecodeError as error:
        raise ConfigError(str(path), [f"not UTF-8 text (byte {error.start})"]) from None
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except RecursionError:
        raise ConfigError(str(path), ["<root>: nested too deeply to be a pipeline"]) from None
    except (yaml.YAMLError, json.JSONDecodeError) as error:
        raise ConfigError(str(path), [f"not valid {path.suffix[1:] or 'YAML'}: {error}"]) from None
    return parse_pipeline(data, registry, source=str(path))


def save_pipeline(pipeline: PipelineConfig, path: str | Path) -> None:
    path = Path(path)
    if path.suffix == ".json":
        path.write_text(json.dumps(pipeline.to_data(), indent=2) + "\n")
    else:
        path.write_text(pipeline.to_yaml())
