"""itc: inference-time compute strategies as composable nodes, run by an async planner."""

from __future__ import annotations

from itc._lazy import lazy_exports

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
    "Runtime": "itc.runtime.context",
    "NodeContext": "itc.runtime.context",
    "BudgetExhausted": "itc.runtime.budget",
    "VLLMBackend": "itc.backends.vllm",
    "connect": "itc.backends.connect",
}
__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports("itc", _EXPORTS)
