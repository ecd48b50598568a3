"""The `itc` command line: serve, run one problem, benchmark pipelines."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import warnings
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from itc.backends.base import Backend, BackendError
from itc.backends.local.errors import ServerStartError, SetupError
from itc.bench.datasets import DatasetError
from itc.config import ConfigError, PipelineConfig, load_pipeline

app = typer.Typer(
    help="Inference-time compute: composable strategies against a vLLM server.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)
# Piped output (CI logs, files) gets room for the tables instead of the 80-column default.
out = Console(width=None if sys.stdout.isatty() else 160)

BaseUrl = Annotated[
    str | None,
    typer.Option(help="A running OpenAI-compatible vLLM server; omit to start a local one."),
]
ApiKey = Annotated[
    str | None,
    typer.Option(envvar="ITC_API_KEY", help="Bearer token for --base-url (or $ITC_API_KEY)."),
]
RewardUrls = Annotated[
    list[str] | None,
    typer.Option(
        help="A reward model's server (e.g. `itc serve --runner pooling`), as URL (the "
        "runtime backend named prm) or NAME=URL (e.g. orm=URL); repeatable.",
    ),
]
ModelUrls = Annotated[
    list[str] | None,
    typer.Option(
        help="Another generator's server as NAME=URL, for nodes that name it (`model: NAME` "
        "on a generate node: an ensemble over several models); repeatable.",
    ),
]
MaxModelLen = Annotated[
    int | None,
    typer.Option(min=1, help="Context length, for a --base-url server that does not report it."),
]
Model = Annotated[
    str | None,
    typer.Option(
        help="Bundled model name or local folder for the local server, "
        "or the served model at --base-url."
    ),
]


def _show_warning(message, category, filename, lineno, file=None, line=None):  # type: ignore[no-untyped-def]
    """Warnings (a skipped plugin, say) as one line each, not as source-file excerpts."""
    console.print(f"[yellow]warning:[/] {message}", highlight=False)


@app.callback(invoke_without_command=True)
def main(
    context: typer.Context,
    version: Annotated[
        bool, typer.Option("--version", help="Print the version and exit.", is_eager=True)
    ] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Log every LLM call as it finishes.")
    ] = False,
) -> None:
    """Inference-time compute: composable strategies against a vLLM server."""
    warnings.showwarning = _show_warning
    if verbose:
        from rich.logging import RichHandler

        handler = RichHandler(console=console, show_path=False)
        logging.getLogger("itc").addHandler(handler)
        logging.getLogger("itc").setLevel(logging.DEBUG)
    if version:
        from itc import __version__

        out.print(f"itc {__version__}")
        raise typer.Exit()
    if context.invoked_subcommand is None:
        out.print(context.get_help())
        raise typer.Exit(code=2)


def _fail(message: str) -> typer.Exit:
    console.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code=2)


def _load(path: Path) -> PipelineConfig:
    try:
        return load_pipeline(path)
    except ConfigError as error:
        raise _fail(str(error)) from None


def _with_budget(pipeline: PipelineConfig, **limits: float | None) -> PipelineConfig:
    """The pipeline with the given budget limits overridden, validated like a config file."""
    from itc.types import Budget

    given = {name: value for name, value in limits.items() if value is not None}
    if not given:
        return pipeline
    try:
        budget = Budget.model_validate({**pipeline.budget.model_dump(), **given})
    except ValidationError:
        shown = ", ".join(f"--budget-{k.replace('_', '-')} {v}" for k, v in given.items())
        raise _fail(f"{shown}: budget limits must be positive numbers") from None
    return pipeline.model_copy(update={"budget": budget})


def _writable_dir(path: Path, option: str) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise _fail(f"{option} {path}: cannot use it as a folder ({error.strerror})") from None


def _guard(run):  # type: ignore[no-untyped-def]
    """One clear message instead of a traceback for the errors a user can fix."""
    try:
        return run()
    except (ConfigError, DatasetError, BackendError, ServerStartError, SetupError) as error:
        raise _fail(str(error)) from None


def _named_urls(
    values: list[str] | None, option: str = "--reward-url", default: str | None = "prm"
) -> dict[str, str]:
    """NAME=URL values by backend name; a bare URL is the `default` backend (if any)."""
    named: dict[str, str] = {}
    for value in values or []:
        name, sep, url = value.partition("=")
        if not sep or "://" in name or not name.replace("_", "").replace("-", "").isalnum():
            if default is None:
                raise _fail(f"{option} {value}: expected NAME=URL")
            name, url = default, value
        if name in named:
            raise _fail(f"{option}: backend {name!r} given twice")
        named[name] = url
    return named


@asynccontextmanager
async def _named_backends(
    values: list[str] | None, models: list[str] | None = None
) -> AsyncIterator[dict[str, Backend]]:
    """Connected named backends for the runtime (reward models, other generators), closed on
    the way out."""
    from itc.backends.connect import connect

    rewards = _named_urls(values)
    generators = _named_urls(models, "--model-url", None)
    for name in rewards.keys() & generators.keys():
        raise _fail(f"--model-url {name}: that name is a --reward-url backend too")
    async with AsyncExitStack() as stack:
        backends: dict[str, Backend] = {}
        for name, url in {**rewards, **generators}.items():
            backends[name] = await stack.enter_async_context(connect(url, None, console))
        yield backends


@asynccontextmanager
async def _servers(
    base_url: str | None,
    model: str | None,
    api_key: str | None,
    max_model_len: int | None,
    reward_url: list[str] | None,
    model_url: list[str] | None,
) -> AsyncIterator[tuple[Backend, dict[str, Backend]]]:
    """The run's own server (started when no --base-url) and its named ones, closed on the
    way out: what `run`, `bench` and `search` all connect to."""
    from itc.backends.connect import connect

    async with (
        connect(base_url, model, console, api_key=api_key, max_model_len=max_model_len) as own,
        _named_backends(reward_url, model_url) as named,
    ):
        yield own, named


@app.command()
def setup(model: Model = None) -> None:
    """Prepare the local server's cached environment and model (idempotent)."""
    from itc.backends.connect import DEFAULT_MODEL
    from itc.backends.local.environment import ensure_server_env
    from itc.backends.local.models import ensure_model

    _guard(lambda: (ensure_server_env(console), ensure_model(model or DEFAULT_MODEL, console)))
    console.print("[green]ready[/]")


