"""Answer extraction, grading and scorers."""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "MathGrader": "itc.verifiers.math",
    "extract_answer": "itc.verifiers.math",
    "LLMJudge": "itc.verifiers.judge",
    "SelfCertainty": "itc.verifiers.self_certainty",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'itc.verifiers' has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name]), name)
