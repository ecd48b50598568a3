"""Strategy nodes, one per file."""

from __future__ import annotations

from typing import TYPE_CHECKING

from itc._lazy import lazy_exports

_EXPORTS = {
    "Strategy": "itc.nodes",
    "Generate": "itc.strategies.generate",
    "BestOfN": "itc.strategies.best_of_n",
    "ComputeOptimal": "itc.strategies.allocate",
    "SelfConsistency": "itc.strategies.self_consistency",
    "EarlyStop": "itc.strategies.self_consistency",
    "ParticleFiltering": "itc.strategies.particle_filtering",
    "StepSearch": "itc.strategies.stepwise",
    "RPC": "itc.strategies.rpc",
    "EarlyPruning": "itc.strategies.early_pruning",
    "AStar": "itc.strategies.a_star",
    "BeamSearch": "itc.strategies.beam_search",
    "DVTS": "itc.strategies.dvts",
    "Critic": "itc.strategies.critic",
    "Ranker": "itc.strategies.ranker",
    "Fuser": "itc.strategies.fuser",
    "Verify": "itc.strategies.verify_filter",
    "Refine": "itc.strategies.refine",
    "Ensemble": "itc.strategies.ensemble",
    "UnitTestFilter": "itc.strategies.unit_tests",
    "ToolDAG": "itc.strategies.tool_dag.node",
    "ToolRounds": "itc.strategies.tool_dag.rounds",
    "ToolReact": "itc.strategies.tool_dag.react",
}
__all__ = [
    "DVTS",
    "RPC",
    "AStar",
    "BeamSearch",
    "BestOfN",
    "ComputeOptimal",
    "Critic",
    "EarlyPruning",
    "EarlyStop",
    "Ensemble",
    "Fuser",
    "Generate",
    "ParticleFiltering",
    "Ranker",
    "Refine",
    "SelfConsistency",
    "StepSearch",
    "Strategy",
    "ToolDAG",
    "ToolReact",
    "ToolRounds",
    "UnitTestFilter",
    "Verify",
]

if TYPE_CHECKING:
    from itc.nodes import Strategy
    from itc.strategies.a_star import AStar
    from itc.strategies.allocate import ComputeOptimal
    from itc.strategies.beam_search import BeamSearch
    from itc.strategies.best_of_n import BestOfN
    from itc.strategies.critic import Critic
    from itc.strategies.dvts import DVTS
    from itc.strategies.early_pruning import EarlyPruning
    from itc.strategies.ensemble import Ensemble
    from itc.strategies.fuser import Fuser
    from itc.strategies.generate import Generate
    from itc.strategies.particle_filtering import ParticleFiltering
    from itc.strategies.ranker import Ranker
    from itc.strategies.refine import Refine
    from itc.strategies.rpc import RPC
    from itc.strategies.self_consistency import EarlyStop, SelfConsistency
    from itc.strategies.stepwise import StepSearch
    from itc.strategies.tool_dag.node import ToolDAG
    from itc.strategies.tool_dag.react import ToolReact
    from itc.strategies.tool_dag.rounds import ToolRounds
    from itc.strategies.unit_tests import UnitTestFilter
    from itc.strategies.verify_filter import Verify
else:
    __getattr__ = lazy_exports("itc.strategies", _EXPORTS)
