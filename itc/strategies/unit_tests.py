"""Ranking code candidates by unit tests the model writes for the task itself."""

from __future__ import annotations

import ast
import asyncio
import builtins
import logging
import re
from collections.abc import Iterable
from typing import Literal

from pydantic import Field, field_validator

from itc.backends.base import GenerationRequest
from itc.nodes import Aggregator, CostBound, StrategyNode, check_template, total
from itc.runtime.budget import BudgetExhausted
from itc.runtime.context import NodeContext
from itc.strategies.generate import Generate
from itc.types import Candidate, Message, Problem
from itc.verifiers.code import build_program, extract_code, run_program

logger = logging.getLogger(__name__)

DEFAULT_TEMPLATE = (
    "Write unit tests for this Python function.\n\n```python\n{question}\n```\n\n"
    "Write 5 assert statements that call `{entry_point}` on typical and edge-case inputs and "
    "check the exact result, one per line, for example:\nassert {entry_point}(...) == ...\n"
    "Write only the assert lines."
)

_ASSERT = re.compile(r"^[ \t]*(?:>>>[ \t]*)?assert\b")
_DOCTEST_MORE = re.compile(r"^[ \t]*\.\.\.(?: |$)")
_MAX_LINES = 8
"""Lines one assert may span (a long literal broken over lines)."""
_BUILTINS = frozenset(dir(builtins))
_ALIAS = "candidate"
"""The function under test is also bound to this name, as in HumanEval's own `check`."""


def entry_point_of(problem: Problem) -> str | None:
    """The function to test: the task's `entry_point`, else the last top-level `def` in the
    prompt (the stub to complete comes after any helpers)."""
    named = problem.metadata.get("entry_point")
    if isinstance(named, str) and named.isidentifier():
        return named
    found = re.findall(r"^(?:async[ \t]+)?def[ \t]+(\w+)[ \t]*\(", problem.question, re.MULTILINE)
    return found[-1] if found else None