@app.command()
def serve(
    model: Model = None,
    port: Annotated[int | None, typer.Option(help="Port on 127.0.0.1; default: free.")] = None,
    runner: Annotated[
        str,
        typer.Option(
            help="generate, or pooling: serve the model as a reward model (an outcome model "
            "on /classify; with --step-tag-id a process reward model on /pooling)."
        ),
    ] = "generate",
    step_tag_id: Annotated[
        int | None,
        typer.Option(min=0, help="With --runner pooling: the step-tag token a PRM scores at."),
    ] = None,
) -> None:
    """Run the local vLLM server in the foreground for other clients (Ctrl-C stops it)."""
    from itc.backends.connect import DEFAULT_MODEL
    from itc.backends.local.server import pooling_args, serve_forever

    if runner not in ("generate", "pooling"):
        raise _fail(f"--runner {runner}: expected generate or pooling")
    if step_tag_id is not None and runner != "pooling":
        raise _fail("--step-tag-id needs --runner pooling")
    extra = pooling_args(step_tag_id) if runner == "pooling" else []
    _guard(lambda: serve_forever(model or DEFAULT_MODEL, port, console, extra))


@app.command()
def run(
    config: Annotated[Path, typer.Argument(help="Pipeline YAML or JSON.")],
    problem: Annotated[str, typer.Option(help="The question to answer.")],
    base_url: BaseUrl = None,
    model: Model = None,
    api_key: ApiKey = None,
    max_model_len: MaxModelLen = None,
    reward_url: RewardUrls = None,
    model_url: ModelUrls = None,
    budget_tokens: Annotated[int | None, typer.Option(help="Hard token limit.")] = None,
    trace_json: Annotated[Path | None, typer.Option(help="Write the full trace here.")] = None,
    log_samples: Annotated[
        bool, typer.Option(help="Keep every prompt, sample and candidate in the trace.")
    ] = False,
) -> None:
    """Answer one problem with a pipeline; print the answer, usage and a trace summary."""
    from itc.planner.executor import Planner
    from itc.runtime.context import Runtime
    from itc.types import Problem
    from itc.verifiers.math import math_grader_if_installed

    pipeline = _with_budget(_load(config), tokens=budget_tokens)
    budget = pipeline.budget
    if trace_json is not None and trace_json.is_dir():
        raise _fail(f"--trace-json {trace_json} is a folder; give a file path")

    async def go():  # type: ignore[no-untyped-def]
        servers = _servers(base_url, model, api_key, max_model_len, reward_url, model_url)
        async with servers as (backend, backends), math_grader_if_installed() as grader:
            runtime = Runtime(
                backend=backend, grader=grader, log_samples=log_samples, backends=backends
            )
            planner = Planner(runtime)
            return await planner.run(pipeline, Problem(id="cli", prompt=problem), budget)

    with console.status(f"running {pipeline.name}", spinner="dots"):
        result = _guard(lambda: asyncio.run(go()))
    out.print(f"[bold]answer:[/] {result.answer}")
    if result.text is not None:
        out.print(f"[bold]solution:[/] {result.text.strip()}", highlight=False)
    u = result.usage
    tools = f", {u.tool_calls} tool calls" if u.tool_calls else ""
    out.print(
        f"[bold]usage:[/] {u.prompt_tokens} prompt + {u.completion_tokens} completion tokens, "
        f"{u.calls} calls{tools}, {u.wall_time:.1f}s"
    )
    if result.budget_exhausted:
        out.print(
            f"[yellow]budget exhausted:[/] {result.budget_exhausted} "
            f"({result.refused_calls} calls refused, {result.clipped_calls} clipped)"
        )
    if result.error:
        out.print(f"[red]error:[/] {result.error}")
    table = Table(title="trace by node")
    columns = ("node", "calls", *(["tool calls"] if tools else []), "prompt", "completion",
               "wall (s)", "call time (s)", "cancelled")
    for column in columns:
        table.add_column(column, justify="left" if column == "node" else "right")
    for node, s in result.trace.by_node().items():
        table.add_row(
            node,
            str(s.calls),
            *([str(s.tool_calls)] if tools else []),
            str(s.prompt_tokens),
            str(s.completion_tokens),
            f"{s.wall_time:.1f}",
            f"{s.latency:.1f}",
            str(s.cancelled),
        )
    out.print(table)
    if trace_json is not None:
        trace_json.write_text(json.dumps(result.model_dump(mode="json"), indent=2))
        console.print(f"trace written to {trace_json}")
    if result.error:
        raise typer.Exit(code=1)


