"""Archon-style components as nodes: critic, ranker, fuser, verify, refine; inputs grouped by
the parent that passed them; the layered examples on the scripted backend and the real one."""

from __future__ import annotations

import asyncio
import itertools
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

import pytest
from pydantic import Field

from itc.backends.base import GenerationRequest, GenerationResult, StreamProgress
from itc.backends.scripted import ScriptedBackend, prompt_text
from itc.config import PipelineConfig, load_pipeline
from itc.nodes import Scorer, from_parent
from itc.planner.executor import Planner
from itc.runtime.budget import Ledger
from itc.runtime.context import NodeContext, Runtime
from itc.runtime.trace import Trace
from itc.strategies.critic import CRITIQUE, Critic
from itc.strategies.fuser import Fuser
from itc.strategies.generate import Generate
from itc.strategies.ranker import Ranker, parse_ranking, permutation_grammar, ranking_regex
from itc.strategies.refine import Refine
from itc.strategies.verify_filter import Verify
from itc.types import Budget, Candidate, Problem
from itc.verifiers.judge import LLMJudge

from .helpers import PROBLEM, answers, context

EXAMPLES = Path(__file__).parents[1] / "examples"
MINE = ["archon", "fuse_with_critiques", "listwise_rank", "verify_then_vote", "refine"]


@dataclass
class Peak(ScriptedBackend):
    """Records how many calls were in flight at once, and can answer verdicts by prompt."""

    in_flight: int = 0
    peak: int = 0
    verdicts: dict[str, float] | None = None
    """P(Yes) of a verdict, by a word its prompt contains (0.5 when none is found)."""

    async def generate(
        self, request: GenerationRequest, progress: StreamProgress | None = None
    ) -> GenerationResult:
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            await asyncio.sleep(0.01)
            result = await super().generate(request, progress)
        finally:
            self.in_flight -= 1
        if self.verdicts is None or not request.top_logprobs:
            return result
        text = prompt_text(request)
        p = next((v for word, v in self.verdicts.items() if word in text), 0.5)
        tops = ({"Yes": _log(p), "No": _log(1 - p)},)
        choice = result.choices[0].model_copy(update={"top_logprobs": tops})
        return result.model_copy(update={"choices": (choice,)})


def _log(p: float) -> float:
    return math.log(max(p, 1e-9))


class ByWord(Scorer):
    """A free scorer: the score of the first listed word found in the text."""

    type: Literal["by_word"] = "by_word"
    table: dict[str, float] = Field(default_factory=dict, description="Word -> score.")
    calls_a_model: ClassVar[bool] = False

    async def score(self, ctx: NodeContext, candidates: list[Candidate]) -> list[float]:
        return [next((v for w, v in self.table.items() if w in c.text), 0.0) for c in candidates]


def _candidates(*texts: str) -> list[Candidate]:
    return [Candidate(text=t) for t in texts]


# --- grouping by parent ------------------------------------------------------------------


def test_by_parent_groups_marked_inputs_in_inputs_order_and_unmarked_apart() -> None:
    node = Fuser(inputs=("rank", "critique"), critiques_from=("critique",))
    a, b, c = _candidates("a", "b", "c")
    marked = [from_parent(c, "critique"), from_parent(a, "rank"), b]
    groups = node.by_parent(marked)
    assert list(groups) == ["rank", "critique", ""]
    assert [x.text for x in groups["rank"]] == ["a"]
    assert [x.text for x in groups["critique"]] == ["c"] and [x.text for x in groups[""]] == ["b"]
    assert Fuser(inputs=("x",)).by_parent([]) == {"x": []}  # a silent parent: an empty group
    assert from_parent(a, "rank").id == a.id  # the mark changes nothing else


