"""Reading dataset files: rows of JSONL / JSON files and the checked fields of each row.

Every row of every loader passes through :func:`read_rows` (or, for the hub, :func:`as_object`)
and :func:`row_field`, so a malformed row always fails with one :class:`DatasetError` naming
the file, the row and the field instead of surfacing later as a confusing error in the middle
of a benchmark run. Row numbers are 1-based: line numbers for JSONL, element positions for
JSON arrays, and the row index plus one for hub datasets.
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from itc.bench.datasets.base import Dataset, DatasetError
from itc.types import Problem

#: Where the row came from, for error messages: a file path or a hub label.
Where = Path | str


def _open_binary(path: Path) -> Any:
    try:
        if path.name.endswith(".gz"):
            return gzip.open(path, "rb")
        return path.open("rb")
    except OSError as error:
        raise DatasetError(f"{path}: cannot read ({error.strerror or error})") from None


def as_object(where: Where, number: int, row: Any) -> dict[str, Any]:
    """The row itself, checked to be a JSON object, since loaders look fields up by name."""
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
                yield number, as_object(path, number, row)
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
        yield number, as_object(path, number, row)
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


def read_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Rows of a data file, by suffix: ``.json`` is one array, anything else is JSON lines."""
    return _json_rows(path) if path.suffix == ".json" else _jsonl_rows(path)


_KIND_NAMES = {str: "a string", int: "an integer", float: "a number", dict: "an object"}


def row_field(
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


def row_text(where: Where, number: int, row: Mapping[str, Any], name: str) -> str:
    """A required string field: a number where a prompt belongs is an error, not a prompt."""
    return str(row_field(where, number, row, name, str))


def _preview(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


class UniqueIds:
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


# -- any JSONL file ----------------------------------------------------------------------------

FIELD_ROLES = ("question", "answer", "id")


def load_jsonl(
    path: Path, *, question: str = "question", answer: str | None = "answer",
    id_field: str | None = None, name: str | None = None, grader: str = "math",
) -> Dataset:
    """Any JSONL (or .jsonl.gz, or JSON array) file, given which fields hold the question, the
    answer (None: no gold answer) and optionally an id (default: the row's position)."""
    problems, ids = [], UniqueIds()
    for index, (number, row) in enumerate(read_rows(path)):
        problem_id = str(index)
        if id_field:
            value = str(row_field(path, number, row, id_field, (str, int)))
            problem_id = ids.check(path, number, id_field, value)
        gold = str(row_field(path, number, row, answer)).strip() if answer else None
        problems.append(
            Problem(id=problem_id, prompt=row_text(path, number, row, question), answer=gold)
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
