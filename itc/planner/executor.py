"""Runs a pipeline graph over many problems at once.

Problems run concurrently; inside a problem, every node starts as soon as its parents are
done, so independent branches overlap. All LLM calls share the runtime's in-flight limit.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable

import networkx as nx
from pydantic import BaseModel, Field

from itc.config import PipelineConfig
from itc.nodes import from_parent
from itc.runtime.budget import BudgetExhausted, Ledger
from itc.runtime.context import NodeContext, Runtime
from itc.runtime.tools import ToolRegistry
from itc.runtime.trace import Trace
from itc.types import Budget, Candidate, Problem, Usage


class ProblemResult(BaseModel):
    problem_id: str
    answer: str | None
    text: str | None
    candidates: list[Candidate] = Field(default_factory=list)
    usage: Usage
    budget_exhausted: str | None = None
    """The budget limit that refused or clipped a call, even when the pipeline still
    answered with what fit (so a thinner answer never passes for a full one)."""
    refused_calls: int = 0
    clipped_calls: int = 0
    error: str | None = None
    trace: Trace


class Planner:
    """Owns the runtime; `run` one problem or `run_many` with a result callback."""

    def __init__(self, runtime: Runtime, max_problems_in_flight: int = 16) -> None:
        self.runtime = runtime
        self.max_problems_in_flight = max_problems_in_flight
        self._with_tools: dict[str, Runtime] = {}

    def runtime_for(self, pipeline: PipelineConfig) -> Runtime:
        """The runtime a pipeline runs in: the planner's, plus the tools the pipeline names
        (built once per tools config, so a document collection is read once per run). A
        name both give, or a collection that cannot be read, is a ValueError."""
        if pipeline.tools is None:
            return self.runtime
        key = pipeline.tools.model_dump_json()
        if key not in self._with_tools:
            tools = ToolRegistry([*self.runtime.tools.values(), *pipeline.tools.build().values()])
            self._with_tools[key] = self.runtime.with_tools(tools)
        return self._with_tools[key]

    async def run(
        self, pipeline: PipelineConfig, problem: Problem, budget: Budget | None = None
    ) -> ProblemResult:
        ledger = Ledger(budget or pipeline.budget)
        trace = Trace(problem_id=problem.id)
        root = NodeContext(problem, self.runtime_for(pipeline), ledger, trace)
        started = time.monotonic()
        exhausted = error = None
        candidates: list[Candidate] = []
        try:
            candidates = await self._run_graph(pipeline, root)
        except BudgetExhausted as refusal:
            exhausted = refusal.limit
        except Exception as failure:  # one broken problem must not sink a whole run
            error = f"{type(failure).__name__}: {failure}"
        best = candidates[0] if candidates else None
        answer = pipeline.answer.read(best) if best is not None else None
        usage = ledger.spent.model_copy(update={"wall_time": time.monotonic() - started})
        limited = [e for e in trace.events if e.status in ("refused", "clipped") and e.limit]
        if exhausted is None and limited:
            exhausted = limited[0].limit
        return ProblemResult(
            problem_id=problem.id,
            answer=answer,
            text=best.text if best else None,
            candidates=candidates,
            usage=usage,
            budget_exhausted=exhausted,
            refused_calls=sum(e.status == "refused" for e in trace.events),
            clipped_calls=sum(e.status == "clipped" for e in trace.events),
            error=error,
            trace=trace,
        )

    async def _run_graph(self, pipeline: PipelineConfig, root: NodeContext) -> list[Candidate]:
        graph = pipeline.graph()
        outputs: dict[str, asyncio.Task[list[Candidate]]] = {}

        async def run_node(name: str) -> list[Candidate]:
            parents = list(graph.predecessors(name))
            batches = await asyncio.gather(*(outputs[p] for p in parents))
            # Each input says which parent passed it, so a node can group them (by_parent).
            inputs = [from_parent(c, p) for p, b in zip(parents, batches, strict=True) for c in b]
            wants = any(pipeline.nodes[c].wants_input_logprobs() for c in graph.successors(name))
            return await pipeline.nodes[name].run(root.child(name, wants_logprobs=wants), inputs)

        for name in nx.topological_sort(graph):
            outputs[name] = asyncio.create_task(run_node(name))
        try:
            # Every node is awaited, so a failing branch surfaces its own error, not a group.
            await asyncio.gather(*outputs.values())
        finally:
            for task in outputs.values():
                task.cancel()
            await asyncio.gather(*outputs.values(), return_exceptions=True)
        return outputs[pipeline.output_node].result()

    async def run_many(
        self,
        pipeline: PipelineConfig,
        problems: Iterable[Problem],
        budget: Budget | None = None,
        on_result: Callable[[ProblemResult], Awaitable[None] | None] | None = None,
    ) -> list[ProblemResult]:
        """Results in input order; `on_result` sees each as soon as it finishes."""
        self.runtime_for(pipeline)  # a tools config that cannot be built fails before any run
        gate = asyncio.Semaphore(self.max_problems_in_flight)

        async def one(problem: Problem) -> ProblemResult:
            async with gate:
                result = await self.run(pipeline, problem, budget)
            if on_result is not None:
                maybe = on_result(result)
                if maybe is not None:
                    await maybe
            return result

        return list(await asyncio.gather(*(one(p) for p in problems)))
