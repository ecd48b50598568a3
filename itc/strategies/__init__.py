"""Strategy nodes, one per file."""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "Strategy": "itc.strategies.base",
    "Generate": "itc.strategies.generate",
    "BestOfN": "itc.strategies.best_of_n",
    "SelfConsistency": "itc.strategies.self_consistency",
    "EarlyStop": "itc.strategies.self_consistency",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'itc.strategies' has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name]), name)
