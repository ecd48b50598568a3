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
