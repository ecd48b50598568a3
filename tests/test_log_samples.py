"""--log-samples: every prompt, sample and judged candidate, losers included, in the record."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from itc.backends.scripted import ScriptedBackend
from itc.bench.datasets import load_dataset
from itc.bench.runner import run_benchmark
from itc.config import PipelineConfig
from itc.planner.executor import Planner
from itc.runtime.context import Runtime
from itc.strategies.best_of_n import BestOfN
from itc.strategies.generate import Generate
from itc.strategies.self_consistency import SelfConsistency

from .helpers import PROBLEM, answers

ROOT = Path(__file__).resolve().parents[1]


def rows_in(folder: Path, pattern: str) -> list[dict]:
    return [json.loads(line) for line in next(folder.glob(pattern)).read_text().splitlines()]


async def test_traces_keep_prompts_samples_and_the_losers_only_when_asked() -> None:
    pipeline = PipelineConfig.single(BestOfN(inner=Generate(n=3), keep=1))
    texts = ("answer is 4", "answer is 5 then", "it is 6 or so on")
    logged = await Planner(Runtime(backend=ScriptedBackend(answers(*texts)), log_samples=True)).run(
        pipeline, PROBLEM
    )
    call = logged.trace.events[0]
    assert call.prompt == [{"role": "user", "content": PROBLEM.prompt}]
    assert [s.text for s in call.samples or []] == list(texts)
    judged = logged.trace.candidates
    assert len(judged) == 3 and sum(c.kept for c in judged) == 1
    assert all("self_certainty" in c.scores for c in judged)
    assert len(logged.candidates) == 1  # the output itself is unchanged
    plain = await Planner(Runtime(backend=ScriptedBackend(answers(*texts)))).run(pipeline, PROBLEM)
    assert plain.trace.events[0].samples is None and plain.trace.candidates == []


async def test_bench_rows_carry_every_voter_with_log_samples(tmp_path: Path) -> None:
    data = load_dataset("synthetic", count=2, difficulty=1)
    pipeline = PipelineConfig.single(SelfConsistency(inner=Generate(n=4)), name="sc")
    backend = ScriptedBackend(answers("answer is 1", "answer is 2", "answer is 1", "none"))
    await run_benchmark([pipeline], data, backend, output_dir=tmp_path, log_samples=True)
    for row in rows_in(tmp_path, "sc-*.jsonl"):
        assert len(row["samples"]) == 4  # every voter, not just one per answer group
        assert [s["kept"] for s in row["samples"]].count(True) == 1
        assert len(row["trace"][0]["samples"]) == 4 and row["trace"][0]["prompt"]


@pytest.mark.vllm
def test_log_samples_from_the_cli_on_the_real_server(vllm_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    done = subprocess.run(
        [
            sys.executable, "-m", "itc.cli", "bench", str(ROOT / "examples/best_of_n.yaml"),
            "--dataset", "synthetic", "--count", "1", "--difficulty", "1", "--log-samples",
            "--base-url", vllm_server.base_url, "--output-dir", str(tmp_path), "--no-report",
        ],
        capture_output=True, text=True, cwd=ROOT, timeout=600,
    )
    assert done.returncode == 0, done.stderr
    row = rows_in(tmp_path, "best-of-4-judge-*.jsonl")[0]
    sampled = next(e for e in row["trace"] if e["node"] == "sample")
    assert len(sampled["samples"]) == 4 and all(s["text"] for s in sampled["samples"])
    judged = [c for c in row["samples"] if c["node"] == "rank"]
    assert len(judged) == 4 and [c["kept"] for c in judged].count(True) == 1
    assert all(0.0 <= c["scores"]["llm_judge"] <= 1.0 for c in judged)
