"""The dataset registry: every loader, the file-format helpers' error messages, the hub guard,
the synthetic generator and the "exact" grader. No network and no server."""

from __future__ import annotations

import gzip
import json
import re
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from itc.bench.datasets import (
    GRADERS,
    REGISTRY,
    Dataset,
    DatasetError,
    apply_synthetic_step,
    load_dataset,
    load_synthetic,
    parallelqa_path,
    parse_fields,
)
from itc.bench.datasets.named import _aime_answer
from itc.verifiers.text import exact_match

# ---------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------


def test_registry_is_immutable_and_complete() -> None:
    assert set(REGISTRY) == {"gsm8k", "aime2025", "math500", "humaneval", "parallelqa", "synthetic"}
    with pytest.raises(TypeError):
        REGISTRY["mine"] = REGISTRY["gsm8k"]  # type: ignore[index]
    for name, info in REGISTRY.items():
        assert info.name == name and info.grader in GRADERS


@pytest.mark.parametrize("name", ["gsm8k", "aime2025", "humaneval", "synthetic"])
def test_registry_grader_matches_the_loaded_dataset(name: str) -> None:
    assert load_dataset(name, 3).grader == REGISTRY[name].grader


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(DatasetError) as error:
        load_dataset("gsm9k")
    for name in REGISTRY:
        assert name in str(error.value)


def test_options_a_dataset_does_not_take_are_errors() -> None:
    with pytest.raises(DatasetError, match="difficulty"):
        load_dataset("gsm8k", difficulty=2)
    with pytest.raises(DatasetError, match="hub"):
        load_dataset("humaneval", source="hub")
    with pytest.raises(DatasetError, match="fields"):
        load_dataset("parallelqa", fields={"question": "q"})
    with pytest.raises(DatasetError, match="limit"):
        load_dataset("gsm8k", -1)


def test_unknown_grader_is_rejected() -> None:
    with pytest.raises(DatasetError, match="grader"):
        Dataset("x", (), "fuzzy")


# ---------------------------------------------------------------------------------------------
# Packaged datasets
# ---------------------------------------------------------------------------------------------


def test_gsm8k() -> None:
    data = load_dataset("gsm8k")
    assert (data.name, data.grader, len(data)) == ("gsm8k", "math", 1319)
    assert data.problems[0].answer == "18"
    assert data.problems[0].prompt and data.problems[0].prompt.startswith("Janet")
    assert len({p.id for p in data.problems}) == 1319
    assert all(re.fullmatch(r"-?\d+", p.answer or "") for p in data.problems)
    assert len(load_dataset("gsm8k", 5)) == 5


def test_offset_skips_problems_before_the_limit_counts() -> None:
    every = load_dataset("gsm8k", 8).problems
    assert load_dataset("gsm8k", 3, offset=5).problems == every[5:8]
    assert load_dataset("gsm8k", offset=7).problems[0] == every[7]
    with pytest.raises(DatasetError, match="offset"):
        load_dataset("gsm8k", 3, offset=-1)


def test_aime2025() -> None:
    data = load_dataset("aime2025")
    assert (data.grader, len(data)) == ("math", 30)
    assert len({p.id for p in data.problems}) == 30
    for problem in data.problems:
        assert problem.answer is not None and re.fullmatch(r"\d+", problem.answer)
        assert 0 <= int(problem.answer) <= 999
    assert data.problems[0].answer == "70"
    # The one packaged answer written with a degree sign is kept as its integer.
    assert data.problems[19].id == "aime2025-II-5" and data.problems[19].answer == "336"


def test_humaneval() -> None:
    data = load_dataset("humaneval")
    assert (data.grader, len(data)) == ("humaneval", 164)
    first = data.problems[0]
    assert first.id == "HumanEval/0" and first.answer is None
    assert first.metadata["entry_point"] == "has_close_elements"
    assert "def check(candidate)" in first.metadata["test"]
    assert first.metadata["prompt"] == first.prompt
    assert first.prompt is not None and "def has_close_elements(" in first.prompt


