"""Shared builders for quick (scripted-backend) tests."""

from __future__ import annotations

from itc.backends.scripted import Script, ScriptedBackend
from itc.runtime.budget import Ledger
from itc.runtime.context import NodeContext, Runtime
from itc.runtime.trace import Trace
from itc.types import Budget, Problem

PROBLEM = Problem(id="p1", prompt="What is two plus two ?", answer="4")


def answers(*texts: str) -> Script:
    """A script that returns texts[i] for the i-th sample of each request, in order."""
    counter = iter(range(10**9))

    def script(request, index):  # type: ignore[no-untyped-def]
        return texts[next(counter) % len(texts)]

    return script


def context(
    backend: ScriptedBackend, budget: Budget | None = None, max_in_flight: int = 8
) -> NodeContext:
    runtime = Runtime(backend=backend, max_in_flight=max_in_flight)
    return NodeContext(PROBLEM, runtime, Ledger(budget or Budget()), Trace(problem_id="p1"))
