"""Budget sweeps: one pipeline, many variants, each a complete config with its own fingerprint.

A sweep edits the pipeline's plain data (what `to_data()` dumps), not the Python objects, so
every variant goes back through `parse_pipeline` and fails exactly as the same value would in
a hand-written YAML file. Each variant's name records what changed (`sc[n=4,repeats=2]`), so
result files and report rows say which point of the sweep they measured, and the family
(the name before `[`) groups them back into one curve.

On the command line a sweep is `PATH=VALUES` (`n=1..8,12`; the value syntax is described in
`itc.bench.values`). PATH is dotted into the pipeline data (`nodes.main.inner.n`); a path that
does not start with a top-level key is taken to start at a node name (`main.inner.n`), so a
node named like a top-level key needs the full `nodes.` path.
"""

from __future__ import annotations

import copy
import itertools
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from itc.bench.values import format_value, parse_sweep_option, unique_values
from itc.config import ConfigError, PipelineConfig, Registry, parse_pipeline

Key = str | int


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
        unique = unique_values(values)
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


def parse_sweep_options(texts: Iterable[str]) -> dict[str, list[Any]]:
    """Several CLI options into the mapping `expand_sweep` takes; a path may appear once."""
    assignments: dict[str, list[Any]] = {}
    for text in texts:
        path, values = parse_sweep_option(text)
        if path in assignments:
            raise ValueError(f"sweep {text!r}: {path!r} is already swept; list all values once")
        assignments[path] = values
    return assignments


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
