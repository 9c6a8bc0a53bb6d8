"""Run cells in worker processes, a fresh one per cell (``bench run``, ``--jobs N``).

Each cell runs in a fresh process started for it and ended after it, so its memory figures
(peak RSS, torch's CUDA peaks) describe that cell alone, not whatever an older worker ran
before it; ``--jobs 1`` runs so too (:mod:`bench.run.worker`: forked from a forkserver that
imported torch once for the run, or spawned where there are GPUs; ``--in-process`` runs cells
in the ``bench`` process itself, for a debugger). N workers run side by side with ``cpu_count // N`` torch threads each
(at least one; ``--jobs 1``: the thread count of the calling process), so N single-thread
workers on an N-core CPU give the same numbers as ``OMP_NUM_THREADS=1 bench run``: the thread
count changes the float reduction order, and that changes accuracy in seed-unstable cells
(results/baselines/README.md). Worker k gets GPU k mod n (:mod:`bench.run.devices`). Workers
only compute; the parent process writes every record, so the store has a single writer. A
worker that dies (killed, out of memory) fails its own cell only, which runs again up to
``retries`` times; the cells beside it go on.
"""

from __future__ import annotations

import os
import pickle
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from bench.errors import BenchError
from bench.run.cell import CellResult, progress_line, run_cell
from bench.run.devices import THREAD_VARS, visible_gpus, worker_env
from bench.run.worker import Start, work, worker_context

if TYPE_CHECKING:
    from multiprocessing.process import BaseProcess

    from bench.run.jobs import Finish, Job

T = TypeVar("T")

DIED = "its worker process died (killed, or out of memory?)"
"""The reason stored for a cell whose worker ended without a result."""


