"""The dataset registry, :data:`REGISTRY`, and the single entry point :func:`load_dataset`.

A dataset is named by a registry entry or by the path of a JSONL/JSON file; options a dataset
does not use are errors, so a mistyped command line does not silently run the wrong benchmark.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType
from typing import get_args

from itc.bench.datasets.base import Dataset, DatasetError, Grader, Source
from itc.bench.datasets.files import FIELD_ROLES, load_jsonl
from itc.bench.datasets.named import (
    load_aime2025,
    load_gsm8k,
    load_humaneval,
    load_math500,
    load_parallelqa,
)
from itc.bench.datasets.synthetic import load_synthetic


@dataclass(frozen=True)
class Options:
    """Everything `load_dataset` may pass on; each registry entry says which of these it uses."""

    seed: int = 0
    difficulty: int | None = None
    count: int | None = None
    path: Path | None = None
    source: Source = "package"


@dataclass(frozen=True)
class DatasetInfo:
    """A registry entry: how to load a dataset, and what a CLI can say about it without loading."""

    name: str
    grader: Grader
    description: str
    load: Callable[[Options], Dataset]
    #: Options this dataset takes beyond the defaults ("path", "hub", "difficulty", "count").
    accepts: frozenset[str] = frozenset()


REGISTRY: Mapping[str, DatasetInfo] = MappingProxyType({
    info.name: info
    for info in (
        DatasetInfo("gsm8k", "math", "GSM8K test split, 1319 grade-school word problems",
                    lambda o: load_gsm8k(o.path, source=o.source), frozenset({"path", "hub"})),
        DatasetInfo("aime2025", "math", "AIME 2025 I and II, 30 problems, integer answers",
                    lambda o: load_aime2025(source=o.source), frozenset({"hub"})),
        DatasetInfo("math500", "math", "MATH-500 from path=<jsonl> or the hub",
                    lambda o: load_math500(o.path, source=o.source), frozenset({"path", "hub"})),
        DatasetInfo("humaneval", "humaneval", "HumanEval, 164 Python tasks graded by tests",
                    lambda o: load_humaneval(o.path), frozenset({"path"})),
        DatasetInfo("parallelqa", "exact", "ParallelQA, 113 multi-lookup questions",
                    lambda o: load_parallelqa(o.path), frozenset({"path"})),
        DatasetInfo("synthetic", "math", "seeded multi-step arithmetic, difficulty 1..5",
                    lambda o: load_synthetic(
                        seed=o.seed,
                        difficulty=3 if o.difficulty is None else o.difficulty,
                        count=100 if o.count is None else o.count,
                    ),
                    frozenset({"difficulty", "count"})),
    )
})

_FILE_SUFFIXES = (".jsonl", ".jsonl.gz", ".json")


def load_dataset(
    name: str,
    limit: int | None = None,
    *,
    offset: int = 0,
    seed: int = 0,
    difficulty: int | None = None,
    count: int | None = None,
    path: Path | str | None = None,
    fields: Mapping[str, str] | None = None,
    source: Source = "package",
    grader: str | None = None,
) -> Dataset:
    """A dataset by registry name, or a ``.jsonl`` / ``.jsonl.gz`` / ``.json`` file path.

    ``seed``, ``difficulty`` (1..5, default 3) and ``count`` (default 100) shape ``synthetic``;
    ``path`` points a file-backed dataset at another file; ``source="hub"`` loads gsm8k,
    aime2025 or math500 from the Hugging Face hub. For a file, ``fields`` maps the roles
    question / answer / id to its field names (defaults: question, answer, row position) and
    ``grader`` names its grader (default "math"). Options a dataset does not use are errors,
    so a mistyped command line does not silently run the wrong benchmark. ``offset`` skips
    the first problems (with ``limit``: problems offset+1 .. offset+limit), e.g. to search on
    problems held apart from those a benchmark reports.
    """
    if limit is not None and limit < 0:
        raise DatasetError(f"limit must be >= 0, got {limit}")
    if offset < 0:
        raise DatasetError(f"offset must be >= 0, got {offset}")
    if source not in get_args(Source):
        raise DatasetError(f"source must be one of {list(get_args(Source))}, got {source!r}")
    file = Path(path) if path is not None else None
    info = REGISTRY.get(name)
    if info is not None:
        given = {"path": file is not None, "hub": source == "hub", "count": count is not None,
                 "difficulty": difficulty is not None, "fields": fields is not None,
                 "grader": grader is not None}
        unused = sorted(k for k, v in given.items() if v and k not in info.accepts)
        if unused:
            raise DatasetError(f"dataset {name!r} does not take {unused}")
        dataset = info.load(
            Options(seed=seed, difficulty=difficulty, count=count, path=file, source=source)
        )
    elif name.endswith(_FILE_SUFFIXES):
        unused = [k for k, v in (("path", file), ("difficulty", difficulty), ("count", count))
                  if v is not None] + (["hub"] if source == "hub" else [])
        if unused:
            raise DatasetError(f"a dataset file does not take {unused}")
        mapping = dict(fields or {})
        unknown = sorted(set(mapping) - set(FIELD_ROLES))
        if unknown:
            raise DatasetError(f"unknown field roles {unknown}; known: {list(FIELD_ROLES)}")
        dataset = load_jsonl(
            Path(name),
            question=mapping.get("question", "question"),
            answer=mapping.get("answer", "answer"),
            id_field=mapping.get("id"),
            grader=grader or "math",
        )
    else:
        raise DatasetError(
            f"unknown dataset {name!r}; known: {sorted(REGISTRY)}, or a path ending in "
            f"{' / '.join(_FILE_SUFFIXES)}"
        )
    if offset or limit is not None:
        end = None if limit is None else offset + limit
        dataset = replace(dataset, problems=dataset.problems[offset:end])
    return dataset
