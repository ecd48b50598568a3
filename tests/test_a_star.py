"""A*-decoding: pops partials by f = g + h, stops at the first goal popped or where the
budget stops it, and expands each partial with one request of n = k."""

from __future__ import annotations

from typing import Literal

import pytest
from pydantic import Field

from itc.backends.base import GenerationRequest
from itc.backends.scripted import ScriptedBackend, prompt_text
from itc.nodes import Aggregate, StepScorer
from itc.runtime.context import NodeContext
from itc.runtime.steps import Partial, StepConfig
from itc.strategies.a_star import AStar, path_cost
from itc.types import Budget, Message

from .helpers import context

STEP = StepConfig(delimiter="|", max_tokens=20, max_steps=30)


class TableReward(StepScorer):
    """A step's reward looked up by its first word (unknown steps: 0.5); the prefix score is
    the last step's reward, so h = 1 - reward(last step)."""

    type: Literal["table_reward"] = "table_reward"
    aggregate: Aggregate = "last"
    table: dict[str, float] = Field(default_factory=dict)

    async def score_steps(self, ctx: NodeContext, prefixes: list[Partial]) -> list[float]:
        return [self.table.get(p.steps[-1].split()[0], 0.5) for p in prefixes]


def scripted(roots: tuple[str, ...], texts: dict[str, str] | None = None) -> ScriptedBackend:
    """A backend growing a named tree: the root's children are `roots`, a node N's children
    are N1, N2, ...; each step is its name (or `texts[name]`) and the delimiter."""
    backend = ScriptedBackend(lambda request, index: "")

    def script(request: GenerationRequest, index: int) -> str:
        name = roots[index] if request.messages is not None else f"{parent(request)}{index + 1}"
        return (texts or {}).get(name, name) + " |"

    def parent(request: GenerationRequest) -> str:
        words = prompt_text(request, backend.vocabulary).split()
        return words[-2]  # the last step's name, before its delimiter

    script.parent = parent  # type: ignore[attr-defined]
    backend.script = script
    return backend


def expanded(backend: ScriptedBackend) -> list[str]:
    """The parent each request extended, in order."""
    parent = backend.script.parent  # type: ignore[attr-defined]
    return ["root" if r.messages is not None else parent(r) for r in backend.requests]


# Hand-worked (aggregate "last", so h = 1 - the last step's reward; children of a node
# named N are N1, N2). root -> A (h .25), Y (h .3); A -> A1 (h .2), A2 (h 1);
# A1 -> A11 (h .29), A12 (h 1); Y -> Y1 (h .1), Y2 (h 1).
#   zero:     f = h.  After A, A1 (.2) beats Y (.3); then A11 (.29) still beats Y.
#   increase: f(A) = .25 + .25; f(A1) = .25 + .2 = .45 < f(Y) = .6; f(A11) = (.25 + .09)
#             + .29 = .63 > .6, so Y comes fourth.
#   path:     f(A) = .5, f(Y) = .6, f(A1) = (.25 + .2) + .2 = .65 > .6, so Y comes third,
#             then Y1 (g .4, f .5).
TABLE = {"A": 0.75, "Y": 0.7, "A1": 0.8, "A2": 0.0, "A11": 0.71, "A12": 0.0, "Y1": 0.9,
         "Y2": 0.0}
ORDERS = {
    "zero": ["root", "A", "A1", "A11"],
    "increase": ["root", "A", "A1", "Y"],
    "path": ["root", "A", "Y", "Y1"],
}


@pytest.mark.parametrize("cost", ["zero", "increase", "path"])
async def test_partials_are_expanded_in_order_of_f(cost: str) -> None:
    backend = scripted(("A", "Y"))
    node = AStar(
        expand=2, cost=cost, max_expansions=4, step=STEP, reward=TableReward(table=TABLE)
    )
    ctx = context(backend)
    [answer] = await node.run(ctx, [])
    assert expanded(backend) == ORDERS[cost]
    assert all(r.n == 2 for r in backend.requests)  # one request with n = k per expansion
    rounds = [r for r in ctx.trace.search if r.note and r.note.startswith("expanded")]
    assert len(rounds) == len(backend.requests) == 4
    assert all(len(r.partials) == 2 for r in rounds)
    assert answer.metadata["goal"] is False and answer.metadata["expansions"] == 4
    assert ctx.trace.search[-1].note == "stopped: 4 expansions done"