def test_parallelqa_default_path() -> None:
    if not parallelqa_path().exists():
        pytest.skip("shared ParallelQA data not present")
    data = load_dataset("parallelqa")
    assert (data.name, data.grader, len(data)) == ("parallelqa", "exact", 113)
    first = data.problems[0]
    assert first.id == "parallelqa-1" and first.answer == "Mariana Trench"
    assert first.metadata == {"branch": 2}
    assert {p.metadata["branch"] for p in data.problems} <= {2, 3, 4, 5}


def test_parallelqa_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "pqa.json"
    path.write_text(json.dumps([{"id": 7, "question": "Which?", "answer": "That", "branch": 3}]))
    monkeypatch.setenv("ITC_PARALLELQA", str(path))
    (problem,) = load_dataset("parallelqa").problems
    assert (problem.id, problem.answer, problem.metadata) == ("parallelqa-7", "That", {"branch": 3})


# ---------------------------------------------------------------------------------------------
# Files: math500 and any JSONL
# ---------------------------------------------------------------------------------------------


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_math500_from_file(tmp_path: Path) -> None:
    path = _write_jsonl(
        tmp_path / "math500.jsonl",
        [
            {
                "problem": "Half of one?",
                "answer": "\\frac{1}{2}",
                "unique_id": "test/algebra/1.json",
                "subject": "Algebra",
                "level": 1,
                "solution": "...",
            },
            {"problem": "Two?", "answer": 2, "unique_id": "test/prealgebra/2.json"},
        ],
    )
    data = load_dataset("math500", path=path)
    assert (data.name, data.grader, len(data)) == ("math500", "math", 2)
    first, second = data.problems
    assert first.answer == "\\frac{1}{2}"  # bare LaTeX, untouched
    assert first.id == "test/algebra/1.json"
    assert first.metadata == {"subject": "Algebra", "level": 1}
    assert second.answer == "2"
    with pytest.raises(DatasetError, match="path="):
        load_dataset("math500")


def test_any_jsonl_with_field_mapping(tmp_path: Path) -> None:
    path = _write_jsonl(
        tmp_path / "mine.jsonl",
        [
            {"q": "One plus one?", "a": 2, "uid": "x1"},
            {"q": "Two plus two?", "a": "4", "uid": "x2"},
        ],
    )
    fields = parse_fields(["question=q", "answer=a", "id=uid"])
    assert fields == {"question": "q", "answer": "a", "id": "uid"}
    data = load_dataset(str(path), fields=fields)
    assert (data.name, data.grader) == ("mine", "math")
    assert [(p.id, p.prompt, p.answer) for p in data.problems] == [
        ("x1", "One plus one?", "2"),
        ("x2", "Two plus two?", "4"),
    ]
    assert load_dataset(str(path), 1, fields=fields, grader="exact").grader == "exact"
    # Without an id field the row position is the id.
    assert [
        p.id for p in load_dataset(str(path), fields={"question": "q", "answer": "a"}).problems
    ] == ["0", "1"]


def test_field_options_are_checked(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="ROLE=FIELD"):
        parse_fields(["question"])
    with pytest.raises(DatasetError, match="role"):
        parse_fields(["solution=s"])
    path = _write_jsonl(tmp_path / "f.jsonl", [{"question": "q", "answer": "1"}])
    with pytest.raises(DatasetError, match="roles"):
        load_dataset(str(path), fields={"gold": "answer"})
    with pytest.raises(DatasetError, match="cannot read"):
        load_dataset(str(tmp_path / "absent.jsonl"))


def test_jsonl_gz_and_json_array_files(tmp_path: Path) -> None:
    rows = [{"question": "a?", "answer": "1"}, {"question": "b?", "answer": "2"}]
    gz = tmp_path / "g.jsonl.gz"
    gz.write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in rows).encode()))
    array = tmp_path / "a.json"
    array.write_text(json.dumps(rows, indent=1))
    for path in (gz, array):
        data = load_dataset(str(path))
        assert [p.answer for p in data.problems] == ["1", "2"]
    assert load_dataset(str(gz)).name == "g"


