"""Running a plan: one task per line, each awaiting the tasks of the lines it uses.

A line starts the moment it is accepted (while the plan still streams) and runs as soon as
the last line it uses is done: it waits on those tasks themselves (`asyncio.wait`, woken by
their completion), never polls. Nothing is fire-and-forget: the executor owns every task,
awaits them all, and cancels whatever is left when it is closed (the node cancelled, a plan
thrown away), so no task outlives it.

A failed call is an observation, not a crash. A line that uses a failed line does not run:
it is observed as skipped, naming the line that failed (its arguments would be made of an
error, and the joiner learns more from "not run: $2 failed" than from a second failure). A
call the budget refuses is an observation too (`refused`); the plan goes on to the joiner.
"""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict

from itc.runtime.budget import BudgetExhausted
from itc.runtime.tools import ToolResult
from itc.strategies.tool_dag.check import Call
from itc.strategies.tool_dag.plan import Ref, Template

CallTool = Callable[[str, Mapping[str, Any]], Awaitable[ToolResult]]
"""`NodeContext.call_tool`: admitted against the budget, traced."""


class Observation(BaseModel):
    """What one plan line gave. Times are seconds since the node started."""

    model_config = ConfigDict(frozen=True)

    step: int
    tool: str
    ok: bool
    value: Any = None
    error: str | None = None
    status: str = "ok"
    """ok, error (the tool failed), skipped (a line it uses failed) or refused (budget)."""
    arguments: dict[str, Any] | None = None
    """The arguments as sent, references resolved (None when it did not run)."""
    started: float | None = None
    finished: float = 0.0

    def shown(self, max_chars: int = 400) -> str:
        """The result as the joiner reads it."""
        if self.ok:
            return as_text(self.value)[:max_chars]
        return f"{self.status}: {self.error or ''}"[:max_chars]


def as_text(value: Any) -> str:
    """A result as text inside a string: a string as it is, anything else as JSON."""
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        return str(value)


def resolve(value: Any, results: Mapping[int, Any]) -> Any:
    """An argument with its references replaced: a whole reference by the result itself
    (its own type; a copy, so one tool cannot change what another sees), one inside a
    string by the result's text."""
    if isinstance(value, Ref):
        return copy.deepcopy(results[value.step])
    if isinstance(value, Template):
        return "".join(p if isinstance(p, str) else as_text(results[p.step]) for p in value.parts)
    if isinstance(value, list):
        return [resolve(item, results) for item in value]
    if isinstance(value, dict):
        return {key: resolve(item, results) for key, item in value.items()}
    return value


class Executor:
    """Runs accepted calls as tasks: `start` each call, `finish` to wait for all of them,
    `cancel` to drop them; use it as an async context manager so all are gone at the end."""

    def __init__(self, call_tool: CallTool, clock: Callable[[], float]) -> None:
        self._call_tool = call_tool
        self._clock = clock
        self._tasks: dict[int, asyncio.Task[Observation]] = {}

    async def __aenter__(self) -> Executor:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.cancel()

    @property
    def started(self) -> int:
        return len(self._tasks)

    def start(self, call: Call) -> None:
        """Start the call's task now; it runs once the lines it uses are done (each of them
        must have been started before it: a checked plan only refers upward)."""
        if call.number in self._tasks:
            raise ValueError(f"line {call.number} was started already")
        needs = {ref: self._tasks[ref] for ref in call.refs}
        self._tasks[call.number] = asyncio.create_task(
            self._run(call, needs), name=f"plan line {call.number}: {call.tool}"
        )

    async def finish(self) -> dict[int, Observation]:
        """Every started call's observation, once all are done."""
        if self._tasks:
            await asyncio.wait(self._tasks.values())
        return {number: task.result() for number, task in sorted(self._tasks.items())}

    async def cancel(self) -> None:
        """Cancel what still runs and wait until it has stopped."""
        tasks = list(self._tasks.values())
        self._tasks = {}
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)

    async def _run(self, call: Call, needs: dict[int, asyncio.Task[Observation]]) -> Observation:
        if needs:
            await asyncio.wait(needs.values())  # woken when the last of them is done
        used = {ref: task.result() for ref, task in needs.items()}
        failed = [o for o in used.values() if not o.ok]
        if failed:
            return Observation(
                step=call.number,
                tool=call.tool,
                ok=False,
                status="skipped",
                error=f"not run: ${failed[0].step} failed",
                finished=self._clock(),
            )
        arguments = {
            k: resolve(v, {r: o.value for r, o in used.items()}) for k, v in call.arguments.items()
        }
        started = self._clock()
        outcome: dict[str, Any]
        try:
            result = await self._call_tool(call.tool, arguments)
        except BudgetExhausted as refusal:
            outcome = {"ok": False, "status": "refused", "error": str(refusal)}
        except Exception as failure:  # a caller that breaks its contract is still observed
            reason = f"{type(failure).__name__}: {failure}"
            outcome = {"ok": False, "status": "error", "error": reason}
        else:
            outcome = result.model_dump(include={"ok", "value", "error"})
            outcome["status"] = "ok" if result.ok else "error"
        return Observation(
            step=call.number,
            tool=call.tool,
            arguments=arguments,
            started=started,
            finished=self._clock(),
            **outcome,
        )
