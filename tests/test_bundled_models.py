"""The larger bundled model, started by name, answers a real problem (smoke test)."""

from __future__ import annotations

import asyncio

import pytest

from itc.backends.connect import connect
from itc.backends.local.models import MODELS
from itc.config import PipelineConfig
from itc.planner.executor import Planner
from itc.runtime.context import Runtime
from itc.strategies.generate import Generate
from itc.types import Problem
from itc.verifiers.math import MathGrader

pytestmark = pytest.mark.vllm


def test_qwen_by_name_serves_and_solves_a_word_problem() -> None:
    assert "qwen2.5-coder-0.5b" in MODELS

    async def go() -> tuple[str, str | None]:
        async with connect(model="qwen2.5-coder-0.5b") as backend, MathGrader() as grader:
            pipeline = PipelineConfig.single(
                Generate(temperature=0.0, max_tokens=200,
                         template="{question}\nThink step by step, then finish with: "
                         "The answer is <number>.")
            )
            result = await Planner(Runtime(backend=backend, grader=grader)).run(
                pipeline,
                Problem(id="apples", prompt="Tom has 3 boxes of 4 apples and eats 5 apples. "
                        "How many apples are left?"),
            )
            return backend.model, result.answer

    model, answer = asyncio.run(go())
    assert model == "qwen2.5-coder-0.5b"
    assert answer == "7"

