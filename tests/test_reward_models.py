"""Reward models behind the step-scorer interface: an LLM step judge, a PRM over `/pooling`
and an ORM over `/classify` on a backend of their own, all metered as reward calls."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Iterator

import httpx
import pytest

from itc.backends.base import BackendError, PoolingRequest, StreamProgress
from itc.backends.scripted import ScriptedBackend, prompt_text
from itc.backends.vllm import VLLMBackend
from itc.runtime.budget import BudgetExhausted, Ledger
from itc.runtime.context import NodeContext, Runtime
from itc.runtime.steps import Partial, StepConfig
from itc.runtime.trace import Trace
from itc.strategies.best_of_n import BestOfN
from itc.strategies.particle_filtering import ParticleFiltering
from itc.types import Budget, Candidate, Message, Problem
from itc.verifiers.judge import StepJudge, p_yes
from itc.verifiers.reward_model import OutcomeRewardModel, ProcessRewardModel

from .helpers import PROBLEM

QUESTION = PROBLEM.question
ROOT = (Message(role="user", content=QUESTION),)


def partial(*steps: str) -> Partial:
    return Partial(messages=ROOT, steps=steps)


def reward_context(
    generator: ScriptedBackend, reward: ScriptedBackend | None = None, budget: Budget | None = None
) -> NodeContext:
    backends = {"prm": reward, "orm": reward} if reward is not None else {}
    runtime = Runtime(backend=generator, backends=backends)  # type: ignore[arg-type]
    return NodeContext(PROBLEM, runtime, Ledger(budget or Budget()), Trace(problem_id="p1"))


# -- the LLM step judge ----------------------------------------------------------------------


class Verdicts(ScriptedBackend):
    """Answers Yes (confidently) when the latest step says 2 + 2 = 4, else No; tracks how many
    judgements were in flight at once."""

    def __init__(self) -> None:
        super().__init__(lambda request, index: "Yes", seconds_per_token=0.01)
        self.in_flight = self.most_in_flight = 0

    async def generate(self, request, progress=None):  # type: ignore[no-untyped-def]
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            result = await super().generate(request, progress)
        finally:
            self.in_flight -= 1
        latest = prompt_text(request).split("Latest step:\n")[1]
        tops = {"Yes": -0.1, "No": -2.5} if "2 + 2 = 4" in latest else {"Yes": -2.5, "No": -0.1}
        choice = result.choices[0].model_copy(update={"top_logprobs": (tops,)})
        return result.model_copy(update={"choices": (choice,)})


async def test_step_judge_scores_each_latest_step_from_logprobs_as_reward_calls() -> None:
    backend = Verdicts()
    ctx = reward_context(backend)
    wrong_then_right = partial("2 + 2 = 5\n\n", "so 2 + 2 = 4\n\n")
    right = partial("2 + 2 = 4\n\n")
    judge = StepJudge()
    scored = await judge.score_partials(ctx, [wrong_then_right, right])
    high, low = p_yes({"Yes": -0.1, "No": -2.5}), p_yes({"Yes": -2.5, "No": -0.1})
    assert scored[0].rewards == pytest.approx((low, high))
    assert scored[1].rewards == pytest.approx((high,))
    # One constrained token per prefix, all sent together, question first.
    assert len(backend.requests) == 3 and backend.most_in_flight == 3
    for request in backend.requests:
        assert request.max_tokens == 1 and request.top_logprobs == 20
        assert request.structured_outputs is not None
        assert request.structured_outputs.choice == ("Yes", "No")
        assert prompt_text(request).startswith(f"Question:\n{QUESTION}\n")
    shown = sorted(prompt_text(r) for r in backend.requests)
    assert any("Steps so far:\n2 + 2 = 5\n\nLatest step:\nso 2 + 2 = 4" in p for p in shown)
    assert sum("Steps so far:\n(none)" in p for p in shown) == 2
    spent = ctx.ledger.spent
    assert spent.reward_calls == 3 and spent.calls == 3
    assert all(e.reward and e.node == "reward:step_judge" for e in ctx.trace.events)


async def test_step_judge_used_as_an_outcome_scorer_folds_its_step_rewards() -> None:
    ctx = reward_context(Verdicts())
    judge = StepJudge(aggregate="min")
    good, bad = Candidate(text="2 + 2 = 4\n\nso 2 + 2 = 4"), Candidate(text="2 + 2 = 4\n\n1 = 2")
    ranked = await BestOfN(inputs=("x",), inner=None, scorer=judge).run(ctx, [bad, good])
    assert ranked[0].id == good.id
    assert ctx.ledger.spent.reward_calls == 4  # two steps each


# -- budgets ---------------------------------------------------------------------------------


def tagged_rows(request: PoolingRequest) -> list[list[float]]:
    """A scripted PRM: a row per step tag, 0.9 for right arithmetic (2 + 2 = 4), else 0.2."""
    text = request.messages[-1].content if request.messages else request.prompt or ""
    steps = text.split("<extra_0>")[:-1]
    return [[0.1, 0.9] if "= 4" in s else [0.8, 0.2] for s in steps]


async def test_a_reward_call_budget_refuses_the_third_while_generation_goes_on() -> None:
    def script(request, index):  # type: ignore[no-untyped-def]
        depth = prompt_text(request, generator.vocabulary).count("|")
        return "the answer is 4. |" if depth >= 3 else "2 + 2 = 4 |"

    generator = ScriptedBackend(script)
    prm = ScriptedBackend(lambda request, index: "", pool_script=tagged_rows)
    ctx = reward_context(generator, prm, Budget(reward_calls=2))
    search = ParticleFiltering(
        particles=2,
        reward=ProcessRewardModel(),
        step=StepConfig(delimiter="|", max_tokens=20, max_steps=5),
    )
    ranked = await search.run(ctx, [])
    assert ranked and ranked[0].answer == "4"  # it answered from what it had
    assert len(prm.pooled) == 2 and ctx.ledger.spent.reward_calls == 2
    events = ctx.trace.events
    refused = [i for i, e in enumerate(events) if e.status == "refused"]
    assert refused and all(events[i].reward and events[i].limit == "reward_calls" for i in refused)
    later_steps = [e for e in events[refused[0] :] if e.status == "ok" and not e.reward]
    assert later_steps, "generation must go on once the reward model is refused"
    assert ctx.ledger.spent.calls == 2 + sum(1 for e in events if e.status == "ok" and not e.reward)


async def test_pool_needs_a_named_backend_and_keeps_reward_tokens_off_the_token_budget() -> None:
    prm = ScriptedBackend(lambda request, index: "", pool_script=tagged_rows)
    ctx = reward_context(ScriptedBackend(lambda r, i: ""), prm, Budget(tokens=5))
    request = PoolingRequest(prompt="a long prompt of many words 2 + 2 = 4 <extra_0>")
    result = await ctx.pool("prm", request)
    assert result.rows == ((0.1, 0.9),)
    # The reward model read 12 tokens; the generator's budget of 5 is untouched.
    assert ctx.trace.events[-1].prompt_tokens == 12 and ctx.ledger.spent.total_tokens == 0
    with pytest.raises(BackendError, match=r"no backend named 'judge'.*orm, prm"):
        await ctx.pool("judge", request)


# -- the process reward model ----------------------------------------------------------------


async def test_prm_request_carries_step_tags_and_rows_map_to_steps() -> None:
    prm = ScriptedBackend(lambda request, index: "", pool_script=tagged_rows)
    ctx = reward_context(ScriptedBackend(lambda r, i: ""), prm)
    three = partial("2 + 2 = 4\n\n", "4 + 1 = 6\n\n", "so 2 + 2 = 4")
    two = partial("2 + 2 = 5\n\n", "2 + 2 = 4\n\n")
    scored = await ProcessRewardModel().score_partials(ctx, [three, two])
    assert scored[0].rewards == (0.9, 0.2, 0.9) and scored[1].rewards == (0.2, 0.9)
    # A causal model: the longest prefix's rows give every shorter prefix its reward.
    assert len(prm.pooled) == 2 and ctx.ledger.spent.reward_calls == 2
    request = prm.pooled[0]
    assert request.task == "token_classify" and request.messages is not None
    system, user, assistant = request.messages
    assert system.role == "system" and "step by step" in system.content
    assert user.content == QUESTION and assistant.role == "assistant"
    assert assistant.content == "2 + 2 = 4<extra_0>4 + 1 = 6<extra_0>so 2 + 2 = 4<extra_0>"
    # Steps scored before keep their reward; only the new one is asked for.
    grown = scored[1].model_copy(update={"steps": (*scored[1].steps, "7 = 7")})
    [again] = await ProcessRewardModel().score_partials(ctx, [grown])
    assert again.rewards == (0.2, 0.9, 0.2) and len(prm.pooled) == 3


async def test_prm_whole_prefix_templates_and_bad_row_counts() -> None:
    prm = ScriptedBackend(lambda request, index: "", pool_script=lambda r: [[0.3, 0.7]])
    ctx = reward_context(ScriptedBackend(lambda r, i: ""), prm)
    whole = ProcessRewardModel(whole_prefix=True, template="Q: {question}\nA: {solution}")
    scored = await whole.score_partials(ctx, [partial("a\n\n", "b")])
    assert scored[0].rewards == (0.7, 0.7) and len(prm.pooled) == 2  # one call per prefix
    assert prm.pooled[1].prompt == f"Q: {QUESTION}\nA: a\n\nb<extra_0>"
    with pytest.raises(BackendError, match=r"/pooling answered 1 rows where 2 were expected"):
        await ProcessRewardModel().score_partials(ctx, [partial("a\n\n", "b")])
    with pytest.raises(ValueError, match="unknown placeholder"):
        ProcessRewardModel(template="{steps}")


# -- the outcome reward model ----------------------------------------------------------------


async def test_orm_reads_the_positive_label_of_classify() -> None:
    def rows(request: PoolingRequest) -> list[list[float]]:
        assert request.messages is not None
        return [[0.1, 0.9]] if "= 4" in request.messages[-1].content else [[0.6, 0.4]]

    orm = ScriptedBackend(lambda request, index: "", pool_script=rows)
    ctx = reward_context(ScriptedBackend(lambda r, i: ""), orm)
    good, bad = Candidate(text="2 + 2 = 4"), Candidate(text="2 + 2 = 5")
    assert await OutcomeRewardModel().score(ctx, [good, bad]) == [0.9, 0.4]
    assert await OutcomeRewardModel(positive=0).score(ctx, [good]) == [0.1]
    assert [r.task for r in orm.pooled] == ["classify"] * 3
    assert orm.pooled[0].messages is not None and orm.pooled[0].messages[-1].content == good.text
    ranked = await BestOfN(inputs=("x",), inner=None, scorer=OutcomeRewardModel()).run(
        ctx, [bad, good]
    )
    assert ranked[0].id == good.id and ctx.ledger.spent.reward_calls == 5
    with pytest.raises(BackendError, match="no positive label at index 2"):
        await OutcomeRewardModel(positive=2).score(ctx, [good])


async def test_orm_refused_by_the_budget_leaves_best_of_n_unranked() -> None:
    orm = ScriptedBackend(lambda request, index: "", pool_script=lambda r: [[0.5, 0.5]])
    ctx = reward_context(ScriptedBackend(lambda r, i: ""), orm, Budget(reward_calls=1))
    with pytest.raises(BudgetExhausted):
        await OutcomeRewardModel().score(ctx, [Candidate(text="a"), Candidate(text="b")])
    assert len(orm.pooled) == 1 and ctx.ledger.spent.reward_calls == 1


# -- the vLLM client, over a mock transport ----------------------------------------------------


def mock_backend(handler) -> VLLMBackend:  # type: ignore[no-untyped-def]
    client = httpx.AsyncClient(transport=httpx.MockTransport(handler), base_url="http://test")
    return VLLMBackend("http://test", "prm-model", client=client, backoff_base=0.001)


async def test_vllm_pool_posts_the_task_and_retries_then_names_a_bad_answer() -> None:
    seen: list[tuple[str, dict[str, object]]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.url.path, json.loads(request.content)))
        if len(seen) == 1:
            return httpx.Response(503, json={"message": "busy"})
        if request.url.path == "/classify":
            data = [{"index": 0, "label": "LABEL_1", "probs": [0.25, 0.75], "num_classes": 2}]
            return httpx.Response(200, json={"data": data, "usage": {"prompt_tokens": 4}})
        if len(seen) == 2:
            rows = [[0.1, 0.9], [0.7, 0.3]]
            return httpx.Response(200, json={"data": [{"index": 0, "data": rows}]})
        return httpx.Response(200, json={"data": [{"index": 0, "data": "AAAA"}]})

    backend = mock_backend(handler)
    progress = StreamProgress()
    chat = (Message(role="user", content="q"), Message(role="assistant", content="s<t>"))
    result = await backend.pool(PoolingRequest(messages=chat), progress)
    assert result.rows == ((0.1, 0.9), (0.7, 0.3)) and progress.attempts == 2
    path, body = seen[-1]
    assert path == "/pooling" and body["task"] == "token_classify"
    assert body["model"] == "prm-model" and body["messages"][1]["content"] == "s<t>"  # type: ignore[index]
    classified = await backend.pool(PoolingRequest(task="classify", prompt="q s"))
    assert classified.rows == ((0.25, 0.75),) and classified.prompt_tokens == 4
    assert "task" not in seen[-1][1] and seen[-1][1]["input"] == "q s"
    with pytest.raises(BackendError, match=r"POST /pooling: expected data\[0\]\.data as rows"):
        await backend.pool(PoolingRequest(prompt="x"))


def test_reward_urls_name_their_backends() -> None:
    import typer

    from itc.cli import _named_urls

    assert _named_urls(["http://h:1/v1", "orm=http://h:2"]) == {
        "prm": "http://h:1/v1",
        "orm": "http://h:2",
    }
    assert _named_urls(["http://h:1/?a=b"]) == {"prm": "http://h:1/?a=b"}
    with pytest.raises(typer.Exit):
        _named_urls(["http://a", "prm=http://b"])


# -- a real vLLM pooling server ----------------------------------------------------------------

STEP_TAG = "<file_sep>"
"""A special token of SmolLM2 that text never produces: the bundled model's step tag."""


