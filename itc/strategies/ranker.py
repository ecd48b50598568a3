"""Ranker: orders candidates in one listwise call whose answer is always a permutation, or
by any scorer; keeps the top few."""

from __future__ import annotations

import json
import re
from typing import ClassVar, Literal

from pydantic import Field

from itc.backends.base import GenerationRequest, StructuredOutputs
from itc.nodes import CostBound, ScorerNode
from itc.runtime.budget import BudgetExhausted
from itc.runtime.context import NodeContext
from itc.strategies.critic import CRITIQUE
from itc.strategies.prompting import Prompted
from itc.types import Candidate

TEMPLATE = (
    "Question:\n{question}\n\n{responses}\n\n"
    "Rank the {count} responses above from best to worst as answers to the question. "
    'Reply with JSON {{"ranking": [...]}} listing every response number once, best first.'
)


def permutation_grammar(n: int) -> str:
    """EBNF accepting exactly `{"ranking": [a, b, ...]}` with a..: a permutation of 1..n.

    One rule per set of numbers already written (2^n rules), each offering only the numbers
    not yet used: repeats and omissions cannot be decoded. vLLM's JSON-schema backend refuses
    `uniqueItems`, and a regex could only forbid repeats by listing all n! orders.
    """
    full = (1 << n) - 1
    rules = ['root ::= "{\\"ranking\\": [" r0 "]}"']
    for used in range(full):
        options = []
        for i in range(n):
            if used >> i & 1:
                continue
            token = f'"{i + 1}"' if used == 0 else f'", {i + 1}"'
            after = used | 1 << i
            options.append(token if after == full else f"{token} r{after}")
        rules.append(f"r{used} ::= " + " | ".join(options))
    return "\n".join(rules)


def ranking_regex(n: int) -> str:
    """The same JSON shape with n numbers in 1..n, repeats allowed (repaired when parsed)."""
    number = "(" + "|".join(str(i) for i in range(n, 0, -1)) + ")"
    return r'\{"ranking": \[' + number + "(, " + number + "){" + str(n - 1) + r"}\]\}"


def parse_ranking(text: str, n: int) -> tuple[list[int], bool]:
    """A 0-based permutation of range(n) read from a reply, and whether it had to be repaired.

    The reply is read as JSON (`{"ranking": [...]}` or a bare list), else as the integers in
    it. Numbers out of range and repeats are dropped, and those missing follow in input order,
    so every reply, even empty or cut short, gives a full order.
    """
    try:
        data = json.loads(text)
        items = data.get("ranking") if isinstance(data, dict) else data
    except ValueError:
        items = None
    if isinstance(items, list):
        numbers = [x for x in items if isinstance(x, int) and not isinstance(x, bool)]
        clean = len(numbers) == len(items)
    else:
        numbers, clean = [int(x) for x in re.findall(r"\d+", text)], False
    order: list[int] = []
    for number in numbers:
        if 0 < number <= n and number - 1 not in order:
            order.append(number - 1)
    clean = clean and len(order) == len(numbers) == n
    return order + [i for i in range(n) if i not in order], not clean


def _reply_tokens(n: int) -> int:
    """Room for a ranking of n: the JSON takes about 2n + 8 tokens."""
    return 16 + 6 * n


