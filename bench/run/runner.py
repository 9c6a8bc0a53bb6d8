"""Run a suite: plan the grid, skip stored successes, execute the rest, store every outcome.

A failing cell is stored as failed with its reason and the run goes on; Ctrl-C stores the
cell in flight as canceled and stops. Records are written atomically, so a killed run loses
at most the cell in flight.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.kinds import classification as execute
from bench.spec.cells import Cell, plan, resolve_spec
from bench.run.env import environment
from bench.errors import BenchError, failure_text
from bench.evaluate.classification import (
    classification_metrics,
    collapse_message,
    detection_metrics,
    relabel_metrics,
    selection_curves,
)
from bench.spec.generation import GenerationTaskSpec, code_evals, require_code_execution
from bench.run.profile import Phase, overall_peaks, train_figures
from bench.results.record import make_record, now, run_id
from bench.results.store import Store
from bench.spec.suite import Suite


@dataclass
class RunSummary:
    """What a run did, cell by cell."""

    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)


def run_cell(cell: Cell, spec: dict[str, Any], rid: str, data_dir: Path, progress: Any,
             execution: Any = None) -> dict[str, Any]:
    """Execute one cell and return its record (success, or failed with the reason).

    ``execution`` (a :class:`bench.evaluate.code.CodeExecution`) is the run's opt-in to
    execute model-written code; only generation cells with HumanEval evaluations use it.
    """
    if isinstance(cell.task, GenerationTaskSpec):
        from bench.kinds.generation import run_generation_cell

        return run_generation_cell(cell, spec, rid, data_dir, progress, execution)
    curves: dict[str, list[Any]] = {}

    def log(row: dict[str, Any]) -> None:
        for key, value in row.items():
            curves.setdefault(key, []).append(value)

    started, device = now(), execute.device_for(cell)
    common = {"run_id": rid, "spec": spec, "env": environment(str(device)), "started_at": started}
    efficiency: dict[str, Any] = {}
    noise: dict[str, Any] = {}
    try:
        with Phase("setup", device) as phase:
            s = execute.setup(cell, data_dir, log, progress)
        efficiency.update(phase.figures)
        noise = {"realised_rate": s.noise.realised_rate, "counts": s.noise.counts,
                 "matrix": s.noise.matrix, "info": s.noise.info}
        with Phase("train", device) as phase:
            fitted, stats = execute.fit(s)
        efficiency.update(phase.figures, **train_figures(stats))
        probs, eval_figures = execute.predict(s, fitted)
        efficiency.update(eval_figures)
        metrics = classification_metrics(probs, s.test.labels)
        variants = execute.predict_variants(s, fitted)
        if variants:
            metrics["variants"] = {name: classification_metrics(p, s.test.labels) for name, p in variants.items()}
        diagnostics, train_arrays = execute.split_diagnostics(fitted.diagnostics)
        collapsed = collapse_message(probs, s.test.labels, s.data.label_names)
        if collapsed:
            diagnostics["collapsed"] = collapsed
        metrics.update(detection_metrics(fitted.diagnostics, s.truly_clean))
        truth = s.data.train.truth
        curves.update(selection_curves(fitted.diagnostics.get("selection_history", []), s.truly_clean,
                                       s.ctx.train.labels, truth))
        if "relabels" in fitted.diagnostics:
            relabelled, diagnostics["relabel_confusion"] = relabel_metrics(fitted.diagnostics["relabels"], truth,
                                                                           s.data.n_classes)
            metrics.update(relabelled)
        with Phase("reload", device) as phase:
            reload = execute.reload_check(s, fitted)
        efficiency.update(phase.figures, adapter_bytes=reload["adapter_bytes"],
                          trainable_params=fitted.trainable_parameters(),
                          total_params=fitted.total_parameters())
        metrics["reload_max_abs_diff"] = reload["reload_max_abs_diff"]
        efficiency.update(overall_peaks(efficiency))
        record = make_record(**common, metrics=metrics, efficiency=efficiency, status="success",
                             curves=curves, noise=noise, diagnostics=diagnostics, finished_at=now())
        record["_predictions"] = {"ids": s.test.ids, "labels": s.test.labels, "probs": probs.astype("float32"),
                                  **({"train_ids": s.ctx.train.ids, **train_arrays} if train_arrays else {})}
        return record
    except Exception as err:  # a bug in a method must not stop the suite or lose other results
        error = failure_text(err)
    return make_record(**common, efficiency=efficiency, status="failed", error=error,
                       curves=curves, noise=noise, finished_at=now())


def _store(store: Store, record: dict[str, Any]) -> Path:
    predictions = record.pop("_predictions", None)
    if predictions is not None:
        spec = record["spec"]
        store.write_predictions(spec["suite"], spec["method"]["id"], record["run_id"], predictions)
    return store.write(record)


def run_suite(suite: Suite, store: Store, *, data_dir: Path, force: bool = False, jobs: int = 1,
              progress: Any = None, echo: Callable[[str], None] = print,
              allow_code_execution: bool = False, allow_unsafe_network: bool = False) -> RunSummary:
    """Run every cell of ``suite`` not already stored as a success.

    All cells are resolved before any runs, so an unknown method, a bad method config or a
    missing dataset fails the whole command up front (exit 2) instead of mid-suite. So does a
    suite with HumanEval evaluations without ``allow_code_execution``, or where the sandbox
    cannot isolate programs and ``allow_unsafe_network`` is off. With ``jobs > 1`` the cells
    run in that many worker processes (:mod:`bench.run.parallel`).
    """
    cells = plan(suite)
    specs = [resolve_spec(cell, data_dir) for cell in cells]
    execution = _code_execution(suite, allow_code_execution, allow_unsafe_network)
    summary = RunSummary()
    bar = progress(total=len(cells), desc=suite.name, unit="cell") if progress else None
    todo = []
    for i, (cell, spec) in enumerate(zip(cells, specs, strict=True), start=1):
        rid, tag = run_id(spec), f"[{i}/{len(cells)}]"
        if not force and store.succeeded(suite.name, cell.method.id, rid):
            summary.skipped.append(rid)
            echo(f"{tag} {cell.label}: stored ({rid}), skipped")
            if bar is not None:
                bar.update(1)
        else:
            todo.append((cell, spec, rid, tag))
    try:
        if jobs > 1 and len(todo) > 1:
            _run_parallel(todo, store, data_dir, jobs, summary, echo, bar, execution)
        else:
            for cell, spec, rid, tag in todo:
                _run_one(cell, spec, rid, store, data_dir, progress, summary, echo, tag, execution)
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return summary


def _code_execution(suite: Suite, allowed: bool, allow_unsafe_network: bool) -> Any:
    """The run's code-execution opt-in, checked before any cell trains (BenchError when refused)."""
    require_code_execution(suite.name, suite.tasks, allowed=allowed)
    if not code_evals(suite.tasks):
        return None
    from bench.evaluate.code import CodeExecution
    from bench.evaluate.sandbox import isolation_problem

    problem = isolation_problem()
    if problem is not None and not allow_unsafe_network:
        raise BenchError(f"the sandbox cannot isolate programs here ({problem}); pass --allow-unsafe-network "
                         "to run them with resource limits only (docs/sandbox.md)")
    return CodeExecution(allowed=True, allow_unsafe_network=allow_unsafe_network)