class PoolingServers:
    """SmolLM2 with the pooling runner, one server at a time: vLLM 0.32 serves one pooling
    task per server (`/classify` answers 501 on a token-classification server), so the PRM and
    ORM tests run one after the other, each on its own server."""

    def __init__(self, step_tag_id: int) -> None:
        self.step_tag_id = step_tag_id
        self.task: str | None = None
        self.server = None

    def url(self, task: str) -> str:
        from itc.backends.local.server import ManagedServer, pooling_args

        if self.task != task or self.server is None:
            self.stop()
            tag = self.step_tag_id if task == "token_classify" else None
            kv = ["--kv-cache-memory-bytes", str(256 << 20)]  # two other servers share the box
            self.server = ManagedServer(
                "smollm2-135m",
                extra_args=[*pooling_args(tag), *kv],
                startup_timeout=900,  # ~60 s alone; minutes beside a running benchmark
            )
            self.task = task
            asyncio.run(self.server.start())
        return self.server.base_url

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
        self.server = self.task = None


@pytest.fixture(scope="module")
def pooling_servers() -> Iterator[PoolingServers]:
    from itc.backends.local.environment import cache_root, server_env_dir
    from itc.backends.local.models import verify_manifest

    model = cache_root() / "models" / "smollm2-135m"
    if not (server_env_dir() / "bin" / "python").exists() or verify_manifest(model):
        pytest.skip("no local vLLM environment and SmolLM2 model (run `itc setup` first)")
    added = json.loads((model / "tokenizer.json").read_text())["added_tokens"]
    step_tag_id = next(t["id"] for t in added if t["content"] == STEP_TAG)
    servers = PoolingServers(step_tag_id)
    try:
        yield servers
    finally:
        servers.stop()


