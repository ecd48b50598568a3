"""A response cache on disk (SQLite): identical requests replay exactly.

Only reproducible requests are cached: greedy ones (temperature 0) and seeded ones. The
planner gives every rollout of a node its own seed, so N samples of one prompt are N
distinct entries, and a rerun of a benchmark replays every sample it already drew. A replay
reports the original usage, so the planner charges budgets exactly as on the first run.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

from itc.backends.base import (
    Backend,
    GenerationRequest,
    GenerationResult,
    PoolingRequest,
    PoolingResult,
    StreamProgress,
)


class CachedBackend:
    def __init__(self, inner: Backend, path: str | Path) -> None:
        self.inner = inner
        self.model = inner.model
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, result TEXT NOT NULL)"
        )
        self._db.commit()
        self.hits = 0
        self.misses = 0

    def _key(self, request: GenerationRequest) -> str | None:
        if request.temperature > 0 and request.seed is None:
            return None
        payload = {"model": self.inner.model, "request": key_fields(request)}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    def _lookup(self, request: GenerationRequest) -> str | None:
        """A stored answer to `request`, or to the same request with logprobs: the same seeded
        samples, with more detail than this one needs."""
        for candidate in (request, request.model_copy(update={"logprobs": True})):
            key = self._key(candidate)
            if key is None:
                return None
            row = self._db.execute("SELECT result FROM responses WHERE key = ?", (key,)).fetchone()
            if row is not None:
                return str(row[0])
        return None

    async def generate(
        self, request: GenerationRequest, progress: StreamProgress | None = None
    ) -> GenerationResult:
        key = self._key(request)
        if key is not None:
            row = self._lookup(request)
            if row is not None:
                self.hits += 1
                result = GenerationResult.model_validate_json(row)
                if progress is not None:
                    progress.attempts += 1
                    progress.prompt_tokens = result.prompt_tokens
                    progress.completion_tokens += result.completion_tokens
                    progress.prefilled.set()
                return result
        self.misses += 1
        result = await self.inner.generate(request, progress)
        if key is not None:
            self._db.execute(
                "INSERT OR REPLACE INTO responses (key, result) VALUES (?, ?)",
                (key, result.model_copy(update={"latency": 0.0}).model_dump_json()),
            )
            self._db.commit()
        return result

    async def count_prompt_tokens(self, request: GenerationRequest) -> int:
        return await self.inner.count_prompt_tokens(request)

    async def max_model_len(self) -> int:
        return await self.inner.max_model_len()

    async def pool(
        self, request: PoolingRequest, progress: StreamProgress | None = None
    ) -> PoolingResult:
        """Reward-model calls are not cached: they go to the inner backend."""
        return await self.inner.pool(request, progress)

    async def metrics(self) -> dict[str, float]:
        """The inner server's counters (calls replayed from the cache add nothing to them)."""
        metrics = getattr(self.inner, "metrics", None)
        if metrics is None:
            raise NotImplementedError(f"{type(self.inner).__name__} keeps no metrics")
        return await metrics()

    async def aclose(self) -> None:
        self._db.close()
        await self.inner.aclose()


KEY_NEUTRAL_DEFAULTS = {"logprobs": False, "prompt_ids": None, "model": None}
"""Fields added after caches were first written: left out of the key while at these
defaults, so entries written before them still replay."""


def key_fields(request: GenerationRequest) -> dict[str, object]:
    """The request as a cache key: everything that shapes the answer, not `stream` (how
    the answer travels)."""
    dumped = request.model_dump(mode="json", exclude={"stream"})
    for name, default in KEY_NEUTRAL_DEFAULTS.items():
        if getattr(request, name) == default:
            dumped.pop(name)
    return dumped
