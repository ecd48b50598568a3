"""itc: inference-time compute strategies as composable nodes, run by an async planner."""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

# Public names, imported lazily so that `import itc.types` stays light and cycle-free.
_EXPORTS = {
    "Budget": "itc.types",
    "Candidate": "itc.types",
    "Message": "itc.types",
    "Problem": "itc.types",
    "Usage": "itc.types",
    "PipelineConfig": "itc.config",
    "load_pipeline": "itc.config",
    "parse_pipeline": "itc.config",
    "Planner": "itc.planner.executor",
    "ProblemResult": "itc.planner.executor",
    "Runtime": "itc.planner.context",
    "NodeContext": "itc.planner.context",
    "BudgetExhausted": "itc.planner.budget",
    "VLLMBackend": "itc.backends.vllm",
    "connect": "itc.session",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'itc' has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name]), name)