async def test_cut_short_it_answers_from_the_best_partial_left_in_the_queue() -> None:
    backend = scripted(("A", "Y"))
    node = AStar(expand=2, cost="zero", max_expansions=4, step=STEP,
                 reward=TableReward(table=TABLE))
    [answer] = await node.run(context(backend), [])
    # Left after root, A, A1, A11: Y (h .3), A111/A112 (h .5), A2/A12 (h 1). Expanded A1
    # (h .2) is not a candidate: its children are.
    assert answer.text == "Y |" and answer.metadata["f"] == pytest.approx(0.3)


async def test_it_stops_when_a_goal_is_popped_not_when_one_is_seen() -> None:
    backend = scripted(("A", "G"), {"G": "G so the answer is 4"})
    reward = TableReward(table={"A": 0.9, "G": 0.6, "A1": 0.0, "A2": 0.0})
    node = AStar(expand=2, max_expansions=20, step=STEP, reward=reward)
    ctx = context(backend)
    [answer] = await node.run(ctx, [])
    # Default cost `increase`: G (f .4 + .4) waits while A (f .1 + .1) is expanded; A's
    # children (f (.1 + .9) + 1) lose to G, so G is popped second and is not extended.
    assert expanded(backend) == ["root", "A"]
    assert answer.text == "G so the answer is 4 |" and answer.finish_reason == "answer"
    assert answer.metadata["goal"] is True
    assert answer.metadata["f"] == pytest.approx(answer.metadata["g"] + (1 - 0.6))
    assert ctx.trace.search[-1].note == "goal popped"


async def test_the_call_budget_stops_it_and_it_answers_from_what_it_has() -> None:
    backend = scripted(("A", "Y"))
    node = AStar(expand=2, max_expansions=50, step=STEP, reward=TableReward())
    ctx = context(backend, Budget(calls=3))
    [answer] = await node.run(ctx, [])
    assert len(backend.requests) == 3 and ctx.ledger.spent.calls == 3
    assert [e.status for e in ctx.trace.events].count("refused") == 1
    assert ctx.trace.search[-1].note == "stopped: budget spent"
    assert answer.metadata["goal"] is False and answer.text.endswith("|")


async def test_a_token_budget_is_never_exceeded() -> None:
    backend = ScriptedBackend(lambda request, index: "w w w |")
    node = AStar(expand=2, max_expansions=50, step=STEP, reward=TableReward())
    ctx = context(backend, Budget(completion_tokens=11))
    [answer] = await node.run(ctx, [])
    assert ctx.ledger.spent.completion_tokens <= 11
    assert all(r.n == 2 for r in backend.requests)
    assert ctx.trace.search[-1].note == "stopped: budget spent"
    assert answer.completion_tokens > 0


@pytest.mark.parametrize(
    ("cost", "expected"),
    # h = .2, .5, .1: path adds them; increase adds .2 (from 0), .3, then nothing.
    [("zero", 0.0), ("path", 0.8), ("increase", 0.5)],
)
def test_each_cost_computes_its_documented_g(cost: str, expected: float) -> None:
    assert path_cost([0.8, 0.5, 0.9], cost) == pytest.approx(expected)  # type: ignore[arg-type]
    # On a partial, g reads the prefix scores through the reward's aggregate: with `min` the
    # prefix scores of rewards .8, .5, .9 are .8, .5, .5 (h = .2, .5, .5).
    partial = Partial(
        messages=(Message(role="user", content="q"),),
        prompt_ids=(1,),
        steps=("a", "b", "c"),
        step_ids=((2,), (3,), (4,)),
        rewards=(0.8, 0.5, 0.9),
    )
    node = AStar(cost=cost, reward=TableReward(aggregate="min"))
    assert node.g(partial) == pytest.approx({"zero": 0.0, "path": 1.2, "increase": 0.5}[cost])
    assert node.h(partial) == pytest.approx(0.5)


