"""The managed vLLM server process: started on demand, never outliving the process that owns it.

It brings the pieces together: the cached venv (environment), the model folder (models) and the
memory and CPU settings chosen for this machine at launch (resources).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO

import httpx
from rich.console import Console

from itc.backends.local.environment import Ticker, ensure_server_env, log_tail, logs_dir
from itc.backends.local.errors import ServerStartError
from itc.backends.local.models import MODELS, ensure_model, looks_like_path, lookup_model
from itc.backends.local.resources import (
    MemorySettings,
    default_cpu_binding,
    memory_settings,
    wanted_kv_bytes,
)

__all__ = ["ManagedServer", "pooling_args", "serve_forever"]

# Runs the API server as ``python -m`` would, after asking the kernel to SIGTERM it when our
# process (strictly: the thread that started it) dies. atexit covers normal exits and Ctrl-C;
# this covers the rest (SIGTERM, SIGKILL, a crash), so a test run that is killed leaves no server.
# The API server shuts its engine processes down on SIGTERM.
_BOOTSTRAP = """\
import ctypes, os, runpy, signal, sys
ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
if os.getppid() != int(sys.argv.pop(1)):  # the parent died before prctl took effect
    sys.exit(1)
runpy.run_module("vllm.entrypoints.openai.api_server", run_name="__main__", alter_sys=True)
"""


def pooling_args(step_tag_id: int | None = None) -> list[str]:
    """vLLM 0.32 flags serving a generative model as a reward model (`--runner pooling`,
    the language-model head replaced by a classifier): `/classify` answers an outcome
    reward; with `step_tag_id`, `/pooling` answers token classification at that token only,
    a process reward model's step tags. A server serves one of the two tasks, not both."""
    args = ["--runner", "pooling", "--convert", "classify"]
    if step_tag_id is not None:
        config = {"task": "token_classify", "tok_pooling_type": "STEP", "step_tag_id": step_tag_id}
        args += ["--pooler-config", json.dumps(config)]
    return args


