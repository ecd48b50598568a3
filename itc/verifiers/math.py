"""Math answer extraction and equivalence checking.

Three layers, cheapest first:

* :func:`extract_answer` pulls the final answer out of a model's solution text.
* :func:`normalize_number` gives plain numbers an exact canonical form with no sympy at all, so
  votes over GSM8K-style answers can be grouped in microseconds.
* :class:`MathGrader` falls back to math-verify for everything else. math-verify guards its work
  with ``SIGALRM``, which only works in the main thread and breaks under asyncio and threads, so
  the grader disables those alarms and runs math-verify in worker processes instead, bounded by an
  outer wall-clock limit. A worker that overruns is killed with its pool, so one pathological
  expression cannot stall later calls.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import importlib.util
import logging
import multiprocessing
import os
import re
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures.process import BrokenProcessPool
from contextlib import asynccontextmanager
from fractions import Fraction
from types import TracebackType
from typing import Any, Self, TypeVar

__all__ = [
    "MathGrader",
    "extract_answer",
    "math_grader_if_installed",
    "math_verify_installed",
    "normalize_number",
]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

# ---------------------------------------------------------------------------------------------
# Extraction
# ---------------------------------------------------------------------------------------------

_BOX_COMMAND = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
# "the answer is", "final answer:", "Answer:", "**Final Answer**:", "the final answer is:" ...
_ANSWER_PHRASE = re.compile(r"\banswer\b\s*(?:\*\*)?\s*(?:is\b\s*:?|:)", re.IGNORECASE)
_GSM8K_MARKER = re.compile(r"####[ \t]*([^\n]*)")
# A period ends a sentence only when followed by whitespace; "3.5" keeps its decimal point.
_SENTENCE_END = re.compile(r"\.(?=\s)")
# A minus is a sign only when it does not follow something it could be subtracting from
# ("5-3" is the number 3, "x = -3" is -3). A number never starts inside another number.
_NUMBER = re.compile(
    r"(?:(?<![\w)\]}])[-−])?"
    r"(?<![\d.])"
    r"(?:"
    r"(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?(?:/\d+)?"
    r"|\.\d+"
    r")"
)


def _braced_group(text: str, start: int) -> str | None:
    """Content of the ``{...}`` group opening at ``text[start]``, or None if never closed.

    Escaped characters (``\\{``, ``\\}``, ``\\\\``) are skipped so set braces inside a box do not
    unbalance the count.
    """
    depth = 0
    i = start
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return text[start + 1 : i]
        i += 1
    return None


def _boxed_content(text: str, command_end: int) -> str | None:
    """Argument of a ``\\boxed``/``\\fbox`` whose name ends at ``command_end``."""
    i = command_end
    while i < len(text) and text[i] in " \t":
        i += 1
    if i < len(text) and text[i] == "{":
        return _braced_group(text, i)
    if i > command_end:
        # The unbraced form "\boxed 5" (seen in MATH solutions) takes one token.
        match = re.match(r"[^\s$]+", text[i:])
        return match.group(0) if match else None
    return None


def _strip_wrappers(answer: str) -> str:
    """Remove the decoration around an answer phrase: markdown bold, math delimiters, a period."""
    previous = None
    while answer != previous:
        previous = answer
        answer = answer.strip().strip("*").strip()
        if answer.endswith(".") and not answer.endswith(".."):
            answer = answer[:-1]
        for left, right in (("\\(", "\\)"), ("\\[", "\\]")):
            if answer.startswith(left) and answer.endswith(right):
                answer = answer[len(left) : -len(right)]
        if answer.startswith("$") or answer.endswith("$"):
            # Keep a lone currency sign ("$5"); drop math delimiters and stray closers.
            if answer.startswith("$") and answer.endswith("$") and len(answer) > 1:
                answer = answer[1:-1]
            elif answer.endswith("$") and not answer.endswith("\\$"):
                answer = answer[:-1]
    return answer.strip()


def _last_boxed(text: str) -> str | None:
    for match in reversed(list(_BOX_COMMAND.finditer(text))):
        content = _boxed_content(text, match.end())
        if content is not None and content.strip():
            return content.strip()
    return None


def _last_phrase(text: str) -> str | None:
    for match in reversed(list(_ANSWER_PHRASE.finditer(text))):
        rest = text[match.end() :].lstrip()
        line = rest.split("\n", 1)[0]
        end = _SENTENCE_END.search(line)
        if end is not None:
            line = line[: end.start()]
        answer = _strip_wrappers(line)
        if answer:
            return _leading_quantity(answer)
    return None


# "18 dollars", "$1,200 in total", "5 (five)": a number followed by words is that number.
_QUANTITY_WITH_WORDS = re.compile(
    r"(\\?\$?\s*[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?)\s+[A-Za-z(\[]"
)


def _leading_quantity(answer: str) -> str:
    match = _QUANTITY_WITH_WORDS.match(answer)
    return match.group(1).strip() if match else answer


def _last_gsm8k(text: str) -> str | None:
    for match in reversed(list(_GSM8K_MARKER.finditer(text))):
        answer = _strip_wrappers(match.group(1))
        if answer:
            return answer
    return None


def _last_number(text: str) -> str | None:
    numbers = _NUMBER.findall(text)
    return numbers[-1] if numbers else None


def extract_answer(text: str) -> str | None:
    """Return the final answer of a solution, trimmed but otherwise raw, or None.

    Priority, first hit wins: the last complete ``\\boxed{}``/``\\fbox{}``; the last
    "the answer is X" / "final answer: X" / "answer: X" phrase (X runs to the end of the sentence or
    line); the last GSM8K ``#### X`` line; the last number anywhere. Models often restate
    intermediate results, so the *last* occurrence of each form is taken.
    """
    for finder in (_last_boxed, _last_phrase, _last_gsm8k, _last_number):
        answer = finder(text)
        if answer:
            return answer
    return None


# ---------------------------------------------------------------------------------------------
# Cheap numeric normalisation
# ---------------------------------------------------------------------------------------------

_PLAIN_NUMBER = re.compile(r"[-+]?(?:(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d*)?|\.\d+)")
_LATEX_FRAC = re.compile(r"([-+]?)\\[dt]?frac\{([^{}]+)\}\{([^{}]+)\}")


def _plain_fraction(s: str) -> Fraction | None:
    s = s.strip()
    if not _PLAIN_NUMBER.fullmatch(s) or len(s) > 1000:
        # The length cap keeps clear of Python's int/str conversion limit (ValueError).
        return None
    return Fraction(s.replace(",", ""))


def normalize_number(s: str) -> str | None:
    """Exact canonical form of a plain number, or None if ``s`` is anything else.

    Accepted: optional sign, ``,`` thousands separators (also LaTeX ``{,}`` and ``\\,``),
    decimals, ``a/b`` and ``\\frac{a}{b}`` of plain numbers, surrounding ``$`` (currency or math
    delimiters) and a trailing ``%``/``\\%``. The percent sign is dropped without dividing by 100:
    gold answers to "what percent" questions are written as the bare number, and math-verify also
    accepts ``50\\%`` for ``50``. Unit words are not stripped ("5 apples" -> None), because telling
    a unit from a variable needs a real parser.

    The result is exact (:class:`fractions.Fraction`, never float): an integer string for
    integers ("5.0" -> "5"), otherwise "p/q" in lowest terms ("0.5" -> "1/2").
    """
    t = s.strip().replace("\\$", "$").replace("{,}", ",").replace("\\,", ",").replace("−", "-")
    t = t.replace("\\!", "").strip().strip("$").strip()
    for suffix in ("\\%", "%"):
        if t.endswith(suffix):
            t = t[: -len(suffix)].strip()
            break
    # A currency sign may sit after the minus: "-$5".
    if t[:2] in ("-$", "+$"):
        t = t[0] + t[2:]
    value: Fraction | None
    frac = _LATEX_FRAC.fullmatch(t)
    if frac is not None:
        num, den = _plain_fraction(frac.group(2)), _plain_fraction(frac.group(3))
        if num is None or den is None or den == 0:
            return None
        value = num / den
        if frac.group(1) == "-":
            value = -value
    elif t.count("/") == 1:
        left, right = t.split("/")
        num, den = _plain_fraction(left), _plain_fraction(right)
        if num is None or den is None or den == 0:
            return None
        value = num / den
    else:
        value = _plain_fraction(t)
        if value is None:
            return None
    if value.denominator == 1:
        return str(value.numerator)
    return f"{value.numerator}/{value.denominator}"


# ---------------------------------------------------------------------------------------------
# math-verify, in worker processes
# ---------------------------------------------------------------------------------------------


def _as_latex(answer: str) -> str:
    """Wrap bare LaTeX in ``$...$``: math-verify's LaTeX extractor only looks inside delimiters,
    and MATH-style answers (and our extracted answers) come without them."""
    if "$" in answer or "\\(" in answer or "\\[" in answer or "\\boxed" in answer:
        return answer
    return f"${answer}$"


def _worker_init() -> None:
    """Import math-verify up front so the first real call is not charged for it."""
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    import math_verify  # noqa: F401


def _warm_up_job() -> int:
    """Exercise parse and a symbolic verify once: the first call in a fresh process pays for the
    LaTeX grammar and sympy caches (about half a second), which must not eat into a call's limit."""
    from math_verify import parse, verify

    verify(
        parse("$x^2+2x+1$", parsing_timeout=None),  # type: ignore[arg-type]
        parse("$(x+1)^2$", parsing_timeout=None),  # type: ignore[arg-type]
        timeout_seconds=None,
    )
    return os.getpid()


