"""Budget sweeps: one pipeline, many variants, each a complete config with its own fingerprint.

A sweep edits the pipeline's plain data (what `to_data()` dumps), not the Python objects, so
every variant goes back through `parse_pipeline` and fails exactly as the same value would in
a hand-written YAML file. Each variant's name records what changed (`sc[n=4,repeats=2]`), so
result files and report rows say which point of the sweep they measured, and the family
(the name before `[`) groups them back into one curve.

CLI syntax (`parse_sweep_option`)::

    PATH=V1,V2,...      explicit values, each read as a YAML scalar (4, 0.5, null, text)
    PATH=LO..HI         doubling from LO up to HI: 1..64 is 1,2,4,8,16,32,64
    PATH=LO..HI:lin     every integer from LO to HI: 1..4:lin is 1,2,3,4

Items combine (`n=1..8,12`). PATH is dotted into the pipeline data (`nodes.main.inner.n`);
a path that does not start with a top-level key is taken to start at a node name
(`main.inner.n`), so a node named like a top-level key needs the full `nodes.` path.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import yaml

from itc.config import ConfigError, PipelineConfig, Registry, parse_pipeline

Key = str | int

_RANGE = re.compile(r"^(-?\d+)\.\.(-?\d+)(?::(\w+))?$")
_RANGE_LIKE = re.compile(r"^[-+\d.eE]+\.\.[-+\d.eE]+(?::\w*)?$")
_MAX_RANGE_VALUES = 10_000


def expand_sweep(
    pipeline: PipelineConfig,
    assignments: Mapping[str, Sequence[Any]],
    registry: Registry | None = None,
) -> list[PipelineConfig]:
    """Every combination of the assigned values, as validated and distinctly named pipelines.

    Order is the cartesian product in the order the assignments were given (the last path
    varies fastest). Repeated values are dropped, so fingerprints never collide. Raises
    `ConfigError` for a path that does not exist and for values the config rejects.
    """
    base = pipeline.to_data()
    where = f"sweep of {pipeline.name!r}"
    paths: list[tuple[Key, ...]] = []
    value_lists: list[list[Any]] = []
    given_as: dict[tuple[Key, ...], str] = {}
    for raw, values in assignments.items():
        path = _resolve(base, raw, where)
        if path in given_as:
            raise ConfigError(where, [f"{raw}: same setting as {given_as[path]!r}; give it once"])
        given_as[path] = raw
        if isinstance(values, str | bytes) or not isinstance(values, Sequence):
            raise ConfigError(where, [f"{raw}: expected a list of values, got {values!r:.60}"])
        unique = _unique(values)
        if not unique:
            raise ConfigError(where, [f"{raw}: no values to sweep over"])
        paths.append(path)
        value_lists.append(unique)

    labels = _labels(paths)
    variants = []
    for combination in itertools.product(*value_lists):
        data = copy.deepcopy(base)
        for path, value in zip(paths, combination, strict=True):
            _set(data, path, value)
        if labels:
            tag = ",".join(
                f"{label}={format_value(v)}" for label, v in zip(labels, combination, strict=True)
            )
            data["name"] = f"{pipeline.name}[{tag}]"
        variants.append(parse_pipeline(data, registry, source=data["name"]))
    return variants


def parse_sweep_option(text: str) -> tuple[str, list[Any]]:
    """Parse one `PATH=V1,V2,...` / `PATH=LO..HI[:lin]` option into (path, values).

    Values are YAML scalars, so `4` is an int, `0.5` a float, `null` None and anything else
    a string; there is no quoting of commas. Raises ValueError with the offending text.
    """
    path, sep, spec = text.partition("=")
    path = path.strip()
    usage = "expected PATH=V1,V2,... or PATH=LO..HI[:lin]"
    if not sep or not path or not spec.strip():
        raise ValueError(f"sweep {text!r}: {usage}")
    if any(ch.isspace() for ch in path):
        raise ValueError(f"sweep {text!r}: the path {path!r} contains spaces")
    values: list[Any] = []
    for item in spec.split(","):
        item = item.strip()
        if not item:
            raise ValueError(f"sweep {text!r}: empty value (write null for a null)")
        match = _RANGE.match(item)
        if match:
            low, high, mode = int(match[1]), int(match[2]), match[3]
            values.extend(_expand_range(low, high, mode, text))
        elif _RANGE_LIKE.match(item):
            raise ValueError(f"sweep {text!r}: range {item!r} needs integer bounds, LO..HI[:lin]")
        else:
            values.append(_scalar(item, text))
    return path, _unique(values)


def parse_sweep_options(texts: Iterable[str]) -> dict[str, list[Any]]:
    """Several CLI options into the mapping `expand_sweep` takes; a path may appear once."""
    assignments: dict[str, list[Any]] = {}
    for text in texts:
        path, values = parse_sweep_option(text)
        if path in assignments:
            raise ValueError(f"sweep {text!r}: {path!r} is already swept; list all values once")
        assignments[path] = values
    return assignments


def format_value(value: Any) -> str:
    """How a swept value appears in a variant name: YAML/JSON spelling, strings bare."""
    if isinstance(value, str):
        return value
    return json.dumps(value, default=str)


def _expand_range(low: int, high: int, mode: str | None, text: str) -> list[int]:
    if high < low:
        raise ValueError(f"sweep {text!r}: range {low}..{high} is empty (HI is below LO)")
    if mode == "lin":
        if high - low + 1 > _MAX_RANGE_VALUES:
            raise ValueError(f"sweep {text!r}: more than {_MAX_RANGE_VALUES} values")
        return list(range(low, high + 1))
    if mode not in (None, "pow2"):
        raise ValueError(f"sweep {text!r}: unknown range kind {mode!r}; use :lin or :pow2")
    if low < 1:
        raise ValueError(f"sweep {text!r}: a doubling range needs LO >= 1 (or add :lin)")
    values = []
    value = low
    while value <= high:
        values.append(value)
        value *= 2
    return values


def _scalar(item: str, text: str) -> Any:
    try:
        value = yaml.safe_load(item)
    except yaml.YAMLError:
        raise ValueError(f"sweep {text!r}: {item!r} is not a valid YAML scalar") from None
    if isinstance(value, Mapping | list):
        raise ValueError(f"sweep {text!r}: {item!r} is not a scalar value")
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return item  # dates and other YAML extras stay text, as a config would want them


def _unique(values: Iterable[Any]) -> list[Any]:
    """Drop repeats by their spelling in names (so 1 and 1.0 stay apart, as YAML has them)."""
    seen: set[tuple[str, str]] = set()
    unique = []
    for value in values:
        key = (type(value).__name__, format_value(value))
        if key not in seen:
            seen.add(key)
            unique.append(value)
    return unique


def _resolve(data: dict[str, Any], raw: str, where: str) -> tuple[Key, ...]:
    """Turn a dotted path into keys into `data`, or explain where it stopped matching."""
    parts = raw.split(".")
    if any(not part for part in parts):
        raise ConfigError(where, [f"{raw}: empty component in the dotted path"])
    nodes = data.get("nodes", {})
    if parts[0] not in data and parts[0] in nodes:
        parts = ["nodes", *parts]
    resolved: list[Key] = []
    node: Any = data
    for index, part in enumerate(parts):
        here = ".".join(parts[:index]) or "the top level"
        if isinstance(node, Mapping):
            if part not in node:
                available = ", ".join(sorted(node)) or "none"
                hint = f" (or a node name: {', '.join(sorted(nodes))})" if index == 0 else ""
                problem = f"{raw}: no key {part!r} at {here}; available keys: {available}{hint}"
                raise ConfigError(where, [problem])
            key: Key = part
        elif isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                valid = f"an index 0..{len(node) - 1}" if node else "nothing (it is empty)"
                raise ConfigError(where, [f"{raw}: {here} is a list; it takes {valid}"])
            key = int(part)
        else:
            shown = json.dumps(node, default=str)
            raise ConfigError(
                where, [f"{raw}: {here} is {shown}, not a mapping, so it has no {part!r}"]
            )
        resolved.append(key)
        if index < len(parts) - 1:
            node = node[key]
    return tuple(resolved)


def _set(data: Any, path: tuple[Key, ...], value: Any) -> None:
    for key in path[:-1]:
        data = data[key]
    data[path[-1]] = value


def _labels(paths: list[tuple[Key, ...]]) -> list[str]:
    """Shortest path suffixes that tell the swept settings apart (usually the last key)."""
    lengths = [2 if isinstance(p[-1], int) and len(p) > 1 else 1 for p in paths]

    def label(i: int) -> str:
        return ".".join(str(k) for k in paths[i][-lengths[i] :])

    while True:
        groups: dict[str, list[int]] = {}
        for i in range(len(paths)):
            groups.setdefault(label(i), []).append(i)
        clashing = [i for group in groups.values() if len(group) > 1 for i in group]
        growable = [i for i in clashing if lengths[i] < len(paths[i])]
        if not growable:
            return [label(i) for i in range(len(paths))]
        for i in growable:
            lengths[i] += 1


def expand_sweeps(
    pipelines: Sequence[PipelineConfig],
    assignments: Mapping[str, Sequence[Any]],
    registry: Registry | None = None,
) -> list[PipelineConfig]:
    """Sweep every pipeline that has the swept settings; keep the others as baselines.

    A pipeline with none of the paths (a greedy baseline beside swept strategies) runs once,
    unchanged. One with only some of them is an error, and so is a sweep no pipeline has.
    """
    expanded: list[PipelineConfig] = []
    swept = False
    for pipeline in pipelines:
        data = pipeline.to_data()
        found = []
        for raw in assignments:
            try:
                _resolve(data, raw, pipeline.name)
                found.append(raw)
            except ConfigError:
                pass
        if not found:
            expanded.append(pipeline)
        elif len(found) < len(assignments):
            missing = sorted(set(assignments) - set(found))
            expand_sweep(pipeline, {raw: assignments[raw] for raw in missing}, registry)
        else:
            expanded.extend(expand_sweep(pipeline, assignments, registry))
            swept = True
    if assignments and not swept:
        # Let the first pipeline explain why the first path does not apply.
        expand_sweep(pipelines[0], assignments, registry)
    return expanded
