"""peftbench: a benchmark and evaluation harness for parameter-efficient fine-tuning.

The public API is imported lazily, so ``import bench`` (and ``bench ls``) stays free of torch.
A method author imports from :mod:`bench.sdk` (docs/methods.md); docs/architecture.md maps the rest.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "BenchError",
    "FitContext",
    "Fitted",
    "Method",
    "RunRecord",
    "Store",
    "build_report",
    "load_suite",
    "register_method",
    "run_suite",
    "summarize",
    "validate_suites",
]

_WHERE = {
    "BenchError": "bench.errors",
    "FitContext": "bench.sdk.method",
    "Fitted": "bench.sdk.method",
    "Method": "bench.sdk.method",
    "RunRecord": "bench.results.record",
    "Store": "bench.results.store",
    "build_report": "bench.api",
    "load_suite": "bench.spec.suite",
    "register_method": "bench.sdk.registry",
    "run_suite": "bench.api",
    "summarize": "bench.api",
    "validate_suites": "bench.api",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'bench' has no attribute {name!r}")