@pytest.fixture
def prm_url(pooling_servers: PoolingServers) -> str:
    """A token-classification server keeping the step-tag rows (sync: started off the loop)."""
    return pooling_servers.url("token_classify")


@pytest.fixture
def orm_url(pooling_servers: PoolingServers) -> str:
    return pooling_servers.url("classify")


def real_context(backend: VLLMBackend) -> NodeContext:
    problem = Problem(id="real", prompt="Tom has 3 apples and buys 4 more. How many?")
    runtime = Runtime(backend=backend, backends={"prm": backend, "orm": backend})
    return NodeContext(problem, runtime, Ledger(Budget()), Trace(problem_id="real"))


@pytest.mark.vllm
async def test_real_prm_reads_one_row_per_step_tag(
    prm_url: str, pooling_servers: PoolingServers
) -> None:
    async with VLLMBackend(prm_url) as backend:
        assert await backend.tokenize(STEP_TAG) == [pooling_servers.step_tag_id]
        ctx = real_context(backend)
        steps = ("Tom has 3 apples.\n\n", "He buys 4 more: 3 + 4 = 7.\n\n", "The answer is 7.")
        prm = ProcessRewardModel(step_tag=STEP_TAG, system=None)
        [scored] = await prm.score_partials(ctx, [partial(*steps)])
        assert len(scored.rewards) == 3 and all(0.0 <= r <= 1.0 for r in scored.rewards)
        # The raw rows: [p_negative, p_positive] per tag, probabilities summing to one.
        raw = await backend.pool(prm_request(prm, ctx, steps))
        assert len(raw.rows) == 3 and raw.prompt_tokens > 0
        assert all(len(row) == 2 and math.isclose(sum(row), 1.0, abs_tol=1e-4) for row in raw.rows)
        assert scored.rewards == pytest.approx(tuple(row[1] for row in raw.rows), abs=1e-4)
        whole = ProcessRewardModel(step_tag=STEP_TAG, system=None, whole_prefix=True)
        [one] = await whole.score_partials(ctx, [partial(*steps[:2])])
        assert len(one.rewards) == 2 and all(0.0 <= r <= 1.0 for r in one.rewards)
        assert ctx.ledger.spent.reward_calls == 3 and ctx.ledger.spent.total_tokens == 0
        assert all(e.reward and e.prompt_tokens > 0 for e in ctx.trace.events)
        # A step tag the model splits into several tokens gets no rows: one clear error.
        with pytest.raises(BackendError, match="answered 0 rows where 3 were expected"):
            await ProcessRewardModel().score_partials(ctx, [partial(*steps)])