@app.command()
def bench(
    configs: Annotated[list[Path], typer.Argument(help="One or more pipeline files.")],
    dataset: Annotated[
        str,
        typer.Option(
            help="gsm8k, aime2025, math500, humaneval, parallelqa, synthetic, "
            "or a .jsonl/.json path."
        ),
    ] = "gsm8k",
    limit: Annotated[int | None, typer.Option(min=1, help="Only the first N problems.")] = None,
    offset: Annotated[
        int, typer.Option(min=0, help="Skip the first N problems (then --limit counts).")
    ] = 0,
    sweep: Annotated[
        list[str] | None,
        typer.Option(
            help="PATH=V1,V2 or PATH=1..64 (powers of two); one run per value, "
            "e.g. main.inner.n=1..16. Repeatable: the cartesian product."
        ),
    ] = None,
    field: Annotated[
        list[str] | None, typer.Option(help="File field mapping: question=q, answer=a, id=uid.")
    ] = None,
    data_path: Annotated[Path | None, typer.Option(help="File for math500 / parallelqa.")] = None,
    difficulty: Annotated[int | None, typer.Option(help="synthetic: 1..5.")] = None,
    count: Annotated[int | None, typer.Option(help="synthetic: how many problems.")] = None,
    base_url: BaseUrl = None,
    model: Model = None,
    api_key: ApiKey = None,
    max_model_len: MaxModelLen = None,
    reward_url: RewardUrls = None,
    model_url: ModelUrls = None,
    output_dir: Annotated[Path, typer.Option(help="Results (JSONL, resumable).")] = Path("runs"),
    seed: Annotated[int, typer.Option(help="Run seed, part of the resume key.")] = 0,
    concurrency: Annotated[int, typer.Option(min=1, help="Max requests in flight.")] = 32,
    cache: Annotated[
        Path | None, typer.Option(help="SQLite response cache: identical requests replay.")
    ] = None,
    report: Annotated[bool, typer.Option(help="Write report.md and plots.")] = True,
    budget_tokens: Annotated[
        int | None, typer.Option(help="Hard token limit per problem, for every config.")
    ] = None,
    budget_calls: Annotated[
        int | None, typer.Option(help="Hard LLM-call limit per problem, for every config.")
    ] = None,
    log_samples: Annotated[
        bool,
        typer.Option(
            help="Keep every sample (prompt, text, scores, usage) and every ranked or voted "
            "candidate, losers included, in the result rows."
        ),
    ] = False,
) -> None:
    """Run pipelines over a dataset; print accuracy, tokens, calls and wall time side by side.

    Rerunning the same command resumes: finished problems are skipped.
    """
    from itc.backends.cache import CachedBackend
    from itc.bench.datasets import load_dataset, parse_fields
    from itc.bench.report import write_report
    from itc.bench.runner import merge_summaries, run_benchmark, summary_table
    from itc.bench.sweep import expand_sweeps, parse_sweep_options

    def prepare():  # type: ignore[no-untyped-def]
        pipelines = [
            _with_budget(load_pipeline(path), tokens=budget_tokens, calls=budget_calls)
            for path in configs
        ]
        if sweep:
            try:
                assignments = parse_sweep_options(sweep)
            except ValueError as error:
                raise ConfigError("--sweep", [str(error)]) from None
            pipelines = expand_sweeps(pipelines, assignments)
        options = {"difficulty": difficulty, "count": count, "path": data_path}
        data = load_dataset(
            dataset,
            limit,
            offset=offset,
            seed=seed,
            fields=parse_fields(field or []) or None,
            **{k: v for k, v in options.items() if v is not None},
        )
        if not data.problems:
            raise DatasetError(f"dataset {dataset!r} has no problems to run")
        return pipelines, data

    pipelines, data = _guard(prepare)
    _writable_dir(output_dir, "--output-dir")  # before a server is started for nothing

    async def go():  # type: ignore[no-untyped-def]
        servers = _servers(base_url, model, api_key, max_model_len, reward_url, model_url)
        async with servers as (backend, backends):
            runner = CachedBackend(backend, cache) if cache is not None else backend
            return await run_benchmark(
                pipelines,
                data,
                runner,
                backends=backends,
                output_dir=output_dir,
                seed=seed,
                max_in_flight=concurrency,
                console=console,
                log_samples=log_samples,
            )

    summaries = _guard(lambda: asyncio.run(go()))
    out.print(summary_table(summaries))
    summary_path = merge_summaries(output_dir / "summary.json", summaries)
    console.print(f"results in {output_dir}/ (summary: {summary_path})")
    if report:
        path = write_report([s.results_file for s in summaries], output_dir)
        console.print(f"report: {path}")
    errored = sum(s.errors for s in summaries)
    if errored:
        console.print(
            f"[red]{errored} problem runs ended in an error (counted apart from wrong answers); "
            "rerun the same command to retry just those.[/]"
        )
        raise typer.Exit(code=1)


