"""The sequential baseline (ReAct): one tool call a turn, its result shown to the next turn.
The tool DAG and round-based nodes are measured against it: same tools, same call syntax,
same budget, but no call starts before the one before it has answered."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Literal

from pydantic import Field

from itc.backends.base import GenerationRequest
from itc.nodes import CostBound
from itc.runtime.context import NodeContext
from itc.runtime.tools import Tool
from itc.strategies.tool_dag.base import Clock, PlanRun, ToolUser
from itc.strategies.tool_dag.check import Call, PlanChecker
from itc.strategies.tool_dag.execute import Executor
from itc.strategies.tool_dag.grammar import action_grammar
from itc.strategies.tool_dag.join import Decision
from itc.strategies.tool_dag.plan import ACTION, ANSWER, PlanError, parse_step
from itc.strategies.tool_dag.prompts import REACT_TEMPLATE, example_call
from itc.types import Candidate

_CALL = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\s*\(.*\)", re.DOTALL)


def turn_line(text: str) -> str:
    """The line of a turn that counts: the first that starts with `Action:` or `Answer:`
    (an unconstrained model may think aloud first), else the first."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return next((x for x in lines if x.startswith((ACTION, ANSWER))), lines[0] if lines else "")


def read_turn(text: str, tools: Mapping[str, Tool]) -> Call | str:
    """A turn's checked call (numbered 1, its text as written), or its answer; PlanError
    says what is wrong with the line (its `problem` is what the next turn is shown)."""
    line = turn_line(text)
    if line.startswith(ANSWER):
        return line[len(ANSWER) :].strip()
    written = line.removeprefix(ACTION).strip()
    if _CALL.fullmatch(written) is None:
        raise PlanError(1, written, f"expected `{ACTION} tool(arguments)` or `{ANSWER} ...`")
    try:
        step = parse_step(f"1. {written}", 1)
        assert step is not None
        if step.refs:
            raise PlanError(1, written, "a turn cannot use $N: write the value it stands for")
        call = PlanChecker(tools, references=False, max_calls=1).add(step)
    except PlanError as error:
        raise PlanError(1, written, error.problem) from None
    if call is None:  # `join()`
        raise PlanError(1, written, f"expected `{ACTION} tool(arguments)` or `{ANSWER} ...`")
    return dataclasses.replace(call, text=written)


class ToolReact(ToolUser):
    """Answers with tools one call at a time (ReAct): each turn the LLM writes one tool
    call (`Action: tool(args)`, decoded with a grammar of the run's tools, the plan lines'
    argument syntax without references) or an answer (`Answer: ...`; not in the first turn,
    which calls a tool as the other tool nodes' plans do); the call runs and its result is
    shown to the next turn as an observation. After `max_turns` turns a last call
    must answer. A turn that cannot run (possible only unconstrained) and a failed call are
    observations too. A tool call the budget refuses ends the turns: the last call answers
    with what was found.

    The answer's metadata keeps every turn as a one-call plan, with its result and timings
    (`tool_react.plans`), so it reads like the other tool nodes' records. `max_calls` and
    `stream` do not apply: a turn is one call, which starts when the turn is written.
    """

    type: Literal["tool_react"] = "tool_react"
    max_turns: int = Field(default=4, ge=1, le=30, description="Most turns (tool calls).")
    template: str = Field(
        default=REACT_TEMPLATE,
        description="Each turn's request: {tools}, {example}, {question}, {context} (the "
        "actions and observations so far).",
    )

    def worst_case(self, inputs: int | None = 0) -> CostBound:
        return self.calls_bound(self.max_turns)

    def plan_tokens(self) -> int:
        """Tokens one turn may take: a call whose string argument is at its longest (as for
        a plan line) or a whole answer line."""
        if self.max_tokens is not None:
            return self.max_tokens
        return max(2 * self.max_string_chars + 48, self.answer_chars + 8)

    async def run(self, ctx: NodeContext, inputs: list[Candidate]) -> list[Candidate]:
        tools = self.registry(ctx)
        clock = Clock()
        turns: list[PlanRun] = []
        for number in range(1, self.max_turns + 1):
            grammar = None
            if self.constrained:  # the first turn calls a tool, as the other nodes' plans do
                answers = self.answer_chars if number > 1 else 0
                grammar = action_grammar(
                    tools, max_string_chars=self.max_string_chars, answer_chars=answers
                )
            content = self.template.format(
                tools=tools.describe(),
                example=example_call(tools),
                question=ctx.problem.question,
                context=self._context(turns),
            )
            request = self.request(ctx, content, grammar, self.plan_tokens())
            if grammar is None:  # the model must not write the observation itself
                request = request.model_copy(update={"stop": ("\nObservation",)})
            turn = await self._turn(ctx, number, request, tools, clock)
            turns.append(turn)
            if turn.answer is not None:
                return [self.answer(ctx, Decision(answer=turn.answer), turns, clock)]
            if any(o.status == "refused" for o in turn.observations):
                break
        decision = await self.ask_joiner(
            ctx.child("answer"), self._context(turns).strip(), replan=False
        )
        return [self.answer(ctx, decision, turns, clock)]

    async def _turn(
        self,
        ctx: NodeContext,
        number: int,
        request: GenerationRequest,
        tools: Mapping[str, Tool],
        clock: Clock,
    ) -> PlanRun:
        """One turn: the LLM's call (traced as `turnN`), then its tool call (as `tools`)."""
        record = PlanRun(started=clock())
        result = await ctx.child(f"turn{number}").generate(request)
        record.text = result.choices[0].text
        record.plan_done = clock()
        try:
            read = read_turn(record.text, tools)
        except PlanError as error:
            record.error = error.problem
            record.finished = clock()
            return record
        if isinstance(read, str):
            record.answer = read
            record.finished = clock()
            return record
        call = dataclasses.replace(read, number=number)
        record.calls.append(call.text)
        async with Executor(ctx.child("tools").call_tool, clock) as executor:
            record.first_call = clock()
            executor.start(call)
            record.observations = list((await executor.finish()).values())
        record.finished = clock()
        return record

    def _context(self, turns: list[PlanRun]) -> str:
        """Each turn as `Action: call` then `Observation: result` (or what was wrong)."""
        lines = []
        for turn in turns:
            written = turn.calls[0] if turn.calls else turn_line(turn.text)
            lines.append(f"{ACTION} {written.removeprefix(ACTION).strip()}")
            if turn.observations:
                shown = turn.observations[0].shown(self.max_observation_chars)
            else:
                shown = f"error: {turn.error}"
            lines.append(f"Observation: {shown}")
        return "".join(line + "\n" for line in lines)
