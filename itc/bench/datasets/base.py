"""What every dataset module shares: the `Dataset` value, its grader names and its error.

Kept apart from the loaders so that code which only passes datasets around (the benchmark
runner, the CLI's error handling) needs none of the file, hub or generator code.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal, get_args

from itc.nodes import Answer
from itc.types import Problem
from itc.verifiers.answers import CodeAnswer, MathAnswer, TextAnswer

Grader = Literal["math", "humaneval", "exact"]
Source = Literal["package", "hub"]
GRADERS: tuple[str, ...] = get_args(Grader)
_ANSWERS: Mapping[str, Answer] = MappingProxyType(
    {"math": MathAnswer(), "humaneval": CodeAnswer(), "exact": TextAnswer()}
)


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

    @property
    def answer(self) -> Answer:
        """The answer kind whose rules grade this dataset (math, code tests, short text)."""
        return _ANSWERS[self.grader]

    def __len__(self) -> int:
        return len(self.problems)