def _parse_job_result(answer: str) -> list[Any]:
    from math_verify import parse

    return parse(_as_latex(answer), parsing_timeout=None)  # type: ignore[arg-type]


def _key_job(answer: str) -> str | None:
    """Canonical string of the first expression math-verify parses from ``answer``."""
    try:
        from sympy import Basic, Float, MatrixBase

        for item in _parse_job_result(answer):
            if not isinstance(item, (Basic, MatrixBase)):
                continue
            # math-verify keeps expressions unevaluated (sqrt(4), 2 + 3); doit() evaluates them
            # so that "\\sqrt{4}" and "2" share a key.
            value = item.doit()
            if isinstance(value, Float):
                # Floats print with 15 digits; use the exact numeric form instead.
                return normalize_number(str(value)) or str(value)
            return str(value)
    except Exception:  # math-verify or sympy failing on odd input means "no key", not a crash
        logging.getLogger(__name__).debug("no key for %r", answer, exc_info=True)
    return None


def _verify_job(gold: str, predicted: str) -> bool:
    try:
        from math_verify import verify

        parsed_gold = _parse_job_result(gold)
        if not parsed_gold:
            return False
        parsed_pred = _parse_job_result(predicted)
        return bool(verify(parsed_gold, parsed_pred, timeout_seconds=None))
    except Exception:  # an expression math-verify cannot handle is not shown equivalent
        logging.getLogger(__name__).debug("verify failed", exc_info=True)
        return False


