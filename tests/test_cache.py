"""The SQLite response cache replays reproducible requests exactly, and only those."""

from __future__ import annotations

from itc.backends.cache import CachedBackend
from itc.backends.scripted import ScriptedBackend
from itc.config import PipelineConfig
from itc.planner.executor import Planner
from itc.runtime.context import Runtime
from itc.strategies.generate import Generate
from itc.strategies.self_consistency import SelfConsistency
from tests.helpers import PROBLEM, answers


async def test_replays_seeded_requests_and_charges_the_same_usage(tmp_path) -> None:
    pipeline = PipelineConfig.single(SelfConsistency(inner=Generate(n=2, seed=5), repeats=3))
    scripted = ScriptedBackend(answers("the answer is 4", "so answer is 5 ok", "answer is 4"))
    first_backend = CachedBackend(scripted, tmp_path / "cache.sqlite")
    first = await Planner(Runtime(backend=first_backend)).run(pipeline, PROBLEM)
    assert first_backend.misses == 3 and len(scripted.requests) == 3
    await first_backend.aclose()

    fresh = ScriptedBackend(answers("different text entirely"))
    replay_backend = CachedBackend(fresh, tmp_path / "cache.sqlite")
    replay = await Planner(Runtime(backend=replay_backend)).run(pipeline, PROBLEM)
    assert replay_backend.hits == 3 and fresh.requests == []
    assert (replay.answer, replay.text) == (first.answer, first.text)
    assert replay.usage.model_dump(exclude={"wall_time"}) == first.usage.model_dump(
        exclude={"wall_time"}
    )


async def test_unseeded_sampling_is_never_cached(tmp_path) -> None:
    scripted = ScriptedBackend(answers("a", "b"))
    backend = CachedBackend(scripted, tmp_path / "c.sqlite")
    pipeline = PipelineConfig.single(Generate(n=1, seed=None, temperature=0.8))
    planner = Planner(Runtime(backend=backend))
    await planner.run(pipeline, PROBLEM)
    await planner.run(pipeline, PROBLEM)
    assert backend.hits == 0 and len(scripted.requests) == 2


async def test_samples_stored_with_logprobs_serve_a_vote_that_needs_none(tmp_path) -> None:
    from itc.verifiers.self_certainty import SelfCertainty

    sampler = Generate(n=3, seed=2)
    weighted = PipelineConfig.single(SelfConsistency(inner=sampler, scorer=SelfCertainty()))
    plain = PipelineConfig.single(SelfConsistency(inner=sampler))
    scripted = ScriptedBackend(answers("answer is 4", "answer is 5", "answer is 4"))
    backend = CachedBackend(scripted, tmp_path / "c.sqlite")
    first = await Planner(Runtime(backend=backend)).run(weighted, PROBLEM)
    assert scripted.requests[0].logprobs is True
    replay = await Planner(Runtime(backend=backend)).run(plain, PROBLEM)
    assert backend.hits == 1 and len(scripted.requests) == 1
    assert replay.answer == first.answer == "4"
    # The other way round is a miss: a vote weighted by logprobs needs them in the answer.
    other = CachedBackend(ScriptedBackend(answers("answer is 7")), tmp_path / "d.sqlite")
    await Planner(Runtime(backend=other)).run(plain, PROBLEM)
    await Planner(Runtime(backend=other)).run(weighted, PROBLEM)
    assert other.hits == 0 and other.misses == 2


async def test_the_cache_reports_its_servers_prefix_cache_counters(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from itc.bench.runner import _prefix_cache_counters

    class Metered(ScriptedBackend):
        async def metrics(self) -> dict[str, float]:
            return {"vllm:prefix_cache_hits_total": 30.0, "vllm:prefix_cache_queries_total": 40.0}

    cached = CachedBackend(Metered(answers("4")), tmp_path / "cache.sqlite")
    assert await _prefix_cache_counters(cached) == (30.0, 40.0)
    plain = CachedBackend(ScriptedBackend(answers("4")), tmp_path / "other.sqlite")
    assert await _prefix_cache_counters(plain) is None  # a server with no counters: no rate
    await cached.aclose()
    await plain.aclose()