def _canceled(store: Store, cell: Cell, spec: dict[str, Any], rid: str, echo: Callable[[str], None],
              tag: str) -> None:
    _store(store, make_record(run_id=rid, spec=spec, env=environment("unknown"), status="canceled",
                              error="interrupted by the user", started_at=now(), finished_at=now()))
    echo(f"{tag} {cell.label}: canceled ({rid})")


def _run_one(cell: Cell, spec: dict[str, Any], rid: str, store: Store, data_dir: Path, progress: Any,
             summary: RunSummary, echo: Callable[[str], None], tag: str, execution: Any = None) -> None:
    start = time.perf_counter()
    try:
        record = run_cell(cell, spec, rid, data_dir, progress, execution)
    except KeyboardInterrupt:
        _canceled(store, cell, spec, rid, echo, tag)
        raise
    _finish(record, time.perf_counter() - start, cell, rid, store, summary, echo, tag)


def _run_parallel(todo: list[tuple[Cell, dict[str, Any], str, str]], store: Store, data_dir: Path, jobs: int,
                  summary: RunSummary, echo: Callable[[str], None], bar: Any, execution: Any = None) -> None:
    from functools import partial

    from bench.run.parallel import CellPool, _timed_cell

    cells = CellPool(todo, data_dir, jobs, fn=partial(_timed_cell, execution=execution),
                     on_start=lambda item: echo(f"{item[3]} {item[0].label}: started"))
    try:
        for (cell, spec, rid, tag), record, seconds in cells.results():
            if record is None:  # the worker died: the cell failed, and says why
                record = make_record(run_id=rid, spec=spec, env=environment("unknown"), status="failed",
                                     error=str(seconds), started_at=now(), finished_at=now())
                seconds = 0.0
            _finish(record, float(seconds), cell, rid, store, summary, echo, tag)
            if bar is not None:
                bar.update(1)
    except KeyboardInterrupt:
        cells.stop()
        for cell, spec, rid, tag in cells.in_flight.values():
            _canceled(store, cell, spec, rid, echo, tag)
        raise


def _finish(record: dict[str, Any], seconds: float, cell: Cell, rid: str, store: Store, summary: RunSummary,
            echo: Callable[[str], None], tag: str) -> None:
    summary.paths.append(_store(store, record))
    if record["status"] == "success":
        summary.ran.append(rid)
        m = record["metrics"]
        if isinstance(cell.task, GenerationTaskSpec):
            from bench.kinds.generation import summary_line

            echo(f"{tag} {cell.label}: {summary_line(m)} ({seconds:.0f} s, {rid})")
            return
        collapsed = record["diagnostics"].get("collapsed")
        echo(f"{tag} {cell.label}: accuracy {100 * m['accuracy']:.2f}%, ECE {100 * m['ece']:.2f}% "
             f"({seconds:.0f} s, {rid})" + (f" WARNING: {collapsed}" if collapsed else ""))
    else:
        summary.failed.append(rid)
        echo(f"{tag} {cell.label}: FAILED ({rid}): {record['error']}")
