"""Which built-in tools a pipeline has, as data (the `tools:` section of a pipeline file).

```yaml
tools:
  calculator: {}
  python: {time_limit: 2, memory_mb: 128}
  document_search: {path: docs/, top_k: 3, latency: 0.5}
```

Each entry is a built-in with its options; `name` renames the tool (plans call it by that
name), `latency` adds a fixed simulated delay to every call (benchmarks of tool-use
latency), `timeout` fails a call that runs longer. `calculator: true` is short for
`calculator: {}`. The planner builds the tools once per pipeline and adds them to the run's.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from itc.runtime.tools import Tool, ToolRegistry
from itc.tools.calculator import calculator_tool
from itc.tools.document_search import document_search_tool
from itc.tools.python_runner import python_tool


class ToolOptions(BaseModel):
    """What every built-in accepts."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str | None = Field(
        default=None, description="The name plans call it by (default: the built-in's)."
    )
    latency: float = Field(default=0.0, ge=0, description="Simulated seconds before each call.")
    timeout: float | None = Field(
        default=None, gt=0, description="Seconds after which a call fails (none by default)."
    )

    @field_validator("name")
    @classmethod
    def _callable_name(cls, name: str | None) -> str | None:
        if name is not None and not name.isidentifier():
            raise ValueError(f"{name!r} is not an identifier (plans call tools by name)")
        return name

    def _finish(self, built: Tool) -> Tool:
        return replace(built, timeout=self.timeout)


class CalculatorOptions(ToolOptions):
    """Exact arithmetic from an expression (`itc.tools.calculator`)."""

    def build(self) -> Tool:
        return self._finish(calculator_tool(self.name or "calculator", latency=self.latency))


class PythonOptions(ToolOptions):
    """Python run in a subprocess, answering with what it printed."""

    time_limit: float = Field(default=5.0, gt=0, le=600, description="Wall seconds per run.")
    memory_mb: int = Field(default=256, ge=32, description="Address-space limit of a run.")
    max_output_chars: int = Field(default=4000, ge=1, description="Printed text kept.")
    concurrency: int = Field(default=2, ge=1, description="Runs at once (each a process).")

    def build(self) -> Tool:
        return self._finish(
            python_tool(
                self.name or "python",
                time_limit=self.time_limit,
                memory_mb=self.memory_mb,
                max_output_chars=self.max_output_chars,
                concurrency=self.concurrency,
                latency=self.latency,
            )
        )


class DocumentSearchOptions(ToolOptions):
    """BM25 search over a local collection: a folder of .txt/.md files or a JSON/JSONL file."""

    path: Path = Field(description="The collection (relative paths: from the working folder).")
    top_k: int = Field(default=3, ge=1, le=50, description="Passages per answer.")
    passage_chars: int = Field(default=1200, ge=100, description="Longest passage returned.")

    def build(self) -> Tool:
        return self._finish(
            document_search_tool(
                self.path,
                self.name or "document_search",
                top_k=self.top_k,
                passage_chars=self.passage_chars,
                latency=self.latency,
            )
        )


class ToolsConfig(BaseModel):
    """The built-in tools to give a pipeline, each with its options (absent: not given)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    calculator: CalculatorOptions | None = Field(default=None, description="Exact arithmetic.")
    python: PythonOptions | None = Field(default=None, description="Sandboxed Python.")
    document_search: DocumentSearchOptions | None = Field(
        default=None, description="Search over a local document collection."
    )

    @field_validator("calculator", "python", "document_search", mode="before")
    @classmethod
    def _true_means_defaults(cls, value: Any) -> Any:
        if value is True:
            return {}
        return None if value is False else value

    def build(self) -> ToolRegistry:
        """The configured tools (a document collection is read now; a missing one is a
        ValueError)."""
        chosen = (self.calculator, self.python, self.document_search)
        return ToolRegistry(options.build() for options in chosen if options is not None)
