"""Per-problem traces: one event per LLM call, attributed to the node path that made it."""

from __future__ import annotations

from collections import defaultdict
from typing import Literal

from pydantic import BaseModel, Field

CallStatus = Literal["ok", "clipped", "cancelled", "refused", "error"]


class CallEvent(BaseModel):
    node: str
    status: CallStatus
    n: int = 1
    max_tokens: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    started: float = 0.0
    latency: float = 0.0
    finish_reasons: list[str | None] = Field(default_factory=list)
    detail: str | None = None


class NodeSummary(BaseModel):
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency: float = 0.0
    cancelled: int = 0
    refused: int = 0


class Trace(BaseModel):
    problem_id: str
    events: list[CallEvent] = Field(default_factory=list)

    def record(self, event: CallEvent) -> None:
        self.events.append(event)

    def by_node(self) -> dict[str, NodeSummary]:
        """Totals per node path, a parent path including its children's calls."""
        totals: dict[str, NodeSummary] = defaultdict(NodeSummary)
        for event in self.events:
            parts = event.node.split("/")
            for depth in range(1, len(parts) + 1):
                summary = totals["/".join(parts[:depth])]
                if event.status == "refused":
                    summary.refused += 1
                    continue
                summary.calls += 1
                summary.prompt_tokens += event.prompt_tokens
                summary.completion_tokens += event.completion_tokens
                summary.latency += event.latency
                summary.cancelled += event.status == "cancelled"
        return dict(sorted(totals.items()))