async def test_parallel_rounds_expand_the_best_few_together_and_duplicates_are_dropped() -> None:
    backend = scripted(("A", "Y"))
    node = AStar(expand=2, cost="zero", parallel=2, max_expansions=4, step=STEP,
                 reward=TableReward(table=TABLE))
    ctx = context(backend)
    await node.run(ctx, [])
    rounds = [r for r in ctx.trace.search if r.note and r.note.startswith("expanded")]
    # root alone, then the two best (A .25, Y .3) together, then the one expansion left:
    # the best of their children, Y1 (.1).
    assert [r.note.count("(f ") for r in rounds] == [1, 2, 1]  # type: ignore[union-attr]
    order = expanded(backend)
    assert order[0] == "root" and set(order[1:3]) == {"A", "Y"} and order[3] == "Y1"

    same = ScriptedBackend(lambda request, index: "same step |")
    ctx = context(same)
    await AStar(expand=3, max_expansions=1, step=STEP, reward=TableReward()).run(ctx, [])
    assert same.requests[0].n == 3 and len(ctx.trace.search[0].partials) == 1


@pytest.mark.vllm
async def test_real_a_star_is_token_exact_and_within_budget(backend) -> None:  # type: ignore[no-untyped-def]
    from itc.runtime.budget import Ledger
    from itc.runtime.context import Runtime
    from itc.runtime.trace import Trace
    from itc.types import Problem
    from itc.verifiers.arithmetic import ArithmeticCheck

    class Recording:
        """The real backend, with every request it was sent kept."""

        def __init__(self, inner) -> None:  # type: ignore[no-untyped-def]
            self.inner, self.model, self.sent, self.results = inner, inner.model, [], []

        async def generate(self, request, progress=None):  # type: ignore[no-untyped-def]
            self.sent.append(request)
            result = await self.inner.generate(request, progress)
            self.results.append(result)
            return result

        async def count_prompt_tokens(self, request):  # type: ignore[no-untyped-def]
            return await self.inner.count_prompt_tokens(request)

        async def max_model_len(self):  # type: ignore[no-untyped-def]
            return await self.inner.max_model_len()

        async def aclose(self) -> None:
            return None

    recording = Recording(backend)
    problem = Problem(
        id="two-step",
        prompt="Tom has 3 apples and buys 4 more. Then he eats 2. How many apples are left?",
        answer="5",
    )
    budget = Budget(completion_tokens=150)  # less than 4 expansions of 2 x 32 tokens
    ctx = NodeContext(problem, Runtime(backend=recording), Ledger(budget), Trace(problem_id="a"))
    node = AStar(
        expand=2,
        max_expansions=4,
        reward=ArithmeticCheck(),
        # No answer marker: solutions end at EOS or the step cap, so the search goes deep
        # enough for the budget to bind.
        step=StepConfig(delimiter="\n", max_tokens=32, max_steps=4, answer_marker=None),
    )
    candidates = await node.run(ctx, [])
    assert len(candidates) == 1 and candidates[0].text
    assert ctx.ledger.spent.completion_tokens <= 150
    sent = recording.sent
    assert sent and sent[0].messages is not None and all(r.n == 2 for r in sent)
    assert len(sent) == candidates[0].metadata["expansions"] >= 1
    prompt = recording.results[0].prompt_ids
    assert prompt and len(sent) >= 2
    for request in sent[1:]:
        # Later expansions send ids that extend the prompt as the server first rendered it.
        assert request.prompt_ids is not None and request.messages is None
        assert request.prompt_ids[: len(prompt)] == prompt and len(request.prompt_ids) > len(prompt)
    rounds = [r for r in ctx.trace.search if r.note and r.note.startswith("expanded")]
    assert rounds and len(rounds) == len(sent)
    assert all(p.reward is not None for r in rounds for p in r.partials)
