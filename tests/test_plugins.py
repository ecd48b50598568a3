"""Plugins come in through the `itc.components` entry point; a broken one is skipped, named."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from itc.config import PluginWarning, Registry, parse_pipeline

ROOT = Path(__file__).resolve().parents[1]

PLUGIN = '''
from typing import Literal

from itc.nodes import Strategy
from itc.types import Candidate


class Echo(Strategy):
    """Answers with the question itself: enough to see a plugin strategy run."""

    type: Literal["echo"] = "echo"
    times: int = 1

    async def run(self, ctx, inputs):
        return [Candidate(text=ctx.problem.question, node=ctx.path)] * self.times
'''


@pytest.fixture
def installed_plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A distribution on sys.path with one good and two broken `itc.components` entries."""
    (tmp_path / "itc_echo_plugin.py").write_text(PLUGIN)
    info = tmp_path / "itc_echo_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: itc-echo-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[itc.components]\n"
        "echo = itc_echo_plugin:Echo\n"
        "missing = itc_no_such_module:Thing\n"
        "wrong = itc_echo_plugin\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_a_good_plugin_loads_and_broken_ones_are_named_and_skipped(installed_plugins) -> None:
    with pytest.warns(PluginWarning) as caught:
        registry = Registry.default()
    messages = sorted(str(w.message) for w in caught)
    assert len(messages) == 2
    assert messages[0].startswith("plugin entry point 'missing' = 'itc_no_such_module:Thing'")
    assert "ModuleNotFoundError" in messages[0]
    assert messages[1].startswith("plugin entry point 'wrong' = 'itc_echo_plugin' skipped")
    assert "not a Component subclass" in messages[1]
    pipeline = parse_pipeline({"type": "echo", "times": 2}, registry)
    assert pipeline.nodes["main"].type == "echo"
    assert parse_pipeline(pipeline.to_data(), registry) == pipeline


def test_a_broken_plugin_does_not_stop_the_cli(installed_plugins, tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("type: generate\nn: 0\n")
    done = subprocess.run(
        [sys.executable, "-m", "itc.cli", "run", str(config), "--problem", "?"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PYTHONPATH": f"{installed_plugins}:{ROOT}", "PATH": "/usr/bin:/bin"},
        timeout=120,
    )
    # The config error is reported (no server is started for a bad config), after one warning
    # line per broken plugin, and no traceback.
    assert done.returncode == 2
    assert "warning: plugin entry point 'missing'" in done.stderr
    assert "nodes.main.n: Input should be greater than or equal to 1" in done.stderr
    assert "Traceback" not in done.stderr


def test_version_and_a_missing_results_file() -> None:
    def itc(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "itc.cli", *args], capture_output=True, text=True, cwd=ROOT
        )

    from itc import __version__

    assert itc("--version").stdout.strip() == f"itc {__version__}"
    missing = itc("report", "no/such/results.jsonl")
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert "no results at no/such/results.jsonl" in missing.stderr


EXAMPLE = ROOT / "examples" / "plugin" / "example.yaml"


def _example_plugin_installed() -> bool:
    from importlib.metadata import entry_points

    return any(e.name == "first_answer" for e in entry_points(group="itc.components"))


needs_example_plugin = pytest.mark.skipif(
    not _example_plugin_installed(),
    reason="the example plugin is not installed (scripts/bootstrap.sh installs examples/plugin)",
)


@needs_example_plugin
async def test_the_installed_example_plugin_loads_from_yaml_and_runs() -> None:
    from itc.backends.scripted import ScriptedBackend
    from itc.config import load_pipeline
    from itc.planner.executor import Planner
    from itc.runtime.context import Runtime
    from itc.types import Problem

    from .helpers import answers

    pipeline = load_pipeline(EXAMPLE)
    # Attempt 1: no answer in either sample; attempt 2: the first one with a number wins.
    backend = ScriptedBackend(answers("thinking", "still thinking", "so it is 4", "5 maybe"))
    result = await Planner(Runtime(backend=backend)).run(
        pipeline, Problem(id="p", prompt="2+2?", answer="4")
    )
    assert result.answer == "4" and len(backend.requests) == 2
    assert 0 < result.candidates[0].scores["brevity"] < 1
    assert load_pipeline(EXAMPLE).to_yaml() == pipeline.to_yaml()


@needs_example_plugin
@pytest.mark.vllm
def test_the_example_plugin_runs_from_the_cli_on_the_real_server(vllm_server) -> None:  # type: ignore[no-untyped-def]
    done = subprocess.run(
        [
            sys.executable, "-m", "itc.cli", "run", str(EXAMPLE),
            "--problem", "What is 6 times 7?",
            "--base-url", vllm_server.base_url, "--model", vllm_server.model,
        ],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "main/inner/inner" in done.stdout  # the plugin strategy's sampler made the calls
    assert "answer:" in done.stdout

