"""The built-in components, listed once for the default registry."""

from __future__ import annotations

from itc.strategies.base import Component
from itc.strategies.best_of_n import BestOfN
from itc.strategies.generate import Generate
from itc.strategies.self_consistency import SelfConsistency
from itc.verifiers.judge import LLMJudge
from itc.verifiers.self_certainty import SelfCertainty

BUILTIN_COMPONENTS: tuple[type[Component], ...] = (
    Generate,
    BestOfN,
    SelfConsistency,
    LLMJudge,
    SelfCertainty,
)