def test_duplicate_ids_are_rejected(tmp_path: Path) -> None:
    path = _write_jsonl(
        tmp_path / "d.jsonl",
        [
            {"question": "a", "answer": "1", "k": "same"},
            {"question": "b", "answer": "2", "k": "same"},
        ],
    )
    with pytest.raises(DatasetError, match=r"row 2: field 'k' repeats .* of row 1"):
        load_dataset(str(path), fields={"id": "k"})


# ---------------------------------------------------------------------------------------------
# Malformed input: one error naming the file, the row and the field, for every file kind
# ---------------------------------------------------------------------------------------------

HUMANEVAL_ROW = {
    "task_id": "T/0",
    "prompt": "def f():\n",
    "entry_point": "f",
    "canonical_solution": "    return 1\n",
    "test": "def check(c):\n    pass\n",
}

# kind -> (file suffix, a valid row for position i, the field to break, how to load the file)
KINDS: dict[str, tuple[str, Callable[[int], dict[str, Any]], str, Callable[[Path], Dataset]]] = {
    "gsm8k": (
        ".jsonl",
        lambda i: {"question": f"Q{i}?", "answer": f"so\n#### {i}"},
        "question",
        lambda p: load_dataset("gsm8k", path=p),
    ),
    "math500": (
        ".jsonl",
        lambda i: {"problem": f"P{i}", "answer": "\\pi", "unique_id": f"u{i}"},
        "problem",
        lambda p: load_dataset("math500", path=p),
    ),
    "jsonl": (
        ".jsonl",
        lambda i: {"q": f"Q{i}", "a": "1", "uid": f"u{i}"},
        "q",
        lambda p: load_dataset(str(p), fields={"question": "q", "answer": "a", "id": "uid"}),
    ),
    "parallelqa": (
        ".json",
        lambda i: {"id": str(i), "question": f"Q{i}", "answer": "A", "branch": 2},
        "question",
        lambda p: load_dataset("parallelqa", path=p),
    ),
    "humaneval": (
        ".jsonl.gz",
        lambda i: {**HUMANEVAL_ROW, "task_id": f"T/{i}"},
        "entry_point",
        lambda p: load_dataset("humaneval", path=p),
    ),
}

BAD_JSON = '{"question": "Q3?", "answer": }'


def _write_kind(path: Path, suffix: str, texts: list[str]) -> None:
    """Rows given as JSON texts (possibly invalid), in the file layout of ``suffix``."""
    if suffix == ".json":
        path.write_text("[\n" + ",\n".join(texts) + "\n]\n", encoding="utf-8")
    elif suffix == ".jsonl.gz":
        path.write_bytes(gzip.compress(("\n".join(texts) + "\n").encode()))
    else:
        path.write_text("\n".join(texts) + "\n", encoding="utf-8")


def _write_to(path: Path, suffix: str, texts: list[str]) -> Path:
    _write_kind(path, suffix, texts)
    return path


def _break(row: dict[str, Any], field: str, how: str) -> dict[str, Any]:
    broken = dict(row)
    if how == "missing":
        del broken[field]
    elif how == "empty":
        broken[field] = "   "
    else:
        broken[field] = ["not", "a", "string"]
    return broken


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("how", ["bad json", "missing", "empty", "wrong type"])
def test_malformed_row_is_named(tmp_path: Path, kind: str, how: str) -> None:
    suffix, row, field, load = KINDS[kind]
    path = tmp_path / f"data{suffix}"
    assert len(load(_write_to(path, suffix, [json.dumps(row(i)) for i in (1, 2)]))) == 2
    third = BAD_JSON if how == "bad json" else json.dumps(_break(row(3), field, how))
    _write_kind(path, suffix, [json.dumps(row(1)), json.dumps(row(2)), third])
    with pytest.raises(DatasetError) as error:
        load(path)
    message = str(error.value)
    assert str(path) in message and "row 3" in message, message
    if how == "bad json":
        assert "not valid JSON" in message
    else:
        assert repr(field) in message
        expected = {
            "missing": "missing or empty",
            "empty": "missing or empty",
            "wrong type": "should be a string, got list",
        }[how]
        assert expected in message


