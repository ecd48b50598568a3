"""Benchmarks: datasets, graded and resumable runs, sweeps, and reports read from results.

Modules import downwards only. `values` (value lists written on a command line) and `results`
(result rows and their statistics) import nothing from itc; `plots`, `pools` (budgets priced
from a sample pool) and `report` (the Markdown report) build on them, so writing a report
offline never loads configs, the planner or backends. `datasets` loads problems; `sweep`
(config variants) and `runner` (pipelines over a dataset) are the modules that need those.
"""

from __future__ import annotations

from itc._lazy import lazy_exports

_EXPORTS = {
    "Dataset": "itc.bench.datasets.base",
    "DatasetError": "itc.bench.datasets.base",
    "load_dataset": "itc.bench.datasets.registry",
    "Summary": "itc.bench.runner",
    "run_benchmark": "itc.bench.runner",
    "summary_table": "itc.bench.runner",
    "expand_sweeps": "itc.bench.sweep",
    "load_results": "itc.bench.results",
    "write_report": "itc.bench.report",
}
__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports("itc.bench", _EXPORTS)
