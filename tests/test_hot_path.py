"""The hot path: prompts rendered once to token ids, calls answered in one response unless
they must stream, logprobs only when asked, counts inside the in-flight limit, and safe
charges for calls cut while not streamed. Unit tests on scripted transports; the tests
marked `vllm` check the same behaviour against the real server."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from itc.backends.base import GenerationRequest, GenerationResult, StreamProgress
from itc.backends.cache import CachedBackend, key_fields
from itc.backends.scripted import ScriptedBackend
from itc.backends.vllm import RenderCache, VLLMBackend
from itc.runtime.budget import BudgetExhausted, Ledger
from itc.runtime.context import NodeContext, Runtime
from itc.runtime.trace import Trace
from itc.types import Budget, Message
from tests.helpers import PROBLEM, answers, context

CHAT = (Message(role="user", content="What is 2 + 3?"),)
IDS = [1, 9690, 198, 2683, 359, 2, 198, 1, 520, 9531, 198]


class FakeServer:
    """A vLLM-shaped MockTransport handler that records every request it sees."""

    def __init__(self, *, hang: asyncio.Event | None = None, failures: list[Any] | None = None):
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.hang = hang
        self.failures = failures or []
        self.generating = asyncio.Event()

    def paths(self) -> list[str]:
        return [path for path, _ in self.calls]

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"data": [{"id": "m", "max_model_len": 2048}]})
        body = json.loads(request.content)
        self.calls.append((request.url.path, body))
        if request.url.path == "/tokenize":
            await asyncio.sleep(0.01)
            return httpx.Response(200, json={"count": len(IDS), "tokens": IDS})
        self.generating.set()
        if self.failures:
            failure = self.failures.pop(0)
            if isinstance(failure, Exception):
                raise failure
            return httpx.Response(failure, json={"message": "busy"})
        if self.hang is not None:
            await self.hang.wait()
        return httpx.Response(200, json=self.answer(request.url.path, body))

    @staticmethod
    def answer(path: str, body: dict[str, Any]) -> dict[str, Any]:
        choices = []
        for index in range(body["n"]):
            ids = [100 + index, 101, 102][: body["max_tokens"]]
            choice: dict[str, Any] = {"index": index, "finish_reason": "length",
                                      "stop_reason": None, "token_ids": ids}
            logprobs = None
            if path == "/v1/completions":
                choice["text"] = "".join(f"t{i}" for i in ids)
                choice["prompt_token_ids"] = body["prompt"]
                if "logprobs" in body:
                    # As vLLM: the sampled token first, then the top k (here 2 extra).
                    logprobs = {"token_logprobs": [-0.5] * len(ids),
                                "top_logprobs": [{"sampled": -0.5, "Yes": -0.7, "No": -1.2}
                                                 for _ in ids]}
            else:
                choice["message"] = {"role": "assistant",
                                     "content": "".join(f"t{i}" for i in ids)}
            choice["logprobs"] = logprobs
            choices.append(choice)
        total = sum(len(c["token_ids"]) for c in choices)
        prompt = body.get("prompt")
        prompt_tokens = len(prompt) if isinstance(prompt, list) else len(IDS)
        data: dict[str, Any] = {"choices": choices, "usage": {"prompt_tokens": prompt_tokens,
                                                              "completion_tokens": total}}
        if path == "/v1/chat/completions":
            data["prompt_token_ids"] = IDS
        return data


def backend_for(server: FakeServer, **options: Any) -> VLLMBackend:
    client = httpx.AsyncClient(transport=httpx.MockTransport(server), base_url="http://test")
    return VLLMBackend("http://test", "m", client=client, backoff_base=0.001, **options)


def ctx_for(backend: Any, budget: Budget | None = None, max_in_flight: int = 8) -> NodeContext:
    runtime = Runtime(backend=backend, max_in_flight=max_in_flight)
    return NodeContext(PROBLEM, runtime, Ledger(budget or Budget()), Trace(problem_id="p1"))


# -- wire shape --------------------------------------------------------------------------------


async def test_chat_is_rendered_once_and_sent_as_ids_without_stream_or_logprobs() -> None:
    server = FakeServer()
    ctx = ctx_for(backend_for(server), Budget(tokens=10_000))  # a token budget needs counts
    request = GenerationRequest(messages=CHAT, n=2, max_tokens=3, seed=1)
    first = await ctx.generate(request)
    await ctx.generate(request)
    assert server.paths() == ["/tokenize", "/v1/completions", "/v1/completions"]
    body = server.calls[1][1]
    assert body["prompt"] == IDS and body["return_token_ids"] is True
    assert "stream" not in body and "logprobs" not in body and "messages" not in body
    assert first.prompt_ids == tuple(IDS) and first.prompt_tokens == len(IDS)
    assert first.choices[1].token_ids == (101, 101, 102)
    assert first.choices[0].token_logprobs is None and first.choices[0].completion_tokens == 3
    assert ctx.ledger.spent.prompt_tokens == 2 * len(IDS)


async def test_with_no_token_budget_a_chat_goes_out_uncounted_and_its_ids_are_kept() -> None:
    server = FakeServer()
    ctx = ctx_for(backend_for(server), Budget(calls=5))
    request = GenerationRequest(messages=CHAT, n=2, max_tokens=3, seed=1)
    first = await ctx.generate(request)
    await ctx.generate(request)
    # No round trip before the first call; the ids the server returned serve the second.
    assert server.paths() == ["/v1/chat/completions", "/v1/completions"]
    assert server.calls[1][1]["prompt"] == IDS
    assert ctx.ledger.spent.prompt_tokens == 2 * len(IDS) == 2 * first.prompt_tokens


async def test_a_long_prompt_is_counted_when_it_may_not_fit_the_context() -> None:
    server = FakeServer()
    ctx = ctx_for(backend_for(server))
    long = (Message(role="user", content="word " * 600),)  # its bound exceeds 2048 - max_tokens
    await ctx.generate(GenerationRequest(messages=long, max_tokens=100))
    assert server.paths() == ["/tokenize", "/v1/completions"]


async def test_a_request_carrying_ids_needs_no_round_trip() -> None:
    server = FakeServer()
    ctx = ctx_for(backend_for(server))
    ids = (5, 6, 7, 8)
    result = await ctx.generate(GenerationRequest(prompt_ids=ids, max_tokens=2))
    assert server.paths() == ["/v1/completions"] and server.calls[0][1]["prompt"] == list(ids)
    assert ctx.trace.events[0].prompt_tokens == len(ids) == ctx.ledger.spent.prompt_tokens
    # The chain continues exactly: prompt ids plus the sampled ids.
    longer = (*ids, *(result.choices[0].token_ids or ()))
    await ctx.generate(GenerationRequest(prompt_ids=longer, max_tokens=2))
    assert server.paths() == ["/v1/completions"] * 2 and server.calls[1][1]["prompt"] == [
        5, 6, 7, 8, 100, 101
    ]


async def test_logprobs_only_when_asked_and_top_k_as_the_chat_api_gives_it() -> None:
    server = FakeServer()
    backend = backend_for(server)
    ctx = ctx_for(backend, Budget(tokens=10_000))
    plain = await ctx.generate(GenerationRequest(prompt_ids=(1, 2), max_tokens=2))
    assert "logprobs" not in server.calls[-1][1] and plain.choices[0].token_logprobs is None
    scored = await ctx.generate(GenerationRequest(prompt_ids=(1, 2), max_tokens=2, logprobs=True))
    assert server.calls[-1][1]["logprobs"] == 0
    assert scored.choices[0].token_logprobs == (-0.5, -0.5)
    assert scored.choices[0].top_logprobs is None  # k = 0: no alternatives
    judged = await ctx.generate(GenerationRequest(messages=CHAT, max_tokens=1, top_logprobs=2))
    assert server.calls[-1][1]["logprobs"] == 2  # top_logprobs alone implies logprobs
    assert judged.choices[0].top_logprobs == ({"sampled": -0.5, "Yes": -0.7},)


async def test_a_direct_chat_call_uses_the_chat_api_and_remembers_the_rendering() -> None:
    server = FakeServer()
    backend = backend_for(server)
    result = await backend.generate(GenerationRequest(messages=CHAT, max_tokens=2))
    assert server.paths() == ["/v1/chat/completions"] and result.prompt_ids == tuple(IDS)
    assert await backend.count_prompt_tokens(GenerationRequest(messages=CHAT)) == len(IDS)
    assert server.paths() == ["/v1/chat/completions"]  # the server's ids were kept


async def test_streaming_only_when_asked_and_without_per_chunk_usage() -> None:
    server = FakeServer()
    backend = backend_for(server)
    ids = (1, 2, 3)
    body = backend._wire(GenerationRequest(prompt_ids=ids, stream=True), ids)[1]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    scoring = GenerationRequest(prompt="a b", echo=True, max_tokens=0, stream=True)
    assert "stream" not in backend._wire(scoring, None)[1]
    # A chat not rendered yet streams through the chat API, with usage in every chunk.
    path, body = backend._wire(GenerationRequest(messages=CHAT, stream=True), None)
    assert path == "/v1/chat/completions" and body["stream_options"]["continuous_usage_stats"]


async def test_a_scoring_request_on_ids_echoes_through_completions() -> None:
    server = FakeServer()
    backend = backend_for(server)
    await backend.generate(GenerationRequest(prompt_ids=(3, 4), echo=True, max_tokens=1,
                                             prompt_logprobs=1))
    path, body = server.calls[0]
    assert path == "/v1/completions" and body["prompt"] == [3, 4] and body["echo"] is True
    assert "return_token_ids" not in body  # vLLM would not detokenise the echo with it


# -- the render cache --------------------------------------------------------------------------


def test_render_cache_is_a_bounded_lru() -> None:
    cache = RenderCache(2)
    cache.put("a", (1,))
    cache.put("b", (2,))
    assert cache.get("a") == (1,)  # a is now the most recent
    cache.put("c", (3,))
    assert len(cache) == 2 and cache.get("b") is None and cache.get("a") == (1,)
    with pytest.raises(ValueError):
        RenderCache(0)


async def test_backend_render_cache_is_bounded_and_shares_concurrent_round_trips() -> None:
    server = FakeServer()
    backend = backend_for(server, render_cache_size=2)
    prompts = [GenerationRequest(prompt=f"prompt {i}") for i in range(3)]
    # Eight concurrent counts of one prompt make one round trip.
    await asyncio.gather(*(backend.count_prompt_tokens(prompts[0]) for _ in range(8)))
    assert server.paths().count("/tokenize") == 1
    for request in prompts:
        await backend.count_prompt_tokens(request)
    assert server.paths().count("/tokenize") == 3 and len(backend._rendered) == 2
    await backend.count_prompt_tokens(prompts[0])  # evicted: counted again
    assert server.paths().count("/tokenize") == 4


# -- counting inside the in-flight limit -------------------------------------------------------


class SlotWatcher(ScriptedBackend):
    """Records how many calls are between counting and finishing at any moment."""

    def __init__(self, script: Callable[[GenerationRequest, int], str]) -> None:
        super().__init__(script, seconds_per_token=0.002)
        self.active = 0
        self.peak = 0
        self.slots_free_at_count: list[bool] = []
        self.runtime: Runtime | None = None

    async def count_prompt_tokens(self, request: GenerationRequest) -> int:
        assert self.runtime is not None
        self.slots_free_at_count.append(not self.runtime.slots.locked())
        self.active += 1
        self.peak = max(self.peak, self.active)
        await asyncio.sleep(0.005)  # a tokenizer round trip
        return await super().count_prompt_tokens(request)

    async def generate(
        self, request: GenerationRequest, progress: StreamProgress | None = None
    ) -> GenerationResult:
        try:
            return await super().generate(request, progress)
        finally:
            self.active -= 1


async def test_prompts_are_counted_inside_the_in_flight_limit() -> None:
    backend = SlotWatcher(answers("one two three"))
    ctx = ctx_for(backend, Budget(tokens=10**6), max_in_flight=2)
    backend.runtime = ctx.runtime
    requests = [GenerationRequest(prompt=f"question {i}", max_tokens=3) for i in range(6)]
    await asyncio.gather(*(ctx.generate(r) for r in requests))
    assert backend.peak == 2  # never more counts + calls at once than the limit
    one_slot = ctx_for(backend, Budget(tokens=10**6), max_in_flight=1)
    backend.runtime = one_slot.runtime
    await one_slot.generate(requests[0])
    assert backend.slots_free_at_count[-1] is False  # the count held the only slot


# -- charging calls that were cut ----------------------------------------------------------------


async def test_a_cancelled_unstreamed_call_is_charged_its_whole_reservation() -> None:
    server = FakeServer(hang=asyncio.Event())
    ctx = ctx_for(backend_for(server))
    task = asyncio.create_task(ctx.generate(GenerationRequest(prompt_ids=(1, 2, 3), n=2,
                                                              max_tokens=50)))
    await server.generating.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    event = ctx.trace.events[0]
    assert event.status == "cancelled" and "charged its whole reservation" in (event.detail or "")
    assert ctx.ledger.spent.completion_tokens == 100 and ctx.ledger.spent.prompt_tokens == 3


async def test_an_unstreamed_call_cut_at_the_deadline_is_charged_its_reservation() -> None:
    server = FakeServer(hang=asyncio.Event())
    ctx = ctx_for(backend_for(server), Budget(wall_time=0.2))
    with pytest.raises(BudgetExhausted, match="wall_time"):
        await ctx.generate(GenerationRequest(prompt_ids=(1, 2, 3), max_tokens=40))
    assert ctx.ledger.spent.completion_tokens == 40
    assert "charged its whole reservation" in (ctx.trace.events[0].detail or "")


async def test_a_streamed_call_cut_short_is_charged_what_it_produced() -> None:
    text = " ".join(["word"] * 200)
    for streams, expected_full in ((True, False), (False, True)):
        backend = ScriptedBackend(answers(text), seconds_per_token=0.001,
                                  meter_unstreamed=False)
        ctx = ctx_for(backend).child("inner", streams=streams)
        task = asyncio.create_task(ctx.generate(GenerationRequest(prompt="q", max_tokens=200)))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert backend.requests[0].stream is streams
        spent = ctx.ledger.spent.completion_tokens
        assert (spent == 200) is expected_full and spent > 0


async def test_a_lost_unstreamed_attempt_is_charged_its_worst_case_but_a_refused_one_not() -> None:
    lost = FakeServer(failures=[httpx.ReadError("connection reset")])
    ctx = ctx_for(backend_for(lost))
    result = await ctx.generate(GenerationRequest(prompt_ids=(1, 2), n=2, max_tokens=3))
    assert ctx.ledger.spent.completion_tokens == 2 * 3 + result.completion_tokens
    assert "worst case" in (ctx.trace.events[0].detail or "")
    busy = FakeServer(failures=[503, 429])
    ctx = ctx_for(backend_for(busy))
    result = await ctx.generate(GenerationRequest(prompt_ids=(1, 2), n=2, max_tokens=3))
    assert ctx.ledger.spent.completion_tokens == result.completion_tokens


async def test_streams_flag_reaches_children_and_prefix_warming_streams() -> None:
    backend = ScriptedBackend(answers("a b"))
    root = ctx_for(backend)
    await root.child("x", streams=True).child("y").generate(GenerationRequest(prompt="q"))
    await root.child("z").generate(GenerationRequest(prompt="q"))
    assert [r.stream for r in backend.requests] == [True, False]
    warm = NodeContext(PROBLEM, Runtime(backend=backend, warm_prefixes=True), Ledger(Budget()),
                       Trace(problem_id="p1"))
    await warm.generate(GenerationRequest(prompt="q"))
    assert backend.requests[-1].stream is True


# -- scripted ids and the response cache -------------------------------------------------------


async def test_scripted_backend_carries_ids_exactly() -> None:
    backend = ScriptedBackend(answers("four five"))
    ctx = context(backend)
    first = await ctx.generate(GenerationRequest(prompt="one two three", max_tokens=5))
    ids = (*(first.prompt_ids or ()), *(first.choices[0].token_ids or ()))
    counted = backend.counted
    second = await ctx.generate(GenerationRequest(prompt_ids=ids, max_tokens=5))
    assert backend.counted == counted  # ids need no count
    assert second.prompt_tokens == 5 and second.prompt_ids == ids
    assert first.choices[0].token_logprobs is None
    scored = await ctx.generate(GenerationRequest(prompt="x", logprobs=True))
    assert scored.choices[0].token_logprobs == (-0.1, -0.1)


async def test_cache_replays_across_stream_and_keys_ids(tmp_path) -> None:  # type: ignore[no-untyped-def]
    scripted = ScriptedBackend(answers("alpha beta", "gamma"))
    cached = CachedBackend(scripted, tmp_path / "c.sqlite")
    request = GenerationRequest(prompt_ids=(1, 2), seed=3, max_tokens=4)
    first = await cached.generate(request)
    replay = await cached.generate(request.model_copy(update={"stream": True}))
    assert cached.hits == 1 and replay.choices == first.choices
    await cached.generate(request.model_copy(update={"prompt_ids": (1, 2, 3)}))
    assert cached.misses == 2
    # Keys of requests that use none of the newer fields are what they were before them.
    chat_request = GenerationRequest(messages=CHAT, seed=1)
    assert key_fields(chat_request) == chat_request.model_dump(
        mode="json", exclude={"stream", "logprobs", "prompt_ids", "model"}
    )
    await cached.aclose()


# -- against the real server ---------------------------------------------------------------------


def recording_backend(base_url: str, model: str) -> tuple[VLLMBackend, list[str]]:
    paths: list[str] = []

    async def record(request: httpx.Request) -> None:
        if request.method == "POST":
            paths.append(request.url.path)

    client = httpx.AsyncClient(base_url=base_url, timeout=120.0,
                               event_hooks={"request": [record]})
    return VLLMBackend(base_url, model, client=client), paths


@pytest.mark.vllm
async def test_real_ids_path_gives_the_chat_endpoints_seeded_samples(vllm_server) -> None:  # type: ignore[no-untyped-def]
    backend, paths = recording_backend(vllm_server.base_url, vllm_server.model)
    messages = (Message(role="user", content="Name three colours of the rainbow."),)
    request = GenerationRequest(messages=messages, n=3, max_tokens=24, temperature=0.9, seed=11)
    ctx = ctx_for(backend, Budget(tokens=10_000))  # a token budget: the prompt is counted
    via_ids = await ctx.generate(request)
    assert paths == ["/tokenize", "/v1/completions"]
    assert via_ids.prompt_tokens == len(via_ids.prompt_ids or ())
    assert ctx.ledger.spent.prompt_tokens == via_ids.prompt_tokens
    # The chat endpoint as itc called it before (streamed, with logprobs).
    async with httpx.AsyncClient(base_url=vllm_server.base_url, timeout=120.0) as client:
        body = {"model": vllm_server.model, "messages": [m.model_dump() for m in messages],
                "n": 3, "max_tokens": 24, "temperature": 0.9, "seed": 11, "logprobs": True,
                "stream": True, "stream_options": {"include_usage": True}}
        texts = [""] * 3
        async with client.stream("POST", "/v1/chat/completions", json=body) as response:
            async for line in response.aiter_lines():
                if line.startswith("data:") and line[5:].strip() != "[DONE]":
                    for choice in json.loads(line[5:])["choices"]:
                        texts[choice["index"]] += choice["delta"].get("content") or ""
    assert [c.text for c in via_ids.choices] == texts
    fresh, _ = recording_backend(vllm_server.base_url, vllm_server.model)
    via_chat = await fresh.generate(request)  # no count first: the chat endpoint
    assert [c.text for c in via_chat.choices] == texts
    assert via_chat.prompt_ids == via_ids.prompt_ids
    assert [c.token_ids for c in via_chat.choices] == [c.token_ids for c in via_ids.choices]
    await backend.aclose()
    await fresh.aclose()


@pytest.mark.vllm
async def test_real_ids_extend_exactly_with_no_tokenize_and_logprobs_only_when_asked(
    vllm_server,  # type: ignore[no-untyped-def]
) -> None:
    backend, paths = recording_backend(vllm_server.base_url, vllm_server.model)
    ctx = ctx_for(backend)
    first = await ctx.generate(GenerationRequest(messages=CHAT, max_tokens=12, seed=2))
    assert first.choices[0].token_logprobs is None
    assert len(first.choices[0].token_ids or ()) == first.choices[0].completion_tokens
    ids = (*(first.prompt_ids or ()), *(first.choices[0].token_ids or ()))
    paths.clear()
    second = await ctx.generate(
        GenerationRequest(prompt_ids=ids, max_tokens=8, seed=3, logprobs=True)
    )
    assert paths == ["/v1/completions"]
    assert second.prompt_tokens == len(ids) == ctx.trace.events[-1].prompt_tokens
    assert len(second.choices[0].token_logprobs or ()) == second.choices[0].completion_tokens
    # Streaming the same seeded call gives the same sample, token for token.
    streamed = await ctx.generate(
        GenerationRequest(prompt_ids=ids, max_tokens=8, seed=3, stream=True)
    )
    assert streamed.choices[0].text == second.choices[0].text
    assert streamed.choices[0].token_ids == second.choices[0].token_ids
    assert streamed.choices[0].token_logprobs is None
    await backend.aclose()


@pytest.mark.vllm
async def test_real_top_logprobs_match_the_chat_api(vllm_server) -> None:  # type: ignore[no-untyped-def]
    backend, _ = recording_backend(vllm_server.base_url, vllm_server.model)
    request = GenerationRequest(messages=CHAT, max_tokens=3, temperature=0.0, top_logprobs=3)
    via_chat = await backend.generate(request)  # not rendered yet: the chat endpoint
    await backend.count_prompt_tokens(request)
    via_ids = await backend.generate(request)  # rendered: completions on ids
    assert via_chat.choices[0].text == via_ids.choices[0].text
    assert via_chat.choices[0].top_logprobs is not None
    assert [list(t) for t in via_chat.choices[0].top_logprobs] == [
        list(t) for t in via_ids.choices[0].top_logprobs or ()
    ]
    await backend.aclose()