@app.command(name="search")
def search_command(
    space: Annotated[Path, typer.Argument(help="Search space YAML (see examples/search/).")],
    dataset: Annotated[
        str, typer.Option(help="As for bench: a registered dataset or a .jsonl/.json path.")
    ] = "gsm8k",
    budget: Annotated[
        int, typer.Option(min=1, help="Generated tokens a problem: a hard limit and a constraint.")
    ] = 2000,
    trials: Annotated[
        int, typer.Option(min=1, help="Trials in the study, all workers together.")
    ] = 20,
    limit: Annotated[
        int | None, typer.Option(min=1, help="The full set: the first N problems.")
    ] = None,
    offset: Annotated[
        int, typer.Option(min=0, help="Skip the first N problems (then --limit counts), "
                          "e.g. to keep a benchmark's problems held out of the search.")
    ] = 0,
    difficulty: Annotated[int | None, typer.Option(help="synthetic: 1..5.")] = None,
    count: Annotated[int | None, typer.Option(help="synthetic: how many problems.")] = None,
    sample: Annotated[
        int, typer.Option(min=1, help="Problems each trial is scored on (the first N).")
    ] = 20,
    objectives: Annotated[
        str, typer.Option(help="accuracy (TPE), or accuracy,tokens (NSGA-II: a Pareto front).")
    ] = "accuracy",
    storage: Annotated[
        str | None,
        typer.Option(help="Optuna storage: an RDB URL or journal:PATH "
                     "(default sqlite:///OUTPUT_DIR/study.db)."),
    ] = None,
    study_name: Annotated[
        str | None, typer.Option(help="Default: SPACE-NAME-DATASET-BUDGET.")
    ] = None,
    concurrency: Annotated[int, typer.Option(min=1, help="Trials evaluated at once.")] = 2,
    top: Annotated[
        int, typer.Option(min=0, help="Best trials (or front members) rerun on the full set.")
    ] = 3,
    seed: Annotated[int, typer.Option(help="Sampler seed (give each worker its own).")] = 0,
    anytime: Annotated[
        bool,
        typer.Option(help="Also run configurations whose worst case exceeds --budget: the "
                     "hard budget stops them and they answer from what they have."),
    ] = False,
    stale_after: Annotated[
        float,
        typer.Option(min=0.1, help="Seconds without a heartbeat before another worker's "
                     "running trial counts as lost (failed, and its parameters retried)."),
    ] = 60.0,
    base_url: BaseUrl = None,
    model: Model = None,
    api_key: ApiKey = None,
    max_model_len: MaxModelLen = None,
    reward_url: RewardUrls = None,
    model_url: ModelUrls = None,
    output_dir: Annotated[
        Path, typer.Option(help="best.yaml, front.md/png, trials.csv, the study.")
    ] = Path("search"),
    max_in_flight: Annotated[int, typer.Option(min=1, help="Max requests in flight.")] = 32,
    cache: Annotated[
        Path | None,
        typer.Option(help="Response cache shared by the trials (default OUTPUT_DIR/cache.db)."),
    ] = None,
) -> None:
    """Search a space of pipelines with Optuna under a per-problem token budget.

    Rerunning the same command (or running several at once on one --storage) resumes and
    shares the study.
    """
    from itc.backends.cache import CachedBackend
    from itc.bench.datasets import load_dataset
    from itc.search.space import load_space
    from itc.search.study import SearchError, search

    if objectives not in ("accuracy", "accuracy,tokens"):
        raise _fail(f"--objectives {objectives}: expected accuracy or accuracy,tokens")

    def prepare():  # type: ignore[no-untyped-def]
        options = {"difficulty": difficulty, "count": count}
        data = load_dataset(
            dataset, limit, offset=offset, **{k: v for k, v in options.items() if v is not None}
        )
        if not data.problems:
            raise DatasetError(f"dataset {dataset!r} has no problems to run")
        return load_space(space), data

    searched, data = _guard(prepare)
    _writable_dir(output_dir, "--output-dir")

    def shown(trial) -> None:  # type: ignore[no-untyped-def]
        attrs = trial.user_attrs
        what = attrs.get("rejected") or (
            f"accuracy {attrs['accuracy']:.1%}, {attrs['tokens_per_problem']:.0f} tok/problem"
            if "accuracy" in attrs else ""
        )
        console.print(f"trial {trial.number} {trial.state.name.lower()}: {what}", highlight=False)

    async def go():  # type: ignore[no-untyped-def]
        servers = _servers(base_url, model, api_key, max_model_len, reward_url, model_url)
        async with servers as (backend, backends):
            runner = CachedBackend(backend, cache or output_dir / "cache.db")
            return await search(
                searched, data, runner, backends=backends,
                budget=budget, trials=trials, storage=storage,
                study_name=study_name, concurrency=concurrency, sample_size=sample,
                objectives=objectives, top=top, seed=seed, max_in_flight=max_in_flight,  # type: ignore[arg-type]
                output_dir=output_dir, stale_after=stale_after, on_trial=shown, anytime=anytime,
            )

    def run_search():  # type: ignore[no-untyped-def]
        try:
            return asyncio.run(go())
        except SearchError as error:
            raise _fail(str(error)) from None

    result = _guard(run_search)
    for name, path in result.files.items():
        console.print(f"{name}: {path}")
    if result.best is None:
        console.print("[yellow]no trial was feasible and evaluated: nothing to write as best.yaml")


