"""Benchmark datasets as tuples of `Problem`s, each tagged with the name of its grader.

:func:`load_dataset` (in `registry`) is the single entry point: a registry name or the path of
a JSONL/JSON file. `files` reads and checks rows, `named` loads the published benchmarks,
`synthetic` generates seeded arithmetic problems.

Graders (``Dataset.grader``), each grading through its answer kind (``Dataset.answer``):

* ``"math"``: mathematical equivalence (:class:`itc.verifiers.answers.MathAnswer`).
* ``"humaneval"``: run the completion against the task's tests
  (:class:`itc.verifiers.answers.CodeAnswer`); these problems carry no ``answer``.
* ``"exact"``: :func:`itc.verifiers.text.exact_match` (:class:`itc.verifiers.answers.TextAnswer`),
  normalised string equality, or numeric agreement at the gold answer's precision.
"""

from __future__ import annotations

from itc._lazy import lazy_exports

_EXPORTS = {
    "GRADERS": "itc.bench.datasets.base",
    "Dataset": "itc.bench.datasets.base",
    "DatasetError": "itc.bench.datasets.base",
    "Grader": "itc.bench.datasets.base",
    "Source": "itc.bench.datasets.base",
    "FIELD_ROLES": "itc.bench.datasets.files",
    "load_jsonl": "itc.bench.datasets.files",
    "parse_fields": "itc.bench.datasets.files",
    "gsm8k_gold": "itc.bench.datasets.named",
    "load_aime2025": "itc.bench.datasets.named",
    "load_gsm8k": "itc.bench.datasets.named",
    "load_humaneval": "itc.bench.datasets.named",
    "load_math500": "itc.bench.datasets.named",
    "load_parallelqa": "itc.bench.datasets.named",
    "parallelqa_path": "itc.bench.datasets.named",
    "apply_synthetic_step": "itc.bench.datasets.synthetic",
    "load_synthetic": "itc.bench.datasets.synthetic",
    "REGISTRY": "itc.bench.datasets.registry",
    "DatasetInfo": "itc.bench.datasets.registry",
    "Options": "itc.bench.datasets.registry",
    "load_dataset": "itc.bench.datasets.registry",
}
__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports("itc.bench.datasets", _EXPORTS)
