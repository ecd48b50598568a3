"""Value lists written on a command line: `4,8,null`, doubling ranges `1..64`, `1..4:lin`.

Used by sweeps (`itc.bench.sweep`) and by pool budgets (`itc.bench.pools`); it imports nothing
from itc, so a report that reads budgets does not pull in configs, strategies or backends.

Syntax (`parse_sweep_option`)::

    PATH=V1,V2,...      explicit values, each read as a YAML scalar (4, 0.5, null, text)
    PATH=LO..HI         doubling from LO up to HI: 1..64 is 1,2,4,8,16,32,64
    PATH=LO..HI:lin     every integer from LO to HI: 1..4:lin is 1,2,3,4

Items combine (`n=1..8,12`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

import yaml

_RANGE = re.compile(r"^(-?\d+)\.\.(-?\d+)(?::(\w+))?$")
_RANGE_LIKE = re.compile(r"^[-+\d.eE]+\.\.[-+\d.eE]+(?::\w*)?$")
_MAX_RANGE_VALUES = 10_000


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
    return path, unique_values(values)


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


def unique_values(values: Iterable[Any]) -> list[Any]:
    """Drop repeats by their spelling in names (so 1 and 1.0 stay apart, as YAML has them)."""
    seen: set[tuple[str, str]] = set()
    unique = []
    for value in values:
        key = (type(value).__name__, format_value(value))
        if key not in seen:
            seen.add(key)
            unique.append(value)
    return unique
