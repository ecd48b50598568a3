"""Per-problem traces: one event per LLM or tool call, attributed to the node path that
made it."""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Literal

from pydantic import BaseModel, Field, SerializerFunctionWrapHandler, model_serializer

from itc.types import omit_defaults

CallStatus = Literal["ok", "clipped", "cancelled", "refused", "error"]


class SampleLog(BaseModel):
    """One sampled choice, kept when samples are logged."""

    text: str
    completion_tokens: int
    finish_reason: str | None = None


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
    limit: str | None = None
    """The budget limit that refused or clipped the call, if one did."""
    reward: bool = False
    """A reward model's call (a judge, a PRM)."""
    model: str | None = None
    """The named generator that answered (None: the run's own server)."""
    detail: str | None = None
    prompt: str | list[dict[str, str]] | None = None
    """The prompt sent (text or chat messages), when samples are logged."""
    samples: list[SampleLog] | None = None
    """Every choice the call returned, when samples are logged."""
    kind: Literal["llm", "tool"] = "llm"
    tool: str | None = None
    """The tool called (a tool event)."""
    arguments: dict[str, Any] | None = None
    """The tool's arguments as validated (None when they did not validate: see `detail`)."""
    output: Any = None
    """What the tool returned, when samples are logged."""

    @model_serializer(mode="wrap")
    def _tool_fields_only_for_tools(self, handler: SerializerFunctionWrapHandler) -> Any:
        # An LLM call's event is written as before tools existed.
        return omit_defaults(handler(self), self, ("kind", "tool", "arguments", "output"))


class CandidateLog(BaseModel):
    """A candidate as a node judged it (kept whether it won or not), when samples are logged."""

    node: str
    id: str
    answer: str | None = None
    scores: dict[str, float] = Field(default_factory=dict)
    kept: bool
    text: str


class PartialLog(BaseModel):
    """One partial solution as a search round left it."""

    id: str
    parent: str | None = None
    steps: int
    tokens: int
    """Generated tokens of all its steps."""
    reward: float | None = None
    """Its prefix score (the step rewards folded), when scored."""
    weight: float | None = None
    """Its share of the next round (resampling weight, or 1/width for kept beams)."""
    copies: int = 1
    """How many places it holds in the next round (0: dropped)."""
    finished: bool = False


class SearchRound(BaseModel):
    """One round of a step-level search: every partial it scored and which went on."""

    node: str
    round: int
    partials: list[PartialLog] = Field(default_factory=list)
    note: str | None = None
    """What the round did besides (resampled, skipped resampling at ESS 6.1, ...)."""


class NodeSummary(BaseModel):
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency: float = 0.0
    """Sum of the node's call latencies: calls overlap, so this exceeds the time it took."""
    wall_time: float = 0.0
    """From the node's first call starting to its last call ending."""
    cancelled: int = 0
    refused: int = 0
    reward_calls: int = 0
    tool_calls: int = 0
    """Tool calls, apart from `calls` (LLM requests); their latencies count in `latency` and
    `wall_time` too."""

    @model_serializer(mode="wrap")
    def _no_tools_unwritten(self, handler: SerializerFunctionWrapHandler) -> Any:
        return omit_defaults(handler(self), self, ("tool_calls",))


class Trace(BaseModel):
    problem_id: str
    events: list[CallEvent] = Field(default_factory=list)
    candidates: list[CandidateLog] = Field(default_factory=list)
    """Every candidate a ranking or voting node saw, winners and losers (`--log-samples`)."""
    search: list[SearchRound] = Field(default_factory=list)
    """Rounds of step-level searches: partials, rewards, weights, survivors."""

    def record(self, event: CallEvent) -> None:
        self.events.append(event)

    def by_node(self) -> dict[str, NodeSummary]:
        """Totals per node path, a parent path including its children's calls."""
        totals: dict[str, NodeSummary] = defaultdict(NodeSummary)
        spans: dict[str, tuple[float, float]] = {}
        for event in self.events:
            parts = event.node.split("/")
            for depth in range(1, len(parts) + 1):
                path = "/".join(parts[:depth])
                summary = totals[path]
                if event.status == "refused":
                    summary.refused += 1
                    continue
                if event.kind == "tool":
                    summary.tool_calls += 1
                else:
                    summary.calls += 1
                    summary.reward_calls += event.reward
                    summary.prompt_tokens += event.prompt_tokens
                    summary.completion_tokens += event.completion_tokens
                    summary.cancelled += event.status == "cancelled"
                summary.latency += event.latency
                first, last = spans.get(path, (event.started, event.started))
                spans[path] = (min(first, event.started), max(last, event.started + event.latency))
        for path, (first, last) in spans.items():
            totals[path].wall_time = last - first
        return dict(sorted(totals.items()))
