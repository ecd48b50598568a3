"""Strategy nodes, one per file."""

from __future__ import annotations

from typing import TYPE_CHECKING

from itc._lazy import lazy_exports

_EXPORTS = {
    "Strategy": "itc.nodes",
    "Generate": "itc.strategies.generate",
    "BestOfN": "itc.strategies.best_of_n",
    "SelfConsistency": "itc.strategies.self_consistency",
    "EarlyStop": "itc.strategies.self_consistency",
    "ParticleFiltering": "itc.strategies.particle_filtering",
    "StepSearch": "itc.strategies.stepwise",
}
__all__ = [
    "BestOfN",
    "EarlyStop",
    "Generate",
    "ParticleFiltering",
    "SelfConsistency",
    "StepSearch",
    "Strategy",
]

if TYPE_CHECKING:
    from itc.nodes import Strategy
    from itc.strategies.best_of_n import BestOfN
    from itc.strategies.generate import Generate
    from itc.strategies.particle_filtering import ParticleFiltering
    from itc.strategies.self_consistency import EarlyStop, SelfConsistency
    from itc.strategies.stepwise import StepSearch
else:
    __getattr__ = lazy_exports("itc.strategies", _EXPORTS)