class Ranker(Prompted):
    """Orders its inputs and keeps the best `keep`.

    Listwise (no `scorer`): one greedy call shows the question, then the responses numbered
    `[1]`..`[n]` (each with its critique when a critic ran before and `show_critiques`), then
    asks for `{"ranking": [...]}`, best first. Decoding is constrained by a grammar, so the
    reply is always a permutation of the numbers; a reply read otherwise (a server without
    grammars: `constraint: regex`) is repaired into one. Only the first `max_candidates` are
    shown; the rest follow them unranked. Each ranked candidate gets the score
    `rank` = (n - position) / n.

    With a `scorer` it ranks by score instead, one score per candidate. A refused call keeps
    the first `keep` inputs, unranked, noted in `metadata["ranked"]`.
    """

    type: Literal["ranker"] = "ranker"
    placeholders: ClassVar[tuple[str, ...]] = ("question", "responses", "count")
    keep: int = Field(default=1, ge=1, description="How many of the best to pass on.")
    scorer: ScorerNode | None = Field(
        default=None, description="Rank by this scorer's scores instead of one listwise call."
    )
    template: str = Field(
        default=TEMPLATE,
        description="The listwise request: {question}, {responses} (numbered), {count}.",
    )
    constraint: Literal["grammar", "regex"] = Field(
        default="grammar",
        description="grammar: only permutations decode; regex: the JSON shape (then repaired).",
    )
    show_critiques: bool = Field(
        default=True, description="Show each candidate's critique, when it has one."
    )
    max_candidates: int = Field(
        default=8, ge=2, le=10, description="Most candidates shown in the listwise call."
    )
    max_solution_chars: int = Field(
        default=1500, ge=100, description="Only the end of a longer candidate is shown."
    )

    def max_outputs(self) -> int:
        return self.keep

    def wants_input_logprobs(self) -> bool:
        return self.scorer is not None and self.scorer.needs_token_logprobs

    def worst_case(self, inputs: int | None = 0) -> CostBound | None:
        if self.scorer is not None:
            return self.scorer.worst_case(inputs)
        shown = self.max_candidates if inputs is None else min(inputs, self.max_candidates)
        if shown < 2:
            return CostBound()
        return CostBound(completion_tokens=_reply_tokens(shown), calls=1)

    def request(self, ctx: NodeContext, candidates: list[Candidate]) -> GenerationRequest:
        n = len(candidates)
        blocks = []
        for i, c in enumerate(candidates, 1):
            block = f"[{i}]\n{self.shown(c).strip()}"
            if self.show_critiques and c.metadata.get(CRITIQUE):
                block += f"\n\nCritique of [{i}]:\n{c.metadata[CRITIQUE]}"
            blocks.append(block)
        messages = self.messages(
            question=ctx.problem.question, responses="\n\n".join(blocks), count=n
        )
        constraint = (
            StructuredOutputs(grammar=permutation_grammar(n))
            if self.constraint == "grammar"
            else StructuredOutputs(regex=ranking_regex(n))
        )
        return GenerationRequest(
            messages=messages,
            max_tokens=_reply_tokens(n),
            temperature=0.0,
            structured_outputs=constraint,
        )

    async def run(self, ctx: NodeContext, inputs: list[Candidate]) -> list[Candidate]:
        if len(inputs) < 2:
            return list(inputs[: self.keep])
        try:
            ranking = self._by_score if self.scorer is not None else self._listwise
            ranked = await ranking(ctx, inputs)
        except BudgetExhausted as refusal:
            # The candidates are paid for: pass the first ones on, unranked, and say why.
            note = f"unranked: {refusal}"
            return [c.model_copy(update={"metadata": {**c.metadata, "ranked": note}})
                    for c in inputs[: self.keep]]
        ctx.log_candidates(ranked, kept=[c.id for c in ranked[: self.keep]])
        return ranked[: self.keep]

    async def _listwise(self, ctx: NodeContext, inputs: list[Candidate]) -> list[Candidate]:
        shown, rest = inputs[: self.max_candidates], inputs[self.max_candidates :]
        result = await ctx.generate(self.request(ctx, shown))
        order, repaired = parse_ranking(result.choices[0].text, len(shown))
        note = "repaired" if repaired else "parsed"
        n = len(shown)
        ranked = [
            shown[i].with_score("rank", (n - position) / n).model_copy(
                update={"metadata": {**shown[i].metadata, "ranked": note}}
            )
            for position, i in enumerate(order)
        ]
        return ranked + rest

    async def _by_score(self, ctx: NodeContext, inputs: list[Candidate]) -> list[Candidate]:
        assert self.scorer is not None
        scores = await self.scorer.score(self.scorer.context(ctx), inputs)
        name = self.scorer.type
        scored = [c.with_score(name, s) for c, s in zip(inputs, scores, strict=True)]
        return sorted(scored, key=lambda c: c.scores[name], reverse=True)
