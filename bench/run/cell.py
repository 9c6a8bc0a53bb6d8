"""The one cell lifecycle: setup → train → evaluate → reload check → record, for every task kind.

Each phase is measured (:class:`bench.run.profile.Phase`); the kind supplies what differs
(:class:`bench.kinds.base.TaskKind`). A failing cell returns a failed record with its reason
instead of raising, so a bug in one method never stops a suite or loses other results.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from bench.errors import CellError, failure_text, out_of_gpu_memory
from bench.kinds import get_kind
from bench.kinds.base import Setup
from bench.models.device import default_device
from bench.results.record import RunRecord, now
from bench.run.env import environment
from bench.run.profile import Phase, overall_peaks, train_figures
from bench.sdk import loop
from bench.sdk.loop import TrainStats
from bench.sdk.method import Fitted
from bench.spec.cells import ResolvedCell


@dataclass
class Curves:
    """Per-epoch curves a method logs through ``ctx.log`` (one list per key)."""

    values: dict[str, list[Any]] = field(default_factory=dict)
    on_row: Callable[[dict[str, Any]], None] | None = None
    """Also called with each row (a worker forwards per-epoch progress through it)."""

    def log(self, row: dict[str, Any]) -> None:
        """Append one row: each key's value to its curve."""
        for key, value in row.items():
            self.values.setdefault(key, []).append(value)
        if self.on_row is not None:
            self.on_row(row)


#: Curve keys shown in a worker's per-epoch progress line, when a row has them.
PROGRESS_KEYS = ("train_loss", "detector_train_loss", "val_loss", "val_accuracy", "n_selected_clean", "reward")


def progress_line(row: dict[str, Any]) -> str | None:
    """``epoch 3, train_loss 0.412, val_accuracy 0.873`` for a row with an epoch counter, else None."""
    epoch = next(((k, v) for k, v in row.items() if k.endswith("epoch")), None)
    if epoch is None:
        return None
    parts = [f"{epoch[0].replace('_', ' ')} {epoch[1]}"]
    for key in PROGRESS_KEYS:
        value = row.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            parts.append(f"{key} {value:.4g}")
    return ", ".join(parts)


@dataclass(frozen=True)
class CellResult:
    """A cell's record, and the per-item arrays stored beside it (empty when it failed)."""

    record: RunRecord
    predictions: dict[str, Any] = field(default_factory=dict)


def fit(setup: Setup) -> tuple[Fitted, list[TrainStats]]:
    """Run the method's ``fit``, collecting the stats of every training loop it runs."""
    sink: list[TrainStats] = []
    token = loop.STATS_SINK.set(sink)
    try:
        fitted = setup.method.fit(setup.ctx)
    except torch.cuda.OutOfMemoryError as err:
        raise CellError(f"{out_of_gpu_memory(err)} (during training)") from None
    except MemoryError:
        raise CellError("out of CPU memory during training") from None
    finally:
        loop.STATS_SINK.reset(token)
    return fitted, sink


#: A training loop whose last epoch's mean loss exceeds this multiple of its first epoch's diverged.
DIVERGED_FACTOR = 100.0


def diverged_message(stats: list[TrainStats]) -> str | None:
    """Says which training loop diverged (last epoch's loss > :data:`DIVERGED_FACTOR` × the first's), else None.

    A non-finite loss already fails the cell in the loop; this catches the finite blow-ups (an
    lr of 1e9 ends near 1e10) that would otherwise be stored as an ordinary success.
    """
    for i, s in enumerate(stats):
        losses = s.epoch_losses
        if len(losses) >= 2 and losses[0] > 0 and losses[-1] > DIVERGED_FACTOR * losses[0]:
            loop_name = f"training loop {i + 1} of {len(stats)}" if len(stats) > 1 else "training"
            return (f"{loop_name} diverged: last epoch's mean loss {losses[-1]:.4g} is "
                    f"{losses[-1] / losses[0]:.3g}× the first epoch's ({losses[0]:.4g})")
    return None


def run_cell(cell: ResolvedCell, data_dir: Path, progress: Any = None, execution: Any = None,
             on_row: Callable[[dict[str, Any]], None] | None = None) -> CellResult:
    """Execute one cell and return its record (success, or failed with the reason).

    ``execution`` (a :class:`bench.evaluate.code.CodeExecution`) is the run's opt-in to
    execute model-written code; only generation cells with HumanEval evaluations use it.
    ``on_row`` sees every curve row the method logs (per-epoch progress).
    """
    started = time.perf_counter()
    kind, curves, device = get_kind(cell.kind), Curves(on_row=on_row), default_device()
    common: dict[str, Any] = {"run_id": cell.run_id, "kind": cell.kind, "spec": cell.spec,
                              "env": environment(str(device)), "started_at": now()}
    efficiency: dict[str, Any] = {}
    noise: dict[str, Any] = {}
    try:
        with Phase("setup", device) as phase:
            setup = kind.setup(cell, data_dir, curves.log, progress)
        efficiency.update(phase.figures)
        noise = setup.noise
        with Phase("train", device) as phase:
            fitted, stats = fit(setup)
        efficiency.update(phase.figures, **train_figures(stats))
        result = kind.evaluate(setup, fitted, data_dir=data_dir, execution=execution)
        efficiency.update(result.efficiency)
        curves.values.update(result.curves)
        with Phase("reload", device) as phase:
            reload = kind.reload_check(setup, fitted)
        efficiency.update(phase.figures, adapter_bytes=reload["adapter_bytes"],
                          trainable_params=fitted.trainable_parameters(), total_params=fitted.total_parameters())
        metrics = {**result.metrics, "reload_max_abs_diff": reload["reload_max_abs_diff"]}
        efficiency.update(overall_peaks(efficiency), cell_wall_s=time.perf_counter() - started)
        diagnostics = dict(result.diagnostics)
        if (diverged := diverged_message(stats)) is not None:
            diagnostics["diverged"] = diverged
        record = RunRecord(**common, metrics=metrics, efficiency=efficiency, status="success", curves=curves.values,
                           noise=noise, diagnostics=diagnostics, finished_at=now())
        return CellResult(record, result.predictions)
    except Exception as err:  # a bug in a method must not stop the suite or lose other results
        error = failure_text(err)
    return CellResult(RunRecord(**common, efficiency=efficiency, status="failed", error=error, curves=curves.values,
                                noise=noise, finished_at=now()))


def summary_line(record: RunRecord) -> tuple[str, str]:
    """(the kind's one-line result of a successful record, its collapse warning or ``""``)."""
    warnings = [record.diagnostics.get(k) for k in ("collapsed", "diverged")]
    return get_kind(record.kind).summary_line(record.metrics), "".join(f" WARNING: {w}" for w in warnings if w)
