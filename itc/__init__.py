"""itc: inference-time compute strategies as composable nodes, run by an async planner.

The public API, importable from here: values (`Problem`, `Candidate`, `Budget`, `Usage`),
the node contract to extend (`Strategy`, `Scorer`, `Answer`, `Component`), pipelines as data
(`PipelineConfig`, `Registry`), running them (`connect`, `Runtime`, `Planner`), what a
custom strategy asks the runtime for (`NodeContext`, `GenerationRequest`), and tools it may
call (`tool`, `Tool`, `ToolRegistry`, `ToolResult`, `ToolsConfig`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from itc._lazy import lazy_exports

__version__ = "0.1.0"

# Public names, imported lazily so that `import itc.types` stays light and cycle-free; the
# block below tells type checkers and editors what each one is.
_EXPORTS = {
    "Budget": "itc.types",
    "Candidate": "itc.types",
    "Message": "itc.types",
    "Problem": "itc.types",
    "Usage": "itc.types",
    "GenerationRequest": "itc.backends.base",
    "GenerationResult": "itc.backends.base",
    "BackendError": "itc.backends.base",
    "VLLMBackend": "itc.backends.vllm",
    "connect": "itc.backends.connect",
    "BudgetExhausted": "itc.runtime.budget",
    "NodeContext": "itc.runtime.context",
    "Runtime": "itc.runtime.context",
    "Grader": "itc.runtime.context",
    "Tool": "itc.runtime.tools",
    "ToolRegistry": "itc.runtime.tools",
    "ToolResult": "itc.runtime.tools",
    "tool": "itc.runtime.tools",
    "ToolsConfig": "itc.tools.config",
    "Component": "itc.nodes",
    "Strategy": "itc.nodes",
    "Aggregator": "itc.nodes",
    "Scorer": "itc.nodes",
    "Answer": "itc.nodes",
    "StrategyNode": "itc.nodes",
    "ScorerNode": "itc.nodes",
    "AnswerNode": "itc.nodes",
    "PipelineConfig": "itc.config",
    "Registry": "itc.config",
    "ConfigError": "itc.config",
    "PluginWarning": "itc.config",
    "load_pipeline": "itc.config",
    "parse_pipeline": "itc.config",
    "save_pipeline": "itc.config",
    "Planner": "itc.planner.executor",
    "ProblemResult": "itc.planner.executor",
}
__all__ = [
    "Aggregator",
    "Answer",
    "AnswerNode",
    "BackendError",
    "Budget",
    "BudgetExhausted",
    "Candidate",
    "Component",
    "ConfigError",
    "GenerationRequest",
    "GenerationResult",
    "Grader",
    "Message",
    "NodeContext",
    "PipelineConfig",
    "Planner",
    "PluginWarning",
    "Problem",
    "ProblemResult",
    "Registry",
    "Runtime",
    "Scorer",
    "ScorerNode",
    "Strategy",
    "StrategyNode",
    "Tool",
    "ToolRegistry",
    "ToolResult",
    "ToolsConfig",
    "Usage",
    "VLLMBackend",
    "__version__",
    "connect",
    "load_pipeline",
    "parse_pipeline",
    "save_pipeline",
    "tool",
]

if TYPE_CHECKING:
    from itc.backends.base import BackendError, GenerationRequest, GenerationResult
    from itc.backends.connect import connect
    from itc.backends.vllm import VLLMBackend
    from itc.config import (
        ConfigError,
        PipelineConfig,
        PluginWarning,
        Registry,
        load_pipeline,
        parse_pipeline,
        save_pipeline,
    )
    from itc.nodes import (
        Aggregator,
        Answer,
        AnswerNode,
        Component,
        Scorer,
        ScorerNode,
        Strategy,
        StrategyNode,
    )
    from itc.planner.executor import Planner, ProblemResult
    from itc.runtime.budget import BudgetExhausted
    from itc.runtime.context import Grader, NodeContext, Runtime
    from itc.runtime.tools import Tool, ToolRegistry, ToolResult, tool
    from itc.tools.config import ToolsConfig
    from itc.types import Budget, Candidate, Message, Problem, Usage
else:
    __getattr__ = lazy_exports("itc", _EXPORTS)