def test_fuser_pairs_responses_with_the_critiques_another_parent_wrote() -> None:
    node = Fuser(inputs=("rank", "critique"), critiques_from=("critique",))
    a, b, c = _candidates("answer A", "answer B", "answer C")
    reviewed = [
        x.model_copy(update={"metadata": {CRITIQUE: f"review of {x.text}"}}) for x in (a, b, c)
    ]
    inputs = [from_parent(b, "rank"), from_parent(a, "rank")] + [
        from_parent(x, "critique") for x in reviewed
    ]
    pairs = node.responses(inputs)
    # Only the ranker's two are responses, in its order; C's review is not used.
    assert [(x.text, r) for x, r in pairs] == [
        ("answer B", "review of answer B"),
        ("answer A", "review of answer A"),
    ]
    # Without `critiques_from`, every parent gives responses, each shown once.
    flat = Fuser(inputs=("rank", "critique")).responses(inputs)
    assert [x.text for x, _ in flat] == ["answer B", "answer A", "answer C"]
    assert all(r is not None and r.endswith(x.text) for x, r in flat)
    assert Fuser(inputs=("rank", "critique"), use_critiques=False).responses(inputs)[0][1] is None


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"inputs": ["a"], "critiques_from": ["b"]}, "not in inputs"),
        ({"inputs": ["a"], "critiques_from": ["a"]}, "none gives responses"),
        ({"critiques_from": ["a"]}, "not in inputs"),
    ],
)
def test_fuser_rejects_critique_parents_that_cannot_work(fields: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Fuser.model_validate(fields)


# --- critic -------------------------------------------------------------------------------


def _review_script(request: GenerationRequest, index: int) -> str:
    text = prompt_text(request)
    found = re.search(r"Response:\n(.*?)\n\nReview", text, re.S)
    return f"strength: short. weakness: unsure about {found.group(1) if found else '?'}"


async def test_critic_attaches_one_critique_per_candidate_sent_together() -> None:
    backend = Peak(_review_script)
    inputs = _candidates("answer-4", "answer-5", "answer-6")
    out = await Critic().run(context(backend), inputs)
    assert [c.id for c in out] == [c.id for c in inputs]  # same candidates, same order
    assert [c.text for c in out] == [c.text for c in inputs]
    assert [c.metadata[CRITIQUE] for c in out] == [
        f"strength: short. weakness: unsure about {c.text}" for c in inputs
    ]
    assert len(backend.requests) == 3 and backend.peak == 3  # all in flight at once
    # The question leads every prompt, so the three share a cached prefix.
    prompts = [prompt_text(r) for r in backend.requests]
    assert all(p.startswith(f"Question:\n{PROBLEM.question}\n\nResponse:\n") for p in prompts)


async def test_a_refused_critique_leaves_its_candidate_uncritiqued_but_kept() -> None:
    backend = ScriptedBackend(_review_script)
    ctx = context(backend, budget=Budget(calls=2))
    out = await Critic().run(ctx, _candidates("a", "b", "c"))
    assert len(out) == 3
    assert sum(CRITIQUE in c.metadata for c in out) == 2
    assert [e.status for e in ctx.trace.events].count("refused") == 1


# --- ranker -------------------------------------------------------------------------------


def _language(grammar: str) -> set[str]:
    """Every string an EBNF of quoted literals and rule names (no recursion) accepts."""
    rules: dict[str, list[list[str]]] = {}
    for line in grammar.splitlines():
        name, body = line.split(" ::= ")
        rules[name] = [re.findall(r'"(?:\\.|[^"\\])*"|\w+', alt) for alt in body.split(" | ")]

    def expand(name: str) -> set[str]:
        out = set()
        for alt in rules[name]:
            parts = [
                {part[1:-1].replace('\\"', '"')} if part.startswith('"') else expand(part)
                for part in alt
            ]
            out |= {"".join(p) for p in itertools.product(*parts)}
        return out

    return expand("root")


@pytest.mark.parametrize("n", [2, 3, 4])
def test_the_grammar_accepts_exactly_the_permutations(n: int) -> None:
    expected = {
        '{"ranking": [' + ", ".join(str(i + 1) for i in p) + "]}"
        for p in itertools.permutations(range(n))
    }
    assert _language(permutation_grammar(n)) == expected


def test_the_regex_accepts_the_shape_with_repeats() -> None:
    pattern = re.compile(ranking_regex(10))
    assert pattern.fullmatch('{"ranking": [10, 1, 2, 3, 4, 5, 6, 7, 8, 9]}')
    assert pattern.fullmatch('{"ranking": [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]}')
    assert not pattern.fullmatch('{"ranking": [1, 2]}')
    assert not pattern.fullmatch('{"ranking": [11, 1, 2, 3, 4, 5, 6, 7, 8, 9]}')


@pytest.mark.parametrize(
    ("reply", "order", "repaired"),
    [
        ('{"ranking": [3, 1, 2]}', [2, 0, 1], False),
        ("[2, 3, 1]", [1, 2, 0], False),
        ('{"ranking": [2, 2, 3]}', [1, 2, 0], True),  # a repeat: dropped, 1 appended
        ('{"ranking": [3, 7, 0]}', [2, 0, 1], True),  # out of range: dropped
        ('{"ranking": [2,', [1, 0, 2], True),  # cut short: the numbers read so far
        ("the second one is best", [0, 1, 2], True),  # nothing usable: input order
        ("", [0, 1, 2], True),
        ('{"ranking": [true, 1, 2, 3]}', [0, 1, 2], True),
    ],
)
def test_any_reply_parses_into_a_permutation(reply: str, order: list[int], repaired: bool) -> None:
    assert parse_ranking(reply, 3) == (order, repaired)


def _ranking_script(reply: str):  # type: ignore[no-untyped-def]
    def script(request: GenerationRequest, index: int) -> str:
        return reply if request.structured_outputs else "sample"

    return script


async def test_listwise_ranker_makes_one_constrained_call_and_keeps_the_top() -> None:
    backend = ScriptedBackend(_ranking_script('{"ranking": [3, 1, 4, 2]}'))
    inputs = [
        c.model_copy(update={"metadata": {CRITIQUE: f"review {i}"}} if i == 3 else {})
        for i, c in enumerate(_candidates("w", "x", "y", "z"), 1)
    ]
    kept = await Ranker(keep=2).run(context(backend), inputs)
    assert [c.text for c in kept] == ["y", "w"]
    assert [c.scores["rank"] for c in kept] == [1.0, 0.75]
    assert all(c.metadata["ranked"] == "parsed" for c in kept)
    [request] = backend.requests
    assert request.temperature == 0.0 and request.structured_outputs is not None
    assert request.structured_outputs.grammar == permutation_grammar(4)
    prompt = prompt_text(request)
    assert prompt.startswith(f"Question:\n{PROBLEM.question}")
    assert "[4]\nz" in prompt and "Critique of [3]:\nreview 3" in prompt
    assert "Critique of [1]" not in prompt  # only candidates that have one show one


async def test_a_bad_listwise_reply_is_repaired_and_extra_candidates_follow() -> None:
    backend = ScriptedBackend(_ranking_script('{"ranking": [2, 2]}'))
    node = Ranker(keep=5, constraint="regex", max_candidates=3)
    kept = await node.run(context(backend), _candidates("a", "b", "c", "d", "e"))
    assert [c.text for c in kept] == ["b", "a", "c", "d", "e"]
    assert [c.metadata.get("ranked") for c in kept] == ["repaired"] * 3 + [None, None]
    assert backend.requests[0].structured_outputs.regex == ranking_regex(3)
    assert "[4]" not in prompt_text(backend.requests[0])


async def test_score_based_ranking_and_trivial_inputs_need_no_listwise_call() -> None:
    backend = ScriptedBackend(_ranking_script("unused"))
    node = Ranker(keep=2, scorer=ByWord(table={"good": 0.9, "ok": 0.5}))
    kept = await node.run(context(backend), _candidates("bad", "good", "ok"))
    assert [c.text for c in kept] == ["good", "ok"] and kept[0].scores["by_word"] == 0.9
    single = _candidates("only")
    assert await Ranker().run(context(backend), single) == single
    assert backend.requests == []


async def test_a_refused_ranking_passes_the_first_inputs_on_unranked() -> None:
    backend = ScriptedBackend(_ranking_script('{"ranking": [2, 1]}'))
    ctx = context(backend, budget=Budget(calls=1))
    samples = await Generate(n=3).run(ctx, [])
    kept = await Ranker(keep=2).run(ctx, samples)
    assert [c.id for c in kept] == [c.id for c in samples[:2]]
    assert all(c.metadata["ranked"].startswith("unranked: calls budget") for c in kept)


# --- fuser --------------------------------------------------------------------------------


def _stack_script(request: GenerationRequest, index: int) -> str:
    """Answers every component of the Archon-style stacks by what its prompt asks."""
    text = prompt_text(request)
    so = request.structured_outputs
    if so is not None and so.choice:
        return "Yes"
    if so is not None:
        n = len(re.findall(r"^\[\d+\]$", text, re.M))
        return '{"ranking": [' + ", ".join(str(i) for i in range(n, 0, -1)) + "]}"
    if "Review this response" in text:
        found = re.search(r"Response:\n(.*?)\n\nReview", text, re.S)
        return f"review of {found.group(1) if found else '?'}"
    if "Candidate solutions" in text or "candidate responses" in text:
        return "fused so the answer is 4"
    if "review of it" in text.lower() or "A review" in text:
        return "revised so the answer is 4"
    return f"sample {index} so the answer is {4 + index % 2}"


async def test_fuser_over_a_ranker_and_a_critic_run_in_parallel_by_the_planner() -> None:
    pipeline = load_pipeline(EXAMPLES / "fuse_with_critiques.yaml")
    backend = Peak(_stack_script)
    result = await Planner(Runtime(backend=backend)).run(pipeline, PROBLEM)
    assert result.error is None and result.answer == "4"
    fuse = [r for r in backend.requests if "Candidate solutions" in prompt_text(r)]
    assert len(fuse) == 1
    prompt = prompt_text(fuse[0])
    # The ranker reversed the four samples: its top two (samples 3 and 2) are fused, each
    # with the review the critic wrote of it, and the other two are not shown.
    assert "Response 1:\nsample 3 so the answer is 5" in prompt
    assert "Review of response 1:\nreview of sample 3 so the answer is 5" in prompt
    assert "Response 2:\nsample 2 so the answer is 4" in prompt
    assert "Review of response 2:\nreview of sample 2" in prompt
    assert "sample 0" not in prompt and "sample 1" not in prompt
    [fused] = result.candidates
    assert len(fused.lineage) == 2 and fused.metadata["fused"] == 2
    # The critic's four calls and the ranker's one went out together.
    assert backend.peak == 5


async def test_fuser_samples_n_in_one_request_with_the_fused_ids_as_lineage() -> None:
    backend = ScriptedBackend(_stack_script)
    inputs = _candidates("one", "two", "three")
    out = await Fuser(n=3, max_candidates=2).run(context(backend), inputs)
    assert len(out) == 3 and len(backend.requests) == 1 and backend.requests[0].n == 3
    assert all(c.lineage == (inputs[0].id, inputs[1].id) for c in out)
    assert "three" not in prompt_text(backend.requests[0])


async def test_a_refused_fusion_passes_the_responses_on() -> None:
    backend = ScriptedBackend(_stack_script)
    ctx = context(backend, budget=Budget(calls=1))
    samples = await Generate(n=3).run(ctx, [])
    out = await Fuser(n=2).run(ctx, samples)
    assert [c.id for c in out] == [c.id for c in samples[:2]]
    assert all(c.metadata["fused"].startswith("not fused: calls budget") for c in out)


# --- verify -------------------------------------------------------------------------------


async def test_verify_keeps_the_candidates_that_pass_best_first() -> None:
    backend = Peak(answers("Yes"))
    backend.verdicts = {"weak": 0.3, "fine": 0.7, "great": 0.95}
    ctx = context(backend)
    inputs = _candidates("fine", "weak", "great")
    kept = await Verify(threshold=0.6).run(ctx, inputs)
    assert [c.text for c in kept] == ["great", "fine"]
    assert kept[0].scores["verify"] == pytest.approx(0.95)
    assert all(r.max_tokens == 1 and r.structured_outputs.choice == ("Yes", "No")
               for r in backend.requests)
    assert backend.peak == 3
    # A judge is a reward model: its calls count as reward calls.
    assert ctx.ledger.spent.reward_calls == ctx.ledger.spent.calls == 3
    assert all(e.reward and e.node == "judge" for e in ctx.trace.events)


async def test_verify_keeps_the_likeliest_when_none_passes_and_says_so() -> None:
    backend = Peak(answers("No"))
    backend.verdicts = {"weak": 0.3, "poor": 0.1}
    kept = await Verify(threshold=0.9).run(context(backend), _candidates("poor", "weak"))
    assert [c.text for c in kept] == ["weak"]
    assert kept[0].metadata["verify"].startswith("none passed: kept the likeliest")


async def test_verify_under_a_reward_budget_uses_only_the_verdicts_it_got() -> None:
    backend = Peak(answers("Yes"))
    backend.verdicts = {"alpha": 0.9, "beta": 0.9}
    ctx = context(backend, budget=Budget(reward_calls=1))
    kept = await Verify().run(ctx, _candidates("alpha", "beta"))
    assert len(kept) == 1 and "verify" in kept[0].scores
    assert ctx.ledger.spent.reward_calls == 1
    # No verdict at all: every input goes on, noted unverified.
    ctx = context(backend, budget=Budget(calls=1))
    samples = await Generate(n=2).run(ctx, [])
    kept = await Verify().run(ctx, samples)
    assert [c.id for c in kept] == [c.id for c in samples]
    assert all(c.metadata["verify"].startswith("unverified: calls budget") for c in kept)


async def test_verify_asks_as_its_judge_configured_under_judge() -> None:
    node = PipelineConfig.from_yaml(
        "type: verify\njudge: {type: llm_judge, system: Be strict., top_logprobs: 5,"
        " template: 'Is this right? {solution}'}"
    ).nodes["main"]
    assert isinstance(node, Verify) and node.judge.top_logprobs == 5
    backend = Peak(answers("Yes"))
    await node.run(context(backend), _candidates("alpha"))
    [request] = backend.requests
    assert request == node.judge.request(context(backend), _candidates("alpha")[0])
    assert [m.content for m in request.messages or ()] == ["Be strict.", "Is this right? alpha"]


# --- refine -------------------------------------------------------------------------------


def _revision_script(request: GenerationRequest, index: int) -> str:
    text = prompt_text(request)
    if "Review this response" in text:
        return "weak: needs work"
    version = re.findall(r"\bv(\d+)\b", text)
    return f"v{int(version[-1]) + 1 if version else 1}"


async def test_refine_stops_as_soon_as_a_version_reaches_the_threshold() -> None:
    backend = ScriptedBackend(_revision_script)
    scorer = ByWord(table={"v1": 0.5, "v2": 0.95, "v3": 1.0, "draft": 0.1})
    node = Refine(max_rounds=5, threshold=0.9, scorer=scorer)
    [out] = await node.run(context(backend), _candidates("draft"))
    assert out.text == "v2" and out.metadata["refine"] == {"rounds": 2, "stop": "threshold"}
    assert len(backend.requests) == 4  # two reviews, two revisions
    assert out.metadata["round"] == 2 and len(out.lineage) == 1
    # An input already good enough costs nothing.
    backend.requests.clear()
    [same] = await node.run(context(backend), _candidates("v3"))
    assert same.text == "v3" and same.metadata["refine"]["rounds"] == 0
    assert backend.requests == []


@pytest.mark.parametrize("max_rounds", [1, 2, 3])
async def test_refine_never_exceeds_max_rounds_and_keeps_the_best_version(max_rounds: int) -> None:
    backend = ScriptedBackend(_revision_script)
    # Every revision is worse than the draft and none reaches the threshold.
    scorer = ByWord(table={"draft": 0.6, "v": 0.2})
    node = Refine(max_rounds=max_rounds, scorer=scorer, threshold=0.9)
    [out] = await node.run(context(backend), _candidates("draft"))
    revisions = [r for r in backend.requests if "Review this response" not in prompt_text(r)]
    assert len(revisions) == max_rounds
    assert out.text == "draft" and out.metadata["refine"] == {
        "rounds": max_rounds, "stop": "max_rounds"
    }


async def test_refine_without_a_scorer_keeps_the_latest_revision_of_each_input() -> None:
    backend = Peak(_revision_script)
    out = await Refine(max_rounds=3).run(context(backend), _candidates("draft", "other"))
    assert [c.text for c in out] == ["v3", "v3"]
    assert backend.peak == 2  # the inputs are refined side by side


async def test_a_refused_round_keeps_the_best_version_paid_for() -> None:
    backend = ScriptedBackend(_revision_script)
    ctx = context(backend, budget=Budget(calls=3))  # review, revise, review, (refused)
    [out] = await Refine(max_rounds=3).run(ctx, _candidates("draft"))
    assert out.text == "v1"
    assert out.metadata["refine"]["rounds"] == 1
    assert out.metadata["refine"]["stop"].startswith("budget: calls budget")


# --- the layered examples -----------------------------------------------------------------


@pytest.mark.parametrize("name", MINE)
async def test_each_example_loads_and_runs_on_the_scripted_backend(name: str) -> None:
    pipeline = load_pipeline(EXAMPLES / f"{name}.yaml")
    assert PipelineConfig.from_yaml(pipeline.to_yaml()) == pipeline
    assert pipeline.worst_case() is not None  # every part is bounded before any call
    result = await Planner(Runtime(backend=ScriptedBackend(_stack_script))).run(
        pipeline, PROBLEM
    )
    assert result.error is None and result.budget_exhausted is None
    assert result.answer in {"4", "5"}


async def test_the_archon_stack_sends_each_layer_its_requests() -> None:
    pipeline = load_pipeline(EXAMPLES / "archon.yaml")
    assert list(pipeline.nodes) == ["generate", "critique", "rank", "fuse", "verify"]
    backend = ScriptedBackend(_stack_script)
    result = await Planner(Runtime(backend=backend)).run(pipeline, PROBLEM)
    assert result.answer == "4"
    by_node: dict[str, int] = {}
    for event in result.trace.events:
        by_node[event.node] = by_node.get(event.node, 0) + 1
    assert by_node == {"generate": 1, "critique": 4, "rank": 1, "fuse": 1, "verify/judge": 2}
    assert result.usage.reward_calls == 2 and result.usage.calls == 9
    [ranking] = [
        r for r in backend.requests if r.structured_outputs and r.structured_outputs.grammar
    ]
    assert "Critique of [4]:\nreview of sample 3" in prompt_text(ranking)
    fused = result.candidates
    assert len(fused) == 2 and all(c.scores["verify"] >= 0.5 for c in fused)
    assert all(len(c.lineage) == 2 for c in fused)


@pytest.mark.parametrize("calls", range(1, 9))
async def test_a_calls_budget_cut_anywhere_still_answers_from_what_was_paid_for(
    calls: int,
) -> None:
    pipeline = load_pipeline(EXAMPLES / "archon.yaml")
    backend = ScriptedBackend(_stack_script)
    result = await Planner(Runtime(backend=backend)).run(pipeline, PROBLEM, Budget(calls=calls))
    assert result.error is None and result.budget_exhausted == "calls"
    assert result.usage.calls <= calls and result.refused_calls >= 1
    assert result.answer in {"4", "5"} and result.candidates


# --- the real server ----------------------------------------------------------------------

REAL = Problem(
    id="apples", prompt="Tom has 3 boxes with 4 apples each. How many apples?", answer="12"
)


def _real_ctx(backend, budget: Budget | None = None) -> NodeContext:  # type: ignore[no-untyped-def]
    runtime = Runtime(backend=backend, max_in_flight=8)
    return NodeContext(REAL, runtime, Ledger(budget or Budget()), Trace(problem_id=REAL.id))


async def _samples(ctx: NodeContext, n: int) -> list[Candidate]:
    return await Generate(n=n, max_tokens=60, temperature=0.8).run(ctx.child("generate"), [])


@pytest.mark.vllm
async def test_real_critic_and_listwise_ranker(backend) -> None:  # type: ignore[no-untyped-def]
    ctx = _real_ctx(backend)
    samples = await _samples(ctx, 4)
    reviewed = await Critic(max_tokens=48).run(ctx.child("critique"), samples)
    assert [c.id for c in reviewed] == [c.id for c in samples]
    assert all(c.metadata[CRITIQUE].strip() for c in reviewed)
    critic_events = [e for e in ctx.trace.events if e.node == "critique"]
    assert len(critic_events) == 4 and all(e.completion_tokens <= 48 for e in critic_events)
    ranked = await Ranker(keep=4).run(ctx.child("rank"), reviewed)
    # The grammar lets only a permutation be decoded: the real reply parses unrepaired.
    assert all(c.metadata["ranked"] == "parsed" for c in ranked)
    assert sorted(c.id for c in ranked) == sorted(c.id for c in samples)
    assert [c.scores["rank"] for c in ranked] == [1.0, 0.75, 0.5, 0.25]
    # A regex-constrained reply is read into a permutation too (repaired if it repeats).
    again = await Ranker(keep=4, constraint="regex", show_critiques=False).run(
        ctx.child("rank_regex"), samples
    )
    assert sorted(c.id for c in again) == sorted(c.id for c in samples)
    assert {c.metadata["ranked"] for c in again} <= {"parsed", "repaired"}


@pytest.mark.vllm
async def test_real_fuser_verify_and_refine(backend) -> None:  # type: ignore[no-untyped-def]
    ctx = _real_ctx(backend, Budget(tokens=6000))
    samples = await _samples(ctx, 2)
    reviewed = await Critic(max_tokens=40).run(ctx.child("critique"), samples)
    fused = await Fuser(n=2, max_tokens=60).run(ctx.child("fuse"), reviewed)
    assert len(fused) == 2 and all(c.lineage == tuple(s.id for s in samples) for c in fused)
    [fuse_event] = [e for e in ctx.trace.events if e.node == "fuse"]
    assert fuse_event.n == 2 and fuse_event.status == "ok"
    kept = await Verify(threshold=0.0).run(ctx.child("verify"), fused)
    assert len(kept) == 2 and all(0.0 <= c.scores["verify"] <= 1.0 for c in kept)
    assert kept[0].scores["verify"] >= kept[1].scores["verify"]
    verdicts = [e for e in ctx.trace.events if e.node == "verify/judge"]
    assert len(verdicts) == 2 and all(e.reward and e.completion_tokens == 1 for e in verdicts)
    refine = Refine(max_rounds=2, threshold=1.0, scorer=LLMJudge(), max_tokens=60,
                    critic=Critic(max_tokens=40))
    [better] = await refine.run(ctx.child("refine"), samples[:1])
    rounds = better.metadata["refine"]["rounds"]
    assert 0 <= rounds <= 2
    revisions = [e for e in ctx.trace.events if e.node == "refine/revise"]
    assert len(revisions) == rounds and all(e.completion_tokens <= 60 for e in revisions)
    assert "llm_judge" in better.scores
    assert ctx.ledger.spent.total_tokens <= 6000


@pytest.mark.vllm
async def test_real_archon_example_runs_end_to_end_within_its_token_budget(  # type: ignore[no-untyped-def]
    backend,
) -> None:
    pipeline = load_pipeline(EXAMPLES / "archon.yaml")
    budget = pipeline.budget
    assert budget.tokens is not None
    result = await Planner(Runtime(backend=backend)).run(pipeline, REAL)
    assert result.error is None and result.candidates
    assert result.usage.total_tokens <= budget.tokens
    nodes = {e.node for e in result.trace.events if e.status == "ok"}
    assert {"generate", "critique", "rank", "fuse", "verify/judge"} <= nodes
    ranking = [e for e in result.trace.events if e.node == "rank"]
    assert len(ranking) == 1
    # What came out is the fusion of the ranker's two, judged.
    assert all(len(c.lineage) == 2 and "verify" in c.scores for c in result.candidates)
