"""The package imports one way only: bottom to top, with no circle between files or packages.

Every `import` in `itc/` is read with `ast` (function-level ones too: a lazy import is still a
dependency). Each module belongs to one layer; a module may import its own layer or lower ones.
A new top-level module or package has to be given a layer here, which is the point: where a
new part goes is decided, not drifted into.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parents[1]

# Bottom to top. A module's layer is its longest matching prefix; "itc" itself (the package's
# face, lazy public names only) matches only itself.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("itc._lazy", "itc.types"),
    ("itc.backends",),
    ("itc.runtime",),
    ("itc.nodes",),
    ("itc.verifiers",),
    ("itc.tools",),
    ("itc.strategies",),
    ("itc.config",),
    ("itc.planner",),
    ("itc.bench",),
    ("itc.search",),
    ("itc.cli", "itc"),
)


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph(root: Path, package: str = "itc") -> nx.DiGraph:
    """Modules of `package` under `root` and the imports between them."""
    files = {module_name(p, root): p for p in (root / package).rglob("*.py")}
    graph = nx.DiGraph()
    graph.add_nodes_from(files)
    for name, path in files.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = name.split(".")
                    anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                    base = ".".join([*anchor, base] if base else anchor)
                # `from pkg import mod` names a module when one exists by that name.
                targets = [
                    f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names
                ]
            else:
                continue
            for target in targets:
                while target and target not in files:
                    target = target.rpartition(".")[0]
                if target and target != name and target.split(".")[0] == package:
                    graph.add_edge(name, target)
    return graph


def layer_of(module: str) -> int | None:
    best: tuple[int, int] | None = None
    for rank, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if module == prefix or (prefix != "itc" and module.startswith(prefix + ".")):
                if best is None or len(prefix) > best[1]:
                    best = (rank, len(prefix))
    return None if best is None else best[0]


def package_of(module: str, graph: nx.DiGraph, root: Path) -> str:
    path = root / Path(*module.split("."))
    return module if path.is_dir() else module.rpartition(".")[0]


def violations(graph: nx.DiGraph, root: Path) -> list[str]:
    found = []
    for module in sorted(graph):
        if layer_of(module) is None:
            found.append(f"{module}: in no layer; add it to LAYERS in tests/test_layers.py")
    for importer, imported in sorted(graph.edges):
        low, high = layer_of(importer), layer_of(imported)
        if low is not None and high is not None and high > low:
            found.append(f"{importer} imports {imported}, a higher layer")
    for cycle in nx.simple_cycles(graph):
        found.append("file circle: " + " -> ".join([*cycle, cycle[0]]))
    packages = nx.DiGraph()
    for importer, imported in graph.edges:
        a, b = package_of(importer, graph, root), package_of(imported, graph, root)
        if a != b and not a.startswith(b + ".") and not b.startswith(a + "."):
            packages.add_edge(a, b)
    for cycle in nx.simple_cycles(packages):
        found.append("package circle: " + " -> ".join([*cycle, cycle[0]]))
    return found


def test_itc_imports_one_way_with_no_circles() -> None:
    graph = import_graph(ROOT)
    assert graph.number_of_edges() > 20  # the walk really saw the package's imports
    assert violations(graph, ROOT) == []


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


def test_the_check_catches_an_upward_import_and_circles(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "itc/__init__.py": "",
            "itc/types.py": "from itc.config import X\n",  # bottom layer importing upward
            "itc/config.py": "import itc.types\n",
            "itc/backends/__init__.py": "",
            "itc/backends/a.py": "def f():\n    from . import b\n",  # lazy, relative
            "itc/backends/b.py": "from itc.backends.a import f\n",
            "itc/newthing.py": "",
        },
    )
    found = violations(import_graph(root), root)
    assert "itc.types imports itc.config, a higher layer" in found
    assert any(f.startswith("file circle:") and "itc.config" in f for f in found)
    assert any(f.startswith("file circle:") and "itc.backends.a" in f for f in found)
    assert "itc.newthing: in no layer; add it to LAYERS in tests/test_layers.py" in found


def test_the_check_catches_a_package_circle(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "itc/__init__.py": "",
            "itc/runtime/__init__.py": "",
            "itc/runtime/x.py": "from itc.runtime.sub.y import g\n",
            "itc/runtime/sub/__init__.py": "",
            "itc/runtime/sub/y.py": "g = 1\n",
            "itc/runtime/sub/z.py": "from itc.runtime.w import h\n",
            "itc/runtime/w.py": "from itc.runtime.sub.y import g\nh = 2\n",
        },
    )
    found = violations(import_graph(root), root)
    # Files form no circle (sub/z -> w -> sub/y), but the packages do (sub -> runtime -> sub)
    # unless one contains the other: a package may use its own subpackages.
    assert not any(f.startswith("file circle") for f in found)
    assert not any(f.startswith("package circle") for f in found)
    (root / "itc/other").mkdir()
    (root / "itc/other/__init__.py").write_text("")
    (root / "itc/other/p.py").write_text("from itc.runtime.w import h\n")
    (root / "itc/runtime/v.py").write_text("from itc.other.q import k\n")
    (root / "itc/other/q.py").write_text("k = 3\n")
    found = violations(import_graph(root), root)
    assert any(f.startswith("package circle:") and "itc.other" in f for f in found)


@pytest.mark.parametrize(
    ("module", "forbidden"),
    [
        ("itc.types", ("itc.backends", "itc.runtime", "itc.nodes")),
        ("itc.runtime.context", ("itc.verifiers", "itc.strategies", "itc.config")),
        ("itc.config", ("itc.planner", "itc.bench", "itc.cli")),
    ],
)
def test_importing_a_layer_loads_nothing_above_it(module: str, forbidden: tuple[str, ...]) -> None:
    code = f"import sys, {module}; print('\\n'.join(sorted(sys.modules)))"
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout.split()
    assert [m for m in loaded if m.startswith(forbidden)] == []


@pytest.mark.parametrize(
    "package", ["itc", "itc.strategies", "itc.verifiers", "itc.tools", "itc.bench"]
)
def test_public_names_resolve_and_are_listed(package: str) -> None:
    import importlib

    module = importlib.import_module(package)
    exports = module._EXPORTS
    assert set(module.__all__) - {"__version__"} == set(exports)
    for name in exports:
        assert getattr(module, name) is not None