def _free_port() -> int:
    """A port free right now on 127.0.0.1, for a server started without one."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ManagedServer:
    """A vLLM OpenAI-compatible server in a child process group that never outlives us.

    Cleanup has three layers: ``stop()`` (explicit, ``async with`` or atexit), and the kernel's
    parent-death signal for when we are killed outright. That signal fires when the *thread*
    that ran ``start()`` ends, so run ``start()`` on a loop that lives as long as the server.
    """

    def __init__(
        self,
        model: str = "smollm2-135m",
        port: int | None = None,
        console: Console | None = None,
        extra_args: Sequence[str] = (),
        *,
        startup_timeout: float = 300.0,
        stop_grace: float = 10.0,
        cpu_binding: str | None = None,
    ) -> None:
        self.model = model
        # VLLM_CPU_OMP_THREADS_BIND for the worker ("auto" is vLLM's own); None: the caller's
        # environment if it sets one, else choose_cpu_binding.
        self.cpu_binding = cpu_binding
        self.port = port
        self.console = console or Console(stderr=True)
        self.extra_args = tuple(extra_args)
        self.startup_timeout = startup_timeout
        self.stop_grace = stop_grace
        self.log_path: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_fh: IO[bytes] | None = None
        if model in MODELS or not (looks_like_path(model) or Path(model).expanduser().is_dir()):
            spec = lookup_model(model)  # fail fast on an unknown name
            self.served_model_name = spec.served_name
            self.max_model_len = spec.max_model_len
        else:  # a local folder, served under its own name
            self.served_model_name = Path(model).expanduser().resolve().name
            self.max_model_len = 2048

    @property
    def base_url(self) -> str:
        if self.port is None:
            raise RuntimeError("server not started")
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _memory_settings(self, model_dir: Path) -> MemorySettings | None:
        """Our KV cache size, unless the caller chose memory flags or VLLM_CPU_KVCACHE_SPACE."""
        own = ("--kv-cache-memory-bytes", "--gpu-memory-utilization")
        if os.environ.get("VLLM_CPU_KVCACHE_SPACE") or any(
            a.split("=")[0] in own for a in self.extra_args
        ):
            return None
        return memory_settings(wanted_kv=wanted_kv_bytes(model_dir, self.max_model_len))

    def command(self, python: Path, model_dir: Path, mem: MemorySettings | None) -> list[str]:
        """The vLLM command line, run through _BOOTSTRAP (``python -c``) instead of ``-m``."""
        return [
            str(python), "-c", _BOOTSTRAP, str(os.getpid()),
            "--model", str(model_dir),
            "--served-model-name", self.served_model_name,
            "--dtype", "float32",
            "--enforce-eager",
            "--max-model-len", str(self.max_model_len),
            "--host", "127.0.0.1",
            "--port", str(self.port),
            # vllm-cpu 0.32 crashes its engine ("CPU Generator does not use offset") when a
            # seeded request's prefill is split across steps, which chunked prefill does under
            # load. Whole-prompt prefills avoid it; seeds are how itc makes samples
            # reproducible and cacheable, so this is not optional here.
            "--no-enable-chunked-prefill",
            "--max-num-batched-tokens", str(max(4096, self.max_model_len)),
            *(mem.args() if mem else ()),
            *self.extra_args,
        ]  # fmt: skip

    def _launch(self, python: Path, model_dir: Path) -> None:
        """Popen vLLM in a new session, so stop() can signal its engine process too."""
        mem = self._memory_settings(model_dir)
        self.log_path = logs_dir() / (
            f"server-{self.served_model_name}-{self.port}-{time.strftime('%Y%m%d-%H%M%S')}.log"
        )
        env = dict(os.environ)
        env.pop("PYTHONPATH", None)  # the venv must not see the caller's packages
        env.update(
            HF_HUB_OFFLINE="1",
            TRANSFORMERS_OFFLINE="1",
            VLLM_NO_USAGE_STATS="1",
            DO_NOT_TRACK="1",
            PYTHONUNBUFFERED="1",
        )
        if self.cpu_binding is not None:
            env["VLLM_CPU_OMP_THREADS_BIND"] = self.cpu_binding
        elif "VLLM_CPU_OMP_THREADS_BIND" not in env and (binding := default_cpu_binding()):
            env["VLLM_CPU_OMP_THREADS_BIND"] = binding
        cmd = self.command(python, model_dir, mem)
        log_fh = open(self.log_path, "wb")  # closed in stop()
        shown = [c if c != _BOOTSTRAP else "<bootstrap>" for c in cmd]
        bind = env.get("VLLM_CPU_OMP_THREADS_BIND", "auto")
        log_fh.write(f"$ {' '.join(shown)}\n# {mem}\n# VLLM_CPU_OMP_THREADS_BIND={bind}\n".encode())
        log_fh.flush()
        self._log_fh = log_fh
        try:
            self._proc = subprocess.Popen(
                cmd,
                stdout=log_fh,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )
        except BaseException:
            self.stop()
            raise

    async def start(self) -> ManagedServer:
        """Prepare env and model, launch vLLM and return once ``/health`` answers 200."""
        if self.running:
            return self
        python = await asyncio.to_thread(ensure_server_env, self.console)
        model_dir = await asyncio.to_thread(ensure_model, self.model, self.console)
        if self.port is None:
            self.port = _free_port()
        self._launch(python, model_dir)
        atexit.register(self.stop)
        try:
            await self._wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    async def _wait_healthy(self) -> None:
        assert self._proc is not None and self.log_path is not None
        label = f"starting vLLM ({self.served_model_name}) on {self.base_url}"
        async with httpx.AsyncClient(timeout=5.0) as client:
            with Ticker(self.console, label) as ticker:
                while True:
                    rc = self._proc.poll()
                    if rc is not None:
                        raise ServerStartError(
                            f"vLLM exited with code {rc} before becoming healthy. "
                            f"Last lines of {self.log_path}:\n{log_tail(self.log_path)}"
                        )
                    if ticker.elapsed > self.startup_timeout:
                        raise ServerStartError(
                            f"vLLM not healthy after {self.startup_timeout:.0f}s. "
                            f"Last lines of {self.log_path}:\n{log_tail(self.log_path)}"
                        )
                    with contextlib.suppress(httpx.HTTPError):
                        if (await client.get(f"{self.base_url}/health")).status_code == 200:
                            break
                    ticker.tick()
                    await asyncio.sleep(0.5)
        self.console.log(f"[green]vLLM healthy[/] at {self.base_url} after {ticker.elapsed:.0f}s")

    def stop(self) -> None:
        """Terminate the whole process group: SIGTERM, then SIGKILL after ``stop_grace``.

        Synchronous and idempotent so it can run from atexit, a signal handler or ``finally``.
        """
        proc, self._proc = self._proc, None
        if proc is not None:
            with contextlib.suppress(Exception):
                atexit.unregister(self.stop)
            pgid = proc.pid  # leader of its own session, so its pid is the group id
            if proc.poll() is None or _group_alive(pgid):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pgid, signal.SIGTERM)
                deadline = time.monotonic() + self.stop_grace
                while time.monotonic() < deadline and (proc.poll() is None or _group_alive(pgid)):
                    time.sleep(0.1)
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pgid, signal.SIGKILL)
            with contextlib.suppress(Exception):
                proc.wait(timeout=5)
        fh, self._log_fh = self._log_fh, None
        if fh is not None:
            with contextlib.suppress(Exception):
                fh.close()

    async def __aenter__(self) -> ManagedServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        self.stop()


def _group_alive(pgid: int) -> bool:
    """Whether any process of the group is left (engine processes can outlive the leader)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def serve_forever(
    model: str = "smollm2-135m",
    port: int | None = None,
    console: Console | None = None,
    extra_args: Sequence[str] = (),
) -> None:
    """Run a managed server in the foreground until Ctrl-C or SIGTERM (for ``itc serve``)."""
    console = console or Console(stderr=True)
    server = ManagedServer(model, port=port, console=console, extra_args=extra_args)

    def _on_sigterm(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if in_main else None
    try:
        asyncio.run(server.start())
        console.print(f"Serving [bold]{server.served_model_name}[/] at {server.base_url}/v1")
        print(server.base_url, flush=True)
        console.print("Press Ctrl-C to stop.")
        while server.running:
            time.sleep(1.0)
        console.print(f"[red]vLLM exited[/]; log: {server.log_path}")
    except KeyboardInterrupt:
        console.print("Stopping…")
    finally:
        server.stop()
        if in_main:
            signal.signal(signal.SIGTERM, previous)