def test_jsonl_row_numbers_count_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "b.jsonl"
    path.write_text('{"question": "a", "answer": "1"}\n\n{"question": "b"}\n')
    with pytest.raises(DatasetError, match=r"b\.jsonl, row 3: field 'answer' is missing"):
        load_dataset(str(path))


def test_other_malformed_shapes(tmp_path: Path) -> None:
    not_object = tmp_path / "n.jsonl"
    not_object.write_text('{"question": "a", "answer": "1"}\n[1, 2]\n')
    with pytest.raises(DatasetError, match=r"row 2: expected a JSON object"):
        load_dataset(str(not_object))
    not_array = tmp_path / "n.json"
    not_array.write_text('{"question": "a"}')
    with pytest.raises(DatasetError, match="expected a JSON array"):
        load_dataset(str(not_array))
    bad_utf8 = tmp_path / "u.jsonl"
    bad_utf8.write_bytes(b'{"question": "a", "answer": "1"}\n{"question": "\xff"}\n')
    with pytest.raises(DatasetError, match="row 2: not valid UTF-8"):
        load_dataset(str(bad_utf8))
    truncated = tmp_path / "t.jsonl.gz"
    truncated.write_bytes(gzip.compress(b'{"question": "a", "answer": "1"}\n' * 50)[:-12])
    with pytest.raises(DatasetError, match="cannot read"):
        load_dataset(str(truncated))
    gsm = _write_jsonl(tmp_path / "gsm.jsonl", [{"question": "q", "answer": "no marker"}])
    with pytest.raises(DatasetError, match=r"row 1: field 'answer' has no '####"):
        load_dataset("gsm8k", path=gsm)
    he = tmp_path / "he.jsonl.gz"
    he.write_bytes(gzip.compress(json.dumps({**HUMANEVAL_ROW, "entry_point": "not name"}).encode()))
    with pytest.raises(DatasetError, match="row 1: field 'entry_point' is not a Python name"):
        load_dataset("humaneval", path=he)


def test_aime_answers_must_be_integers(tmp_path: Path) -> None:
    row = {"question": "q", "answer": "1/2"}
    with pytest.raises(DatasetError, match=r"f\.jsonl, row 4: field 'answer' should be an "):
        _aime_answer(tmp_path / "f.jsonl", 4, row)
    assert _aime_answer("x", 1, {"answer": "336^\\circ"}) == "336"
    assert _aime_answer("x", 1, {"answer": 5}) == "5"


# ---------------------------------------------------------------------------------------------
# The hub, without a network: the optional library and reachability are checked first
# ---------------------------------------------------------------------------------------------


