"""The round-based tool node (Divide-Then-Aggregate): each round a batch of independent
calls, run together; the next round sees every result so far and answers or goes on."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from itc.nodes import CostBound
from itc.runtime.context import NodeContext
from itc.strategies.tool_dag.base import Clock, PlanRun, ToolUser
from itc.strategies.tool_dag.join import Decision
from itc.strategies.tool_dag.prompts import ROUNDS_TEMPLATE, example_plan, round_results_text
from itc.types import Candidate


class ToolRounds(ToolUser):
    """Answers with tools in rounds: each round the LLM writes a batch of tool calls that
    use no other call's result (decoded with a grammar that allows no references), which
    run at once, starting as their lines are written; their results join the context, and
    the next round's reply is an answer (`Answer: ...`) or another batch. After `rounds`
    batches a last call must answer. The first round always calls tools.

    The answer's metadata keeps every round's calls, results and timings (`tool_rounds`).
    """

    type: Literal["tool_rounds"] = "tool_rounds"
    rounds: int = Field(default=3, ge=1, le=16, description="Most rounds of tool calls.")
    template: str = Field(
        default=ROUNDS_TEMPLATE,
        description="Each round's request: {tools}, {example}, {context} (the rounds so far), "
        "{question}.",
    )

    def worst_case(self, inputs: int | None = 0) -> CostBound:
        return self.calls_bound(self.rounds)

    async def run(self, ctx: NodeContext, inputs: list[Candidate]) -> list[Candidate]:
        tools = self.registry(ctx)
        clock = Clock()
        runs: list[PlanRun] = []
        for number in range(1, self.rounds + 1):
            answers = number > 1
            content = self.template.format(
                tools=tools.describe(),
                example=example_plan(tools, references=False),
                context=self._context(runs),
                question=ctx.problem.question,
            )
            grammar = self.plan_constraint(tools, references=False, answers=answers)
            request = self.request(ctx, content, grammar, self.plan_tokens())
            run = await self.run_plan(
                ctx,
                f"round{number}",
                request,
                tools,
                clock,
                references=False,
                keep_valid_lines=True,
                answers=answers,
            )
            runs.append(run)
            if run.answer is not None:
                return [self.answer(ctx, Decision(answer=run.answer), runs, clock)]
        decision = await self.ask_joiner(
            ctx.child("answer"), self._context(runs).strip(), replan=False
        )
        return [self.answer(ctx, decision, runs, clock)]

    def _context(self, runs: list[PlanRun]) -> str:
        blocks = []
        for number, run in enumerate(runs, 1):
            block = f"Round {number}:\n"
            block += round_results_text(run.calls, run.observations, self.max_observation_chars)
            if run.error is not None:
                block += f"\nNot all of the round's calls could run: {run.error}"
            blocks.append(block)
        return "".join(b + "\n\n" for b in blocks)
