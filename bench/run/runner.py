"""Run a suite: resolve the grid, skip stored successes, execute the rest, store every outcome.

Every cell is resolved before any runs (:func:`resolve`): its method config built, its data
files digested, its run id computed; so an unknown method, a bad config, a method that does
not train the task's kind or missing data fails the whole command up front (exit 2) instead
of mid-suite. A failing cell is stored as failed with its reason and the run goes on; Ctrl-C
stores the cells in flight as canceled and stops. Records are written atomically, so a killed
run loses at most the cells in flight. Each cell runs in a fresh worker process
(:mod:`bench.run.parallel`, ``jobs`` at a time) so that its memory figures are its own, or as a
Ray task (:mod:`bench.run.ray_executor`), or with ``in_process`` in this process; either way
this process writes every record.
"""

from __future__ import annotations

import time
from dataclasses import asdict, fields, replace
from pathlib import Path
from typing import Any

import torch

from bench.errors import BenchError
from bench.kinds import get_kind
from bench.results.store import Store
from bench.run.cell import run_cell
from bench.run.jobs import Echo, Executor, Finish, Job, RunSummary
from bench.sdk.registry import get_method
from bench.sdk.scratch import sweep_scratch
from bench.spec.cells import Cell, ResolvedCell, plan
from bench.spec.config import build
from bench.spec.generation import code_evals, require_code_execution
from bench.spec.identity import run_id
from bench.spec.suite import Suite
from bench.spec.sweep import spec_value, sweep_grid


def resolve(cell: Cell, data_dir: Path) -> ResolvedCell:
    """The cell with its method config, noise, data digests, spec and run id.

    Raises:
        BenchError: unknown method, bad method config, missing data, unsupported task kind.
    """
    entry = get_method(cell.method.method)
    grid = sweep_grid(cell, entry)  # a trial's: its config values checked first, so that errors name the sweep
    config = build(entry.config, cell.method.config, f"{cell.suite}: methods.{cell.method.id}.config")
    noise = cell.noise
    task_map = getattr(cell.task, "pair_map", None)
    if noise.kind == "asymmetric" and noise.pair_map is None and task_map is not None:
        noise = replace(noise, pair_map=task_map)  # the task's default map (METHODS.md §1.2)
    omit = getattr(cell.task, "OMIT_WHEN_NONE", ())  # new optional fields leave old run ids as they were
    task: dict[str, Any] = {k: v for k, v in asdict(cell.task).items()
                            if k != "noise" and not (v is None and k in omit)}  # the cell's noise is below
    kind = get_kind(cell.kind)
    task.update(kind.resolve_task(cell.task, entry, data_dir, model=cell.model))
    kind.check_noise(cell.task, noise, data_dir)
    check = getattr(config, "check_train", None)  # a config's own rule against the training config
    if check is not None:
        try:
            check(cell.train)
        except ValueError as err:
            raise BenchError(f"{cell.suite}: methods.{cell.method.id}: {err}") from None
    spec = {
        "suite": cell.suite,
        "task": task,
        "noise": {**asdict(noise), "label": noise.label()},
        "model": {"name": cell.model},
        "method": {"id": cell.method.id, "name": entry.name, "version": entry.version, "config": config_spec(config)},
        "train": asdict(cell.train),
        "seed": cell.seed,
    }
    if grid is not None:  # which sweep and trial the cell is; not part of the run id (a trial is a plain cell's run)
        spec["sweep"] = {"grid": grid, "trial": {key: spec_value(spec, key) for key, _ in cell.trial}}
    return ResolvedCell(cell=cell, noise=noise, method=entry, config=config, spec=spec, run_id=run_id(spec))


def config_spec(config: Any) -> dict[str, Any]:
    """A method config as the spec records it: every field but those of ``OMIT_WHEN_DEFAULT`` at their default.

    A method that gains an option lists it there, so the cells that leave it at its default keep
    the run ids their stored runs have.
    """
    omit = getattr(config, "OMIT_WHEN_DEFAULT", ())
    defaults = {f.name: f.default for f in fields(config)}
    return {k: v for k, v in asdict(config).items() if not (k in omit and v == defaults.get(k))}