def test_hub_without_the_datasets_library(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` fail
    with pytest.raises(DatasetError, match="optional 'datasets' library"):
        load_dataset("gsm8k", source="hub")


def _fake_hub(monkeypatch: pytest.MonkeyPatch, tables: dict[tuple[str, Any], list[dict]]) -> None:
    module = types.ModuleType("datasets")

    def load(repo: str, config: Any = None, *, split: str) -> list[dict[str, Any]]:
        assert split == "test"
        return tables[(repo, config)]

    module.load_dataset = load  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "datasets", module)


def test_hub_unreachable(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_hub(monkeypatch, {})
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)

    def offline(*args: Any, **kwargs: Any) -> httpx.Response:
        raise httpx.ConnectError("no route to host")

    monkeypatch.setattr(httpx, "get", offline)
    with pytest.raises(DatasetError, match="hub is not reachable"):
        load_dataset("aime2025", source="hub")


def test_hub_rows_go_through_the_same_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")  # skips the reachability probe
    _fake_hub(
        monkeypatch,
        {
            ("HuggingFaceH4/MATH-500", None): [
                {"problem": "p", "answer": "\\sqrt{2}", "unique_id": "a"},
            ],
            ("openai/gsm8k", "main"): [
                {"question": "q", "answer": "x\n#### 1,000"},
                {"question": "q"},
            ],
        },
    )
    (problem,) = load_dataset("math500", source="hub").problems
    assert (problem.id, problem.answer) == ("a", "\\sqrt{2}")
    with pytest.raises(DatasetError, match=r"hf:openai/gsm8k/main \(test\), row 2: field 'answer'"):
        load_dataset("gsm8k", source="hub")


# ---------------------------------------------------------------------------------------------
# Synthetic problems
# ---------------------------------------------------------------------------------------------


def _recompute(problem: Any) -> int:
    value = problem.metadata["start"]
    for step in problem.metadata["steps"]:
        value = apply_synthetic_step(value, step)
    return value


def test_synthetic_is_deterministic_per_seed() -> None:
    first = load_dataset("synthetic", seed=7, difficulty=3, count=20)
    again = load_dataset("synthetic", seed=7, difficulty=3, count=20)
    other = load_dataset("synthetic", seed=8, difficulty=3, count=20)
    assert first == again
    assert [p.prompt for p in first.problems] != [p.prompt for p in other.problems]
    assert len({p.id for p in first.problems} | {p.id for p in other.problems}) == 40
    # Problem i does not depend on how many were asked for.
    assert load_synthetic(seed=7, difficulty=3, count=5).problems == first.problems[:5]
    assert (first.grader, len(first)) == ("math", 20)


@pytest.mark.parametrize("difficulty", [1, 2, 3, 4, 5])
def test_synthetic_gold_answers_are_exact(difficulty: int) -> None:
    data = load_synthetic(seed=difficulty, difficulty=difficulty, count=40)
    for problem in data.problems:
        assert problem.answer == str(_recompute(problem))
        assert int(problem.answer) >= 0
        assert problem.prompt is not None and problem.prompt.endswith("have now?")
        mentioned = [int(n) for n in re.findall(r"\d+", problem.prompt)]
        assert mentioned[0] == problem.metadata["start"]
        for step in problem.metadata["steps"]:
            for operand in step[1:]:
                if step[0] != "times":  # "doubles", "triples", "quadruples"
                    assert operand in mentioned


def test_synthetic_difficulty_grows() -> None:
    steps, largest = {}, {}
    for difficulty in range(1, 6):
        data = load_synthetic(seed=0, difficulty=difficulty, count=30)
        counts = {len(p.metadata["steps"]) for p in data.problems}
        assert len(counts) == 1
        steps[difficulty] = counts.pop()
        largest[difficulty] = max(p.metadata["start"] for p in data.problems)
        assert all(p.metadata["difficulty"] == difficulty for p in data.problems)
    assert [steps[d] for d in range(1, 6)] == sorted(set(steps.values()))
    assert [largest[d] for d in range(1, 6)] == sorted(largest.values())
    assert largest[5] > 10 * largest[2]
    with pytest.raises(DatasetError, match=r"difficulty must be 1\.\.5"):
        load_dataset("synthetic", difficulty=6)


def test_synthetic_default_count() -> None:
    assert len(load_dataset("synthetic")) == 100
    assert len(load_dataset("synthetic", 10, count=50)) == 10


# ---------------------------------------------------------------------------------------------
# The "exact" grader
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("gold", "predicted"),
    [
        ("Mariana Trench", "The Mariana Trench."),
        ("peregrine falcon", "Peregrine Falcon"),
        ("Statue of Unity", "\\text{Statue of Unity}"),
        ("5931.80", "5931.8"),
        ("5931.80", "5931.804"),
        ("1.07", "1.0749"),
        ("104736200", "104,736,200"),
        ("3307", "about 3307 km"),
        ("1.125", "9/8"),
    ],
)
def test_exact_match(gold: str, predicted: str) -> None:
    assert exact_match(gold, predicted)


@pytest.mark.parametrize(
    ("gold", "predicted"),
    [
        ("Mariana Trench", "Puerto Rico Trench"),
        ("Mariana Trench", "Mariana"),
        ("5931.80", "5931.9"),
        ("24", "24 or 25"),
        ("24", "twenty-four"),
        ("1.07", "1.08"),
    ],
)
def test_exact_mismatch(gold: str, predicted: str) -> None:
    assert not exact_match(gold, predicted)
