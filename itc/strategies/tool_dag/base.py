"""What both tool nodes share: which tools they use, how a plan is asked for, streamed,
checked and run, and the record of a plan kept in the answer's metadata."""

from __future__ import annotations

import contextlib
import time
from typing import Any, ClassVar

from pydantic import BaseModel, Field

from itc.backends.base import GenerationRequest, StructuredOutputs
from itc.nodes import CostBound
from itc.runtime.context import NodeContext
from itc.runtime.tools import ToolRegistry
from itc.strategies.prompting import Templated
from itc.strategies.tool_dag.check import PlanChecker, check_plan
from itc.strategies.tool_dag.execute import Executor, Observation
from itc.strategies.tool_dag.grammar import decision_grammar, plan_grammar
from itc.strategies.tool_dag.join import Decision, parse_decision
from itc.strategies.tool_dag.plan import PlanError, PlanParser
from itc.strategies.tool_dag.prompts import JOIN_TEMPLATE, REPLAN
from itc.types import Candidate, Message


class Clock:
    """Seconds since a node started: every time in a plan's record is on it."""

    def __init__(self) -> None:
        self.origin = time.monotonic()

    def __call__(self) -> float:
        return round(time.monotonic() - self.origin, 6)


class PlanRun(BaseModel):
    """One plan (or round) as it went: its text, the calls accepted, what each gave."""

    text: str = ""
    calls: list[str] = Field(default_factory=list)
    observations: list[Observation] = Field(default_factory=list)
    error: str | None = None
    """Why the plan could not run whole (its valid lines before the problem may have)."""
    answer: str | None = None
    """An answer given instead of calls (round-based mode)."""
    replan: str | None = None
    """What the joiner said was missing, when it asked for a new plan after this one."""
    started: float = 0.0
    first_call: float | None = None
    """When the first call was accepted (and its task started)."""
    plan_done: float | None = None
    """When the plan's text was complete."""
    finished: float = 0.0


