"""The task-kind contract: what the one cell lifecycle (:mod:`bench.run.cell`) asks of a kind.

A kind turns a resolved cell into a method's :class:`~bench.sdk.method.FitContext` and scores
what the method fitted. Classification and generation are the two kinds; a new kind is one
module implementing :class:`TaskKind` plus one line in :data:`bench.kinds.KINDS`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from bench.sdk.method import FitContext, Fitted, Method
from bench.sdk.registry import MethodEntry
from bench.spec.cells import ResolvedCell

Log = Callable[[dict[str, Any]], None]


class Setup(Protocol):
    """What a kind prepared for one cell; the lifecycle reads these three attributes."""

    ctx: FitContext
    method: Method
    noise: dict[str, Any]
    """The record's ``noise`` section (realised rate, counts, matrix), empty where none applies."""


@dataclass
class Evaluation:
    """What a kind measured on a fitted model: the record's sections and the per-item arrays."""

    metrics: dict[str, Any]
    efficiency: dict[str, Any]
    diagnostics: dict[str, Any]
    curves: dict[str, list[Any]] = field(default_factory=dict)
    predictions: dict[str, Any] = field(default_factory=dict)
    """Per-item arrays (test ids, labels, probabilities; per-sample scores) for the ``.npz``."""


def split_diagnostics(diagnostics: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(JSON-able diagnostics for the record, per-training-sample arrays for the npz beside it)."""
    kept, arrays = {}, {}
    for key, value in diagnostics.items():
        if isinstance(value, np.ndarray):
            arrays[f"train_{key}"] = value
        elif key != "selection_history":
            kept[key] = value
    return kept, arrays


class TaskKind(Protocol):
    """One kind of task: resolution, setup, evaluation, reload check and the per-cell line."""

    name: str

    def resolve_task(self, task: Any, method: MethodEntry, data_dir: Path, *, model: str) -> dict[str, Any]:
        """Spec fields that pin the task's inputs (data digests, task-config hashes).

        Raises:
            BenchError: missing data, a method that does not train this kind, or a base model
            (the suite's ``model``) of the wrong family.
        """
        ...

    def check_noise(self, task: Any, noise: Any, data_dir: Path) -> None:
        """Refuse label noise the task's data cannot take (e.g. a pair map for another class count).

        Raises:
            BenchError: one line naming the task.
        """
        ...

    def setup(self, cell: ResolvedCell, data_dir: Path, log: Log, progress: Any) -> Setup:
        """Load data and base model; build the method and its context."""
        ...

    def evaluate(self, setup: Any, fitted: Fitted, *, data_dir: Path, execution: Any) -> Evaluation:
        """Score the fitted model (timing its evaluation phases)."""
        ...

    def reload_check(self, setup: Any, fitted: Fitted) -> dict[str, float]:
        """Save, reload on a fresh base, compare; ``adapter_bytes`` and ``reload_max_abs_diff``.

        Raises:
            CellError: when the reloaded model predicts differently.
        """
        ...

    def summary_line(self, metrics: dict[str, Any]) -> str:
        """The runner's one-line result of a successful cell (its headline metrics)."""
        ...