def resolve_suite(suite: Suite, data_dir: Path) -> list[ResolvedCell]:
    """Every cell of ``suite``, resolved (task-major order)."""
    return [resolve(cell, data_dir) for cell in plan(suite)]


def run_suite(suite: Suite, store: Store, *, data_dir: Path, force: bool = False, jobs: int = 1,
              progress: Any = None, echo: Echo = print, allow_code_execution: bool = False,
              allow_unsafe_network: bool = False, executor: Executor | None = None) -> RunSummary:
    """Run every cell of ``suite`` not already stored as a success.

    All cells are resolved before any runs (:func:`resolve_suite`). A suite with HumanEval
    evaluations is refused up front without ``allow_code_execution``, or where the sandbox
    cannot isolate programs and ``allow_unsafe_network`` is off. ``executor`` says where cells
    run (default: a fresh local worker process per cell, ``jobs`` at a time); a Ray cluster is
    joined and checked against the cells before the store is touched.
    """
    executor = executor or Executor()
    executor.check(jobs)
    if executor.kind == "ray":  # Ray installed and the address well-formed and reachable, before resolving
        from bench.run.ray_executor import probe, require_ray

        require_ray()
        probe(executor.address)
    cells = resolve_suite(suite, data_dir)
    execution = _code_execution(suite, allow_code_execution, allow_unsafe_network)
    cluster = _cluster(executor, cells, progress is not None)
    summary, bar = RunSummary(), None
    try:
        store.check_writable(suite.name)
        for path in store.sweep(suite.name):
            echo(f"removed {path.relative_to(store.root)}, left by a run that was killed")
        for path in sweep_scratch():
            echo(f"removed {path}, a scratch folder left by a run that was killed")
        bar = progress(total=len(cells), desc=suite.name, unit="cell") if progress else None
        todo = [Job(cell, f"[{i}/{len(cells)}]") for i, cell in enumerate(cells, start=1)]
        if not force:
            todo = [job for job in todo if not _stored(job, store, summary, echo, bar)]
        finish = Finish(store, summary, echo, bar, force=force, retries=executor.retries)
        if cluster is not None and todo:
            cluster.run(todo, data_dir=data_dir, execution=execution, finish=finish, verbose=progress is not None)
        elif executor.in_process:
            for job in todo:
                if finish.start(job):  # claimed: no other bench run on this store runs it
                    _run_here(job, data_dir, progress, execution, finish)
        elif todo:  # in workers even for one cell: its thread count must not depend on what is left
            from bench.run.parallel import run_parallel

            run_parallel(todo, data_dir=data_dir, jobs=jobs, execution=execution, finish=finish,
                         verbose=progress is not None, threads=None if jobs > 1 else torch.get_num_threads())
    finally:
        if bar is not None:
            bar.close()
        if cluster is not None:
            cluster.close()
    return summary


def _stored(job: Job, store: Store, summary: RunSummary, echo: Echo, bar: Any) -> bool:
    """Whether the job's cell is stored as a success (then it is skipped and said so)."""
    cell = job.cell
    if not store.succeeded(cell.spec["suite"], cell.cell.method.id, cell.run_id):
        return False
    summary.skipped.append(cell.run_id)
    echo(f"{job.tag} {cell.label}: stored ({cell.run_id}), skipped")
    if bar is not None:
        bar.update(1)
    return True


def _cluster(executor: Executor, cells: list[ResolvedCell], verbose: bool) -> Any:
    """The Ray cluster of a ``ray`` executor, connected and checked against the cells; None for ``local``."""
    if executor.kind != "ray":
        return None
    from bench.run.ray_executor import RayCluster

    cluster = RayCluster.connect(executor.address, verbose=verbose)
    try:
        cluster.check(cells)
    except BaseException:
        cluster.close()
        raise
    return cluster


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


def _run_here(job: Job, data_dir: Path, progress: Any, execution: Any, finish: Finish) -> None:
    start = time.perf_counter()
    try:
        result = run_cell(job.cell, data_dir, progress, execution)
    except KeyboardInterrupt:
        finish.canceled(job)
        raise
    finish(job, result, time.perf_counter() - start)