def prm_request(prm: ProcessRewardModel, ctx: NodeContext, steps: tuple[str, ...]):  # type: ignore[no-untyped-def]
    return PoolingRequest(
        messages=(
            Message(role="user", content=ctx.problem.question),
            Message(role="assistant", content=prm.tagged(steps)),
        )
    )


@pytest.mark.vllm
async def test_real_orm_reads_classify(orm_url: str) -> None:
    async with VLLMBackend(orm_url) as backend:
        ctx = real_context(backend)
        candidates = [Candidate(text="3 + 4 = 7. The answer is 7."), Candidate(text="It is 9.")]
        scores = await OutcomeRewardModel().score(ctx, candidates)
        assert len(scores) == 2 and all(0.0 <= s <= 1.0 for s in scores)
        raw = await backend.pool(PoolingRequest(task="classify", prompt="3 + 4 = 7"))
        assert len(raw.rows) == 1 and len(raw.rows[0]) == 2
        assert math.isclose(sum(raw.rows[0]), 1.0, abs_tol=1e-4)
        assert ctx.ledger.spent.reward_calls == 2
        # A classify server is not a PRM: the error names the endpoint and the server's reason.
        with pytest.raises(BackendError, match="/pooling -> HTTP 400"):
            await ProcessRewardModel().score_partials(ctx, [partial("a\n\n")])
