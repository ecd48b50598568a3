"""Answer extraction, grading and scorers."""

from __future__ import annotations

from itc._lazy import lazy_exports

_EXPORTS = {
    "MathGrader": "itc.verifiers.math",
    "extract_answer": "itc.verifiers.math",
    "LLMJudge": "itc.verifiers.judge",
    "SelfCertainty": "itc.verifiers.self_certainty",
}
__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports("itc.verifiers", _EXPORTS)