@app.command()
def schema(
    output: Annotated[Path | None, typer.Option(help="Write here instead of stdout.")] = None,
) -> None:
    """Print the JSON schema of pipeline files (built-ins and installed plugins), for editors:
    e.g. `# yaml-language-server: $schema=pipeline.schema.json` at the top of a YAML file."""
    from itc.config import Registry

    text = json.dumps(Registry.default().json_schema(), indent=2)
    if output is None:
        print(text)
    else:
        output.write_text(text + "\n")
        console.print(f"schema written to {output}")


@app.command(name="report")
def report_command(
    results: Annotated[list[Path], typer.Argument(help="Result JSONL files or directories.")],
    out_dir: Annotated[Path, typer.Option(help="Where report.md and plots go.")] = Path("report"),
    pool: Annotated[
        list[str] | None,
        typer.Option(help="Config whose candidates are a pool of samples: report every budget."),
    ] = None,
    budgets: Annotated[
        str, typer.Option(help="Budgets (samples) priced from the pool, e.g. 1..16 or 1,3,5.")
    ] = "1..16",
) -> None:
    """Write a markdown report (tables, accuracy-vs-tokens and coverage plots) from results."""
    from itc.bench.pools import parse_budgets
    from itc.bench.report import write_report

    try:
        path = write_report(results, out_dir, pools=pool or (), budgets=parse_budgets(budgets))
    except (ValueError, OSError) as error:
        raise _fail(f"report of {', '.join(map(str, results))}: {error}") from None
    out.print(f"report written to {path}")


if __name__ == "__main__":
    app()