class ToolUser(Templated):
    """Fields and plumbing of the tool nodes. A subclass gives `template` (its request for
    a plan) its default; a loaded template may use the `placeholders`."""

    placeholders: ClassVar[tuple[str, ...]] = ("tools", "example", "context", "question")

    use_tools: tuple[str, ...] = Field(
        default=(), description="Which of the run's tools to use (empty: all of them)."
    )
    max_calls: int = Field(default=4, ge=1, le=30, description="Most calls in one plan.")
    max_tokens: int | None = Field(
        default=None,
        ge=16,
        description="Most tokens of one plan (default: room for `max_calls` calls whose "
        "arguments are at their longest).",
    )
    answer_tokens: int = Field(default=128, ge=8, description="Most tokens of an answer.")
    answer_chars: int = Field(default=200, ge=10, description="Longest answer line.")
    max_string_chars: int = Field(
        default=60, ge=1, le=2000, description="Longest string argument the grammar allows."
    )
    temperature: float = Field(default=0.0, ge=0.0, description="Sampling temperature.")
    seed: int | None = Field(
        default=0, description="Base seed; each rollout gets its own (null: unseeded, uncached)."
    )
    constrained: bool = Field(
        default=True,
        description="Decode with a grammar of the tools (off: for servers without grammars).",
    )
    stream: bool = Field(
        default=True, description="Start each call as soon as its line is written."
    )
    max_observation_chars: int = Field(
        default=400, ge=20, description="Each result is cut to this many characters."
    )

    def max_outputs(self) -> int:
        return 1

    def plan_tokens(self) -> int:
        """Tokens one plan may take. By default enough for the longest plan the grammar
        allows when each call has one string argument and scalars besides (a character is
        at most one token, as for ASCII text in byte-level tokenizers; a reference in a
        string at most two), so a constrained plan of such tools is never cut short."""
        if self.max_tokens is not None:
            return self.max_tokens
        return self.max_calls * (2 * self.max_string_chars + 40) + 16

    def calls_bound(self, plans: int) -> CostBound:
        """The worst case of `plans` plan calls (turns, rounds) then one answering call."""
        return CostBound(
            completion_tokens=plans * self.plan_tokens() + self.answer_tokens, calls=plans + 1
        )

    def registry(self, ctx: NodeContext) -> ToolRegistry:
        known = ctx.runtime.tools
        if not self.use_tools:
            if not known:
                raise ValueError(f"{self.type}: the run has no tools (give the pipeline some)")
            return known
        return ToolRegistry(known[name] for name in self.use_tools)

    def request(
        self, ctx: NodeContext, content: str, grammar: str | None, max_tokens: int
    ) -> GenerationRequest:
        messages = (Message(role="user", content=content),)
        if self.system is not None:
            messages = (Message(role="system", content=self.system), *messages)
        return GenerationRequest(
            messages=messages,
            max_tokens=max_tokens,
            temperature=self.temperature,
            seed=ctx.seed_for(self.seed),
            structured_outputs=None if grammar is None else StructuredOutputs(grammar=grammar),
        )

    def plan_constraint(self, tools: ToolRegistry, references: bool, answers: bool) -> str | None:
        if not self.constrained:
            return None
        return plan_grammar(
            tools,
            max_calls=self.max_calls,
            references=references,
            max_string_chars=self.max_string_chars,
            answer_chars=self.answer_chars if answers else 0,
        )

    def answer_constraint(self, replan: bool) -> str | None:
        return decision_grammar(replan, self.answer_chars) if self.constrained else None

    async def run_plan(
        self,
        ctx: NodeContext,
        stage: str,
        request: GenerationRequest,
        tools: ToolRegistry,
        clock: Clock,
        *,
        references: bool,
        keep_valid_lines: bool,
        answers: bool = False,
    ) -> PlanRun:
        """Ask for a plan (the call traced as `stage`, the tools as `tools`) and run it:
        streamed, each line starts as soon as it is complete and checked; else checked
        whole, then started at once. A plan that fails a check stops there: its started
        calls are cancelled, unless `keep_valid_lines`, when they run to the end and the
        error is recorded beside their results."""
        record = PlanRun(started=clock())
        tools_ctx, ctx = ctx.child("tools"), ctx.child(stage)
        parser = PlanParser(answers=answers)
        checker = PlanChecker(tools, references=references, max_calls=self.max_calls)
        async with Executor(tools_ctx.call_tool, clock) as executor:

            def accept(steps: list[Any]) -> None:
                for step in steps:
                    call = checker.add(step)
                    if call is not None:
                        executor.start(call)
                        record.calls.append(call.text)
                        if record.first_call is None:
                            record.first_call = clock()

            try:
                if self.stream:
                    async with ctx.stream(request) as stream:
                        attempt = 1
                        async for delta in stream:
                            if delta.attempt != attempt:  # the backend retried: start over
                                attempt = delta.attempt
                                await executor.cancel()
                                parser = PlanParser(answers=answers)
                                checker = PlanChecker(
                                    tools, references=references, max_calls=self.max_calls
                                )
                                record.calls.clear()
                            accept(parser.feed(delta.text))
                            if parser.done:
                                break
                    accept(parser.close())
                else:
                    result = await ctx.generate(request)
                    record.plan_done = clock()  # complete before any line is accepted
                    try:
                        parser.feed(result.choices[0].text)
                        parser.close()
                        _, problems = check_plan(parser.steps, tools, references=references)
                        if problems and parser.answer is None:
                            raise PlanError.several(problems)
                    except PlanError:
                        if keep_valid_lines:
                            with contextlib.suppress(PlanError):
                                accept(parser.steps)  # up to the first bad line
                        raise
                    accept(parser.steps)
                record.plan_done = record.plan_done or clock()
                record.text = parser.text
                record.answer = parser.answer
                if parser.answer is None:
                    checker.finish()
            except PlanError as error:
                record.plan_done = record.plan_done or clock()
                record.text = parser.text
                record.error = str(error)
                if not keep_valid_lines:
                    await executor.cancel()
            record.observations = list((await executor.finish()).values())
        record.finished = clock()
        return record

    async def ask_joiner(
        self, ctx: NodeContext, context: str, replan: bool, template: str = JOIN_TEMPLATE
    ) -> Decision:
        """The joiner's call: an answer given `context` (the plan and its results); with
        `replan` it may ask for a new plan instead."""
        content = template.format(
            question=ctx.problem.question, context=context, replan=REPLAN if replan else ""
        )
        request = self.request(ctx, content, self.answer_constraint(replan), self.answer_tokens)
        result = await ctx.generate(request)
        choice = result.choices[0]
        return parse_decision(choice.text, replan).model_copy(
            update={
                "prompt_tokens": result.prompt_tokens,
                "completion_tokens": choice.completion_tokens,
                "finish_reason": choice.finish_reason,
            }
        )

    def answer(
        self, ctx: NodeContext, decision: Decision, runs: list[PlanRun], clock: Clock
    ) -> Candidate:
        """The node's one candidate: the answer, with every plan (or round), its results
        and their timings in `metadata[self.type]`."""
        record: dict[str, Any] = {
            "plans": [run.model_dump(mode="json") for run in runs],
            "answered": clock(),
            "lines_run": sum(len(run.observations) for run in runs),
        }
        return Candidate(
            text=decision.answer or "",
            node=ctx.path,
            prompt_tokens=decision.prompt_tokens,
            completion_tokens=decision.completion_tokens,
            finish_reason=decision.finish_reason,
            metadata={"rollout": ctx.rollout, self.type: record},
        )
