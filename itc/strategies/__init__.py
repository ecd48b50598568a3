"""Strategy nodes, one per file."""

from __future__ import annotations

from itc._lazy import lazy_exports

_EXPORTS = {
    "Strategy": "itc.nodes",
    "Generate": "itc.strategies.generate",
    "BestOfN": "itc.strategies.best_of_n",
    "SelfConsistency": "itc.strategies.self_consistency",
    "EarlyStop": "itc.strategies.self_consistency",
}
__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports("itc.strategies", _EXPORTS)
