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
    "RPC": "itc.strategies.rpc",
    "EarlyPruning": "itc.strategies.early_pruning",
    "AStar": "itc.strategies.a_star",
    "BeamSearch": "itc.strategies.beam_search",
    "DVTS": "itc.strategies.dvts",
}
__all__ = [
    "DVTS",
    "RPC",
    "AStar",
    "BeamSearch",
    "BestOfN",
    "EarlyPruning",
    "EarlyStop",
    "Generate",
    "ParticleFiltering",
    "SelfConsistency",
    "StepSearch",
    "Strategy",
]

if TYPE_CHECKING:
    from itc.nodes import Strategy
    from itc.strategies.a_star import AStar
    from itc.strategies.beam_search import BeamSearch
    from itc.strategies.best_of_n import BestOfN
    from itc.strategies.dvts import DVTS
    from itc.strategies.early_pruning import EarlyPruning
    from itc.strategies.generate import Generate
    from itc.strategies.particle_filtering import ParticleFiltering
    from itc.strategies.rpc import RPC
    from itc.strategies.self_consistency import EarlyStop, SelfConsistency
    from itc.strategies.stepwise import StepSearch
else:
    __getattr__ = lazy_exports("itc.strategies", _EXPORTS)
