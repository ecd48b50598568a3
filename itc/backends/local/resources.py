"""Machine resources a local vLLM server is given: memory for its KV cache and CPU cores.

Both are read from the machine at launch (NUMA node 0's meminfo, the CPUs of running vLLM
workers), since on these VMs neither is fixed. The choosing is kept apart from the reading, so
it can be checked against made-up machines.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "BIND_ALL_CORES_UP_TO",
    "DEFAULT_KV_BYTES",
    "KV_SHARE",
    "MIN_KV_BYTES",
    "NODE0_MEMINFO",
    "TARGET_CONCURRENCY",
    "MemorySettings",
    "choose_cpu_binding",
    "default_cpu_binding",
    "kv_bytes_per_token",
    "memory_settings",
    "wanted_kv_bytes",
]


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
# CPU binding
# --------------------------------------------------------------------------------------------


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
