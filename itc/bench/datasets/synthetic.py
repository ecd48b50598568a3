"""Seeded multi-step arithmetic word problems: as many as wanted, at a chosen difficulty.

Each problem keeps its program in its metadata, so its gold answer can be recomputed (and
checked) step by step with :func:`apply_synthetic_step`.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

from itc.bench.datasets.base import Dataset, DatasetError
from itc.types import Problem

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