def _lost_to_shutdown(*jobs: concurrent.futures.Future[Any]) -> bool:
    """Whether a CancelledError came from a pool shutdown cancelling ``jobs`` rather than from
    the awaiting task itself being cancelled (which must propagate)."""
    task = asyncio.current_task()
    own_cancel = task is not None and task.cancelling() > 0
    return not own_cancel and any(job.cancelled() for job in jobs)


def math_verify_installed() -> bool:
    """math-verify comes with the `math` and `bench` extras; without it, math answers still
    compare exactly as numbers (no `MathGrader` needed)."""
    return importlib.util.find_spec("math_verify") is not None


def _whitespace_key(answer: str) -> str:
    return " ".join(answer.strip().strip("$").split())


class MathGrader:
    """Answer equivalence backed by math-verify in a private process pool.

    The pool is created on first use and warmed before any call is timed, so worker start-up and
    imports never count against the limit. At most ``max_workers`` calls are in flight at once
    (more wait their turn untimed), so ``timeout`` bounds the work itself rather than time spent
    queueing. A call that exceeds it counts as "not equivalent" (or "no canonical key"), and the
    pool is replaced with its workers killed: a worker stuck in sympy would otherwise never come
    back. Calls that lose their worker to such a replacement are retried once.

    The pool belongs to this grader only; release it with :meth:`close`, ``with`` or
    ``async with``. With the default "spawn" start method, workers import the main module, so a
    script using the grader needs the usual ``if __name__ == "__main__":`` guard (a missing
    guard surfaces as RuntimeError, not as silently failed grading).
    """

    def __init__(
        self,
        timeout: float = 5.0,
        *,
        max_workers: int | None = None,
        start_timeout: float = 60.0,
        mp_context: str = "spawn",
    ) -> None:
        """Configure the grader; no process starts until the first call that needs one.

        ``timeout`` is the per-call wall-clock limit in seconds; ``start_timeout`` bounds pool
        start-up. ``max_workers`` defaults to min(2, CPUs). ``mp_context`` defaults to "spawn"
        because forking a process that runs an event loop and threads copies their state
        mid-flight; "fork" starts faster and is fine in single-threaded programs.
        """
        self.timeout = timeout
        self.start_timeout = start_timeout
        self.max_workers = max_workers or max(1, min(2, os.cpu_count() or 1))
        self._mp_context = multiprocessing.get_context(mp_context)
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None
        self._warm_ups: list[concurrent.futures.Future[int]] = []
        self._closed = False
        # One slot per worker, so a submitted job starts at once and the time limit measures
        # work, not queueing: otherwise a burst of calls would time out behind each other and
        # every timeout would tear the pool down again.
        self._slots: asyncio.Semaphore | None = None
        self._slots_loop: asyncio.AbstractEventLoop | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # close() may wait briefly for workers to exit; keep that off the event loop.
        await asyncio.to_thread(self.close)

    def close(self) -> None:
        """Shut the pool down and kill any worker still busy. Safe to call more than once."""
        self._closed = True
        self._discard_pool(self._pool, grace=1.0)

    # -- pool management -----------------------------------------------------------------------

    def _ensure_pool(self) -> concurrent.futures.ProcessPoolExecutor:
        if self._closed:
            raise RuntimeError("MathGrader is closed")
        if self._pool is None and not math_verify_installed():
            raise ModuleNotFoundError(
                "MathGrader needs math-verify, which is not installed: pip install 'itc[bench]' "
                "(or 'itc[math]'); without a grader, math answers compare as plain numbers"
            )
        if self._pool is None:
            pool = concurrent.futures.ProcessPoolExecutor(
                max_workers=self.max_workers,
                mp_context=self._mp_context,
                initializer=_worker_init,
            )
            # Submitting one job per worker before any finishes starts every worker now.
            self._warm_ups = [pool.submit(_warm_up_job) for _ in range(self.max_workers)]
            self._pool = pool
        return self._pool

    def _discard_pool(
        self, pool: concurrent.futures.ProcessPoolExecutor | None, grace: float = 0.0
    ) -> None:
        """Drop ``pool`` (if it is still ours) and make sure none of its workers lives on.

        ``shutdown`` alone would leave a hung worker running forever, and the interpreter joins
        pool workers at exit, so it would hang there too.
        """
        if pool is None:
            return
        if pool is self._pool:
            self._pool = None
            self._warm_ups = []
        # Private attribute, but the only handle on the worker processes before Python 3.14.
        processes = list((getattr(pool, "_processes", None) or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        deadline = time.monotonic() + grace
        for process in processes:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
        for process in processes:
            process.join(5.0)  # a killed process is reaped at once, unless the machine is swamped

    def _slots_for_loop(self) -> asyncio.Semaphore:
        """The worker-slot semaphore, recreated if the grader moves to another event loop."""
        loop = asyncio.get_running_loop()
        if self._slots is None or self._slots_loop is not loop:
            self._slots = asyncio.Semaphore(self.max_workers)
            self._slots_loop = loop
        return self._slots

    async def _run(self, fn: Callable[..., _T], *args: Any) -> _T:
        """Run ``fn(*args)`` in a worker within ``self.timeout`` seconds of execution.

        Raises TimeoutError when the limit is hit (after replacing the pool) or when the work is
        lost twice to a broken or replaced pool. A call whose pool was torn down under it by
        another call's timeout is retried once on a fresh pool. Workers that cannot start at all
        raise RuntimeError: silently grading everything as wrong would be worse than failing.
        """
        async with self._slots_for_loop():
            for _ in range(2):
                pool = self._ensure_pool()
                if self._warm_ups:
                    await self._await_warm_up(pool)
                try:
                    job = pool.submit(fn, *args)
                except RuntimeError:  # also BrokenProcessPool: shut down or broken meanwhile
                    if self._closed:
                        raise
                    self._discard_pool(pool)
                    continue
                try:
                    return await asyncio.wait_for(asyncio.wrap_future(job), self.timeout)
                except TimeoutError:
                    logger.warning(
                        "math-verify call exceeded %.3gs; replacing the pool", self.timeout
                    )
                    self._discard_pool(pool)
                    raise
                except BrokenProcessPool:
                    # Our worker was killed, by another call's timeout or by a crash.
                    self._discard_pool(pool)
                except asyncio.CancelledError:
                    if not _lost_to_shutdown(job):
                        raise
                    # Still queued when another call replaced the pool (shutdown cancels it).
            raise TimeoutError("math-verify work was lost to a replaced worker pool twice")

    async def _await_warm_up(self, pool: concurrent.futures.ProcessPoolExecutor) -> None:
        """Wait, outside the per-call limit, until the pool's workers have imported math-verify."""
        try:
            await asyncio.wait_for(
                asyncio.gather(*(asyncio.wrap_future(f) for f in self._warm_ups)),
                self.start_timeout,
            )
        except (BrokenProcessPool, TimeoutError, asyncio.CancelledError) as exc:
            if isinstance(exc, asyncio.CancelledError) and not _lost_to_shutdown(*self._warm_ups):
                raise
            if pool is not self._pool:
                return  # another call replaced the pool meanwhile; the caller will notice
            self._discard_pool(pool)
            raise RuntimeError(
                "math-verify worker processes failed to start. With the 'spawn' start method "
                "the main script must be import-safe (guard it with "
                "`if __name__ == '__main__':`), or pass MathGrader(mp_context='fork')."
            ) from exc
        if pool is self._pool:
            self._warm_ups = []

    # -- public API ----------------------------------------------------------------------------

    async def canonical_key(self, answer: str) -> str:
        """Key under which equivalent answers should be grouped in a vote.

        Plain numbers use :func:`normalize_number` with no process round trip; other answers use
        the string of math-verify's first parsed expression, so ``\\frac{\\sqrt 2}{2}`` and
        ``\\sqrt{2}/2`` share a key. Unparseable answers (or a timeout) fall back to the text with
        whitespace collapsed. Keys are a fast approximation; :meth:`is_equivalent` is the judge.
        """
        number = normalize_number(answer)
        if number is not None:
            return number
        try:
            key = await self._run(_key_job, answer)
        except TimeoutError:
            key = None
        return key if key is not None else _whitespace_key(answer)

    async def is_equivalent(self, gold: str, predicted: str) -> bool:
        """Whether ``predicted`` is mathematically the same answer as ``gold``.

        Equal plain numbers short-circuit; everything else goes to math-verify as
        ``verify(parse(gold), parse(predicted))``, gold first because its comparison is not
        symmetric. A timeout counts as not equivalent.
        """
        gold_number, predicted_number = normalize_number(gold), normalize_number(predicted)
        if gold_number is not None and gold_number == predicted_number:
            return True
        try:
            return await self._run(_verify_job, gold, predicted)
        except TimeoutError:
            return False


@asynccontextmanager
async def math_grader_if_installed() -> AsyncIterator[MathGrader | None]:
    """A `MathGrader` for the block when math-verify is installed, else None (numbers only)."""
    if not math_verify_installed():
        yield None
        return
    async with MathGrader() as grader:
        yield grader