def threads_per_job(jobs: int) -> int:
    """Torch threads for each of ``jobs`` workers: the cores shared out, at least one."""
    return max(1, (os.cpu_count() or 1) // jobs)


@contextmanager
def child_env(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables that a child started inside the block inherits; restore them after."""
    old = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in old.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextmanager
def thread_env(threads: int) -> Iterator[None]:
    """Set the thread-count variables that spawned children read when torch starts."""
    with child_env({name: str(threads) for name in THREAD_VARS}):
        yield


def timed_cell(job: Job, data_dir: Path, execution: Any = None, verbose: bool = False) -> tuple[CellResult, float]:
    """Run one job's cell in a worker; (its result, seconds).

    ``verbose``: print a line per training epoch to stderr (``[3/24] <cell>: epoch 2, train_loss
    …``), so a long cell on a worker shows progress before it ends.
    """
    def show(row: dict[str, Any]) -> None:
        line = progress_line(row)
        if line is not None:
            print(f"{job.tag} {job.cell.label}: {line}", file=sys.stderr, flush=True)

    start = time.perf_counter()
    result = run_cell(job.cell, data_dir, None, execution, on_row=show if verbose else None)
    return result, time.perf_counter() - start


@dataclass
class _Worker:
    process: BaseProcess
    conn: Connection
    item: Any


class CellPool(Generic[T]):
    """Runs items on up to ``jobs`` workers as ``fn(item, data_dir) -> (result, seconds)``, a process per item.

    :meth:`results` yields ``(item, result, seconds)`` as items finish, or ``(item, None,
    reason)`` when an item's worker died (the caller may put it back in :attr:`queue`). A
    worker's death touches no other worker. :attr:`in_flight` holds the items running now, so a
    Ctrl-C anywhere can store them as canceled; :meth:`stop` kills the workers. ``threads``:
    each worker's torch threads (default :func:`threads_per_job`); ``gpus``: the GPUs to hand
    out, worker k getting ``gpus[k % n]`` (default :func:`bench.run.devices.visible_gpus`).
    """

    def __init__(self, todo: list[T], data_dir: Path, jobs: int, fn: Callable[..., tuple[Any, float]], *,
                 on_start: Callable[[T], None] | None = None, may_start: Callable[[T], bool] | None = None,
                 threads: int | None = None, gpus: Sequence[str] | None = None) -> None:
        self.queue, self.data_dir, self.jobs, self.fn = list(todo), data_dir, jobs, fn
        self.on_start, self.may_start = on_start, may_start
        self.threads = threads_per_job(jobs) if threads is None else threads
        self.gpus = list(visible_gpus() if gpus is None else gpus)
        self.workers: dict[int, _Worker] = {}  # slot (0..jobs-1) -> the worker running there
        self._starting: tuple[int, T] | None = None  # (slot, item) while its worker is being started

    @property
    def in_flight(self) -> dict[int, T]:
        """Slot -> the item running (or being started) there."""
        items = {slot: worker.item for slot, worker in self.workers.items()}
        if self._starting is not None:
            items[self._starting[0]] = self._starting[1]
        return items

    def pids(self) -> list[int]:
        """The process ids of the workers running now."""
        return [w.process.pid for w in self.workers.values() if w.process.pid is not None and w.process.is_alive()]

    def results(self) -> Iterator[tuple[T, Any, float | str]]:
        """Run everything; yield each item's outcome as it finishes."""
        try:
            while self.queue or self.workers:
                self._fill()
                if not self.workers:
                    continue  # every item left was refused by may_start
                ready = wait([w.conn for w in self.workers.values()] +
                             [w.process.sentinel for w in self.workers.values()])
                for slot, worker in list(self.workers.items()):
                    if worker.conn in ready or worker.process.sentinel in ready:
                        outcome = self._collect(worker)  # when it raises, the item stays in flight
                        del self.workers[slot]
                        yield outcome
        finally:
            self.stop()

    def _fill(self) -> None:
        """Start a worker in each free slot while items are queued."""
        while self.queue and len(self.workers) < self.jobs:
            item = self.queue.pop(0)
            if self.may_start is not None and not self.may_start(item):
                continue  # e.g. claimed by another bench run on the same store
            slot = min(set(range(self.jobs)) - set(self.workers))
            self._starting = (slot, item)
            self.workers[slot] = self._spawn(slot, item)
            self._starting = None
            if self.on_start is not None:
                self.on_start(item)

    def _spawn(self, slot: int, item: T) -> _Worker:
        payload = pickle.dumps((self.fn, item))  # here, so that an unpicklable item fails in this process
        context = worker_context(self.gpus)
        env = worker_env(slot, self.threads, self.gpus)
        receive, send = context.Pipe(duplex=False)
        process = context.Process(target=work, args=(send, Start.here(env), payload, self.data_dir),
                                  name=f"bench-worker-{slot}")
        with child_env(env):  # read by torch as it starts in a spawned child
            process.start()
        send.close()  # the child holds the other end: reading sees EOF once it is gone
        return _Worker(process, receive, item)

    def _collect(self, worker: _Worker) -> tuple[T, Any, float | str]:
        """The outcome of a worker that sent its result or ended."""
        try:
            kind, payload = worker.conn.recv()
        except (EOFError, OSError, pickle.UnpicklingError):  # ended without a word: killed, out of memory
            kind, payload = "died", None
        worker.conn.close()
        worker.process.join()
        if kind == "raised":
            raise payload
        if kind == "unloadable":
            raise BenchError(f"a worker process could not load its cell ({payload}): a method class must be "
                             "importable by a fresh Python process (a module or an installed package, not a "
                             "notebook or a script without `if __name__ == \"__main__\":`); or run in process "
                             "(--in-process)")
        if kind == "ok":
            result, seconds = payload
            return worker.item, result, seconds
        return worker.item, None, DIED

    def stop(self) -> None:
        """Kill the workers still running (Ctrl-C): their cells are lost anyway and must not outlive the run."""
        for worker in self.workers.values():
            if worker.process.is_alive():
                worker.process.kill()
        for worker in self.workers.values():
            worker.process.join(timeout=10)
            worker.conn.close()


def run_parallel(todo: list[Job], *, data_dir: Path, jobs: int, execution: Any, finish: Finish,
                 verbose: bool = False, threads: int | None = None) -> None:
    """Run ``todo`` on ``jobs`` workers, a fresh process per cell, handing each outcome to ``finish``.

    A cell whose worker died is finished as failed with that reason, and run again while
    ``finish`` allows (``--retries``); at Ctrl-C the workers are killed and every cell in flight
    is finished as canceled. ``threads``: each worker's torch threads (default
    :func:`threads_per_job`).
    """
    from functools import partial

    cells = CellPool(todo, data_dir, jobs, fn=partial(timed_cell, execution=execution, verbose=verbose),
                     on_start=lambda job: finish.echo(f"{job.tag} {job.cell.label}: started"),
                     may_start=finish.start, threads=threads)
    try:
        for job, result, seconds in cells.results():
            if result is None:  # the worker died: the cell failed, and says why
                if finish.lost(job, str(seconds)):
                    cells.queue.insert(0, job)
                continue
            finish(job, result, float(seconds))
    except KeyboardInterrupt:
        cells.stop()
        for job in cells.in_flight.values():
            finish.canceled(job)
        raise
    except BaseException:  # a cell no worker can load, a bug: nothing is stored for the cells in flight
        cells.stop()
        for job in cells.in_flight.values():
            finish.abandon(job)
        raise
