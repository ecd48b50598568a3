"""The tool DAG node (LLMCompiler): plan tool calls as a graph, run them as the plan
streams, let a joiner answer or ask for a new plan."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from itc.nodes import CostBound, check_template
from itc.runtime.context import NodeContext
from itc.runtime.tools import ToolRegistry
from itc.strategies.tool_dag.base import Clock, PlanRun, ToolUser
from itc.strategies.tool_dag.prompts import (
    JOIN_TEMPLATE,
    PLAN_TEMPLATE,
    example_plan,
    plan_lines,
    results_text,
)
from itc.types import Candidate


class ToolDAG(ToolUser):
    """Answers with tools: the LLM writes a plan of numbered tool calls (`N. tool(args)`,
    `$N` using line N's result), decoded with a grammar of the run's tools so it always
    parses; each line starts as soon as it is written and runs when the lines it uses are
    done; a joiner reads the results and answers, or asks for a new plan (at most
    `replans` times). A plan that fails its checks (possible only unconstrained) is sent
    back to the planner with the problem (at most `repairs` times; then its valid lines
    run and the joiner answers with what they gave).

    The answer's metadata keeps every plan, its results and their timings (`tool_dag`).
    A refused LLM call (budget) ends the node with BudgetExhausted; a refused tool call is
    a result the joiner reads.
    """

    type: Literal["tool_dag"] = "tool_dag"
    replans: int = Field(default=1, ge=0, le=8, description="New plans the joiner may ask for.")
    repairs: int = Field(
        default=1, ge=0, le=8, description="Re-prompts of a planner whose plan fails a check."
    )
    template: str = Field(
        default=PLAN_TEMPLATE,
        description="The planner's request: {tools}, {example}, {context} (earlier plans), "
        "{question}.",
    )

    join_template: str = Field(
        default=JOIN_TEMPLATE,
        description="The joiner's request: {question}, {context} (the plan and its results), "
        "{replan} (the offer to ask for a new plan, when one may be).",
    )

    @model_validator(mode="after")
    def _joiner_placeholders(self) -> ToolDAG:
        try:
            check_template(self.join_template, ("question", "context", "replan"))
        except ValueError as error:
            raise ValueError(f"join_template: {error}") from None
        return self

    def worst_case(self, inputs: int | None = 0) -> CostBound:
        plans = 1 + self.replans + self.repairs
        answers = 1 + self.replans
        return CostBound(
            completion_tokens=plans * self.plan_tokens() + answers * self.answer_tokens,
            calls=plans + answers,
        )

    async def run(self, ctx: NodeContext, inputs: list[Candidate]) -> list[Candidate]:
        tools = self.registry(ctx)
        clock = Clock()
        runs: list[PlanRun] = []
        replans, repairs = self.replans, self.repairs
        while True:
            run = await self._plan(ctx, tools, clock, runs, last=repairs == 0)
            runs.append(run)
            if run.error is not None and repairs > 0:
                repairs -= 1
                continue
            decision = await self.ask_joiner(
                ctx.child("joiner"),
                self._context(runs),
                replan=replans > 0,
                template=self.join_template,
            )
            if decision.replan is not None:
                run.replan = decision.replan
                replans -= 1
                continue
            return [self.answer(ctx, decision, runs, clock)]

    async def _plan(
        self, ctx: NodeContext, tools: ToolRegistry, clock: Clock, runs: list[PlanRun], last: bool
    ) -> PlanRun:
        content = self.template.format(
            tools=tools.describe(),
            example=example_plan(tools),
            context=self._context(runs, again=True),
            question=ctx.problem.question,
        )
        grammar = self.plan_constraint(tools, references=True, answers=False)
        request = self.request(ctx, content, grammar, self.plan_tokens())
        return await self.run_plan(
            ctx, "planner", request, tools, clock, references=True, keep_valid_lines=last
        )

    def _context(self, runs: list[PlanRun], again: bool = False) -> str:
        """Earlier plans with their results (and why each was not enough), for the planner
        (`again`: ending with a request for a new plan) or the joiner (the latest plan)."""
        blocks = []
        for number, run in enumerate(runs if again else runs[-1:], 1):
            title = f"Plan {number}" if again else "Plan"
            block = f"{title}:\n{plan_lines(run.calls)}\n"
            block += f"Results:\n{results_text(run.observations, self.max_observation_chars)}"
            if run.error is not None:
                block += f"\nThe plan could not run whole: {run.error}"
            if run.replan is not None:
                block += f"\nNot enough to answer: {run.replan}"
            blocks.append(block)
        if not again:
            return "\n\n".join(blocks)
        return "".join(b + "\n\n" for b in blocks) + ("Write a new plan.\n\n" if blocks else "")