def prompt_names(source: str) -> frozenset[str]:
    """Names the prompt defines at top level (its imports, helpers): tests may use them."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return frozenset()
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name))
    return frozenset(names)


def _statement(lines: list[str], at: int) -> ast.Assert | None:
    """The one assert starting at line `at`, joined with the lines it continues on."""
    source = _ASSERT.sub("assert", lines[at], count=1)
    for extra in range(_MAX_LINES):
        if extra:
            following = lines[at + extra] if at + extra < len(lines) else None
            if following is None or following.lstrip().startswith("```") or _ASSERT.match(
                following
            ):
                return None
            source += "\n" + _DOCTEST_MORE.sub("", following, count=1)
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        except (ValueError, RecursionError, MemoryError):  # null bytes, absurd nesting
            return None
        only = tree.body[0] if len(tree.body) == 1 else None
        return only if isinstance(only, ast.Assert) else None
    return None


def _usable(test: ast.Assert, entry_point: str, known: Iterable[str]) -> bool:
    """Whether the test calls the function and uses no name a program could not have."""
    callees = {entry_point, _ALIAS}
    nodes = list(ast.walk(test))
    if not any(
        isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in callees
        for n in nodes
    ):
        return False
    used = {n.id for n in nodes if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    bound = {n.id for n in nodes if isinstance(n, ast.Name) and not isinstance(n.ctx, ast.Load)}
    bound |= {n.arg for n in nodes if isinstance(n, ast.arg)}
    return used <= _BUILTINS | callees | bound | set(known)


def parse_tests(text: str, entry_point: str, known: Iterable[str] = ()) -> list[str]:
    """The usable assert statements in a model's answer, each normalised to one line, in order
    and without repeats.

    An assert may be indented, follow a doctest `>>>`, sit inside a code fence or span several
    lines; anything that does not parse as exactly one assert is dropped, as is an assert that
    never calls `entry_point` (`assert result == 3` refers to a variable the test set) or uses
    a name that is neither a builtin, bound in the test, nor in `known`.
    """
    lines = text.splitlines()
    found: list[str] = []
    for at, line in enumerate(lines):
        if not _ASSERT.match(line):
            continue
        test = _statement(lines, at)
        if test is not None and _usable(test, entry_point, known):
            code = ast.unparse(test)
            if "\n" not in code and code not in found:
                found.append(code)
    return found


class UnitTestFilter(Aggregator):
    """Ranks code candidates by the share of model-written unit tests they pass.

    One call asks the model for assert-style tests of the function in the prompt (`n` samples,
    sent together with the `inner` sampler's call, since neither needs the other); every
    distinct candidate program then runs each test in the code sandboxes (its own process,
    with time and memory limits; `sandboxes` at once), and the best `keep` pass on with the
    `unit_tests` score. A run that times out, runs out of memory or crashes fails that test.

    The task's own hidden tests (`metadata["test"]`) are never read here: ranking by them
    would hand the grader's answer to the pipeline. Only the prompt and the function's name
    are used. When no test is usable (a budget refusal, a weak model writing none), the
    candidates pass on unranked with a `rank` note saying why.
    """

    type: Literal["unit_tests"] = "unit_tests"
    inner: StrategyNode | None = Field(
        default=Generate(n=4), description="Proposes the programs (none: rank `inputs` only)."
    )
    n: int = Field(default=2, ge=1, le=64, description="Samples of the test-writing call.")
    temperature: float = Field(default=0.7, ge=0.0, description="Test-writing temperature.")
    max_tokens: int = Field(default=256, ge=1, description="Most tokens one test sample may use.")
    seed: int | None = Field(default=0, description="Seed of the test-writing call.")
    template: str = Field(
        default=DEFAULT_TEMPLATE,
        description="Asks for the tests: {question} (the prompt), {entry_point} (the function).",
    )
    system: str | None = Field(default=None, description="A system message for the test writer.")
    max_tests: int = Field(default=8, ge=1, le=64, description="Most distinct tests run.")
    keep: int = Field(default=1, ge=1, description="How many of the best to pass on.")
    timeout: float = Field(
        default=3.0, gt=0, description="Wall-clock seconds one program may run one test."
    )
    memory_mb: int = Field(default=512, ge=64, description="Memory limit of one test run.")
    sandboxes: int = Field(
        default=2, ge=1, le=64, description="Test runs at once (each one is a process)."
    )

    @field_validator("template")
    @classmethod
    def _placeholders(cls, template: str) -> str:
        return check_template(template, {"question", "entry_point"})

    def max_outputs(self) -> int:
        return self.keep

    def worst_case(self, inputs: int | None = 0) -> CostBound | None:
        # One call writes the tests whatever the candidates; running them costs no tokens.
        writing = CostBound(completion_tokens=self.n * self.max_tokens, calls=1)
        return writing if self.inner is None else total(writing, self.inner.worst_case())

    def request(self, ctx: NodeContext, entry_point: str) -> GenerationRequest:
        """The one call for all `n` test samples."""
        prompt = self.template.format(question=ctx.problem.question, entry_point=entry_point)
        user = Message(role="user", content=prompt)
        system = () if self.system is None else (Message(role="system", content=self.system),)
        return GenerationRequest(
            messages=(*system, user),
            n=self.n,
            temperature=self.temperature,
            max_tokens=self.max_tokens,
            seed=ctx.seed_for(self.seed),
        )

    async def run(self, ctx: NodeContext, inputs: list[Candidate]) -> list[Candidate]:
        if self.inner is None and not inputs:
            return []
        entry_point = entry_point_of(ctx.problem)
        jobs = [self._tests(ctx, entry_point)]
        if self.inner is not None:
            jobs.append(self.inner.run(ctx.child("inner"), []))
        tests, *proposed = await asyncio.gather(*jobs, return_exceptions=True)
        candidates = list(inputs)
        for outcome in proposed:
            if isinstance(outcome, BaseException):
                if not (isinstance(outcome, BudgetExhausted) and candidates):
                    raise outcome
            else:
                candidates += outcome
        if not candidates:
            return []
        if isinstance(tests, BudgetExhausted):
            return self._unranked(ctx, candidates, f"no tests written: {tests}")
        if isinstance(tests, BaseException):
            raise tests
        if entry_point is None:
            return self._unranked(ctx, candidates, "the prompt names no function to test")
        if not tests:
            return self._unranked(ctx, candidates, "the model wrote no usable assert tests")
        try:
            passed = await self._passed(ctx, candidates, entry_point, tests)
        except BudgetExhausted as refusal:
            return self._unranked(ctx, candidates, str(refusal))
        ranked = sorted(
            (
                c.with_score(self.type, k / len(tests)).model_copy(
                    update={"metadata": {**c.metadata, "unit_tests": f"{k}/{len(tests)}"}}
                )
                for c, k in zip(candidates, passed, strict=True)
            ),
            key=lambda c: c.scores[self.type],
            reverse=True,
        )
        ctx.log_candidates(ranked, kept=[c.id for c in ranked[: self.keep]])
        return ranked[: self.keep]

    async def _tests(self, ctx: NodeContext, entry_point: str | None) -> list[str]:
        if entry_point is None:
            return []
        writer = ctx.child("tests")
        result = await writer.generate(self.request(writer, entry_point))
        known = prompt_names(ctx.problem.metadata.get("prompt") or ctx.problem.question)
        tests: list[str] = []
        for choice in result.choices:
            for test in parse_tests(choice.text, entry_point, known):
                if test not in tests:
                    tests.append(test)
        return tests[: self.max_tests]

    async def _passed(
        self, ctx: NodeContext, candidates: list[Candidate], entry_point: str, tests: list[str]
    ) -> list[int]:
        """How many tests each candidate passes; each distinct program runs once per test.

        The runs are bounded by the problem's wall-clock budget (cut runs are killed)."""
        prompt = ctx.problem.metadata.get("prompt") or ctx.problem.question
        programs = {extract_code(c.text).strip(): c.text for c in candidates}
        gate = asyncio.Semaphore(self.sandboxes)

        async def one(text: str, test: str) -> bool:
            program = build_program(prompt, text, entry_point, f"def check({_ALIAS}):\n    {test}")
            async with gate:
                result = await run_program(program, timeout=self.timeout, memory_mb=self.memory_mb)
            return result.passed

        try:
            async with asyncio.timeout(ctx.ledger.time_left()), asyncio.TaskGroup() as group:
                runs = {
                    (code, i): group.create_task(one(text, test))
                    for code, text in programs.items()
                    for i, test in enumerate(tests)
                }
        except TimeoutError:
            raise BudgetExhausted("wall_time", "the tests were cut at the deadline") from None
        passes = {code: sum(runs[code, i].result() for i in range(len(tests))) for code in programs}
        return [passes[extract_code(c.text).strip()] for c in candidates]

    def _unranked(self, ctx: NodeContext, candidates: list[Candidate], why: str) -> list[Candidate]:
        # The candidates are paid for: pass them on as they came, saying why they are unranked.
        note = f"unranked: {why}"
        logger.info("%s %s: %s", ctx.problem.id, ctx.path, note)
        return [
            c.model_copy(update={"metadata": {**c.metadata, "rank": note}})
            for c in candidates[: self.keep]
        ]
