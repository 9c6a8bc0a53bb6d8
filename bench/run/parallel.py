"""Run cells in worker processes (``bench run --jobs N``).

Each worker is a fresh ``spawn`` process with ``cpu_count // N`` torch threads (at least one),
so N single-thread workers on an N-core CPU give the same numbers as ``OMP_NUM_THREADS=1 bench
run``: the thread count changes the float reduction order, and that changes accuracy in
seed-unstable cells (results/baselines/README.md). Workers only compute; the parent process
writes every record, so the store has a single writer. A worker that dies (killed, out of
memory) fails its cell with that reason and the rest of the suite goes on in a new pool.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from multiprocessing import get_context
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from bench.run.cell import CellResult, progress_line, run_cell

if TYPE_CHECKING:
    from bench.run.jobs import Finish, Job

T = TypeVar("T")

THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
MAX_REQUEUES = 2
"""How often a cell is put back after another worker's death before it is failed itself."""


def threads_per_job(jobs: int) -> int:
    """Torch threads for each of ``jobs`` workers: the cores shared out, at least one."""
    return max(1, (os.cpu_count() or 1) // jobs)


@contextmanager
def thread_env(threads: int) -> Iterator[None]:
    """Set the thread-count variables that spawned children read when torch starts."""
    old = {name: os.environ.get(name) for name in THREAD_VARS}
    os.environ.update({name: str(threads) for name in THREAD_VARS})
    try:
        yield
    finally:
        for name, value in old.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def die_with_parent(parent: int) -> None:
    """Have the kernel SIGKILL this process when its parent dies (Linux ``PR_SET_PDEATHSIG``).

    Without it a ``kill -9`` of ``bench run`` left its workers training, reparented to init. If
    the parent is already gone (it died before this ran), exit now. Elsewhere: a no-op.
    """
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux
        return
    if os.getppid() != parent:
        os._exit(1)


_STARTED: Any = None
"""In a worker: the pool's queue of ``(key, pid)``, one per item it starts (see :class:`CellPool`)."""


def _init_worker(threads: int, parent: int, started: Any = None) -> None:
    global _STARTED
    _STARTED = started
    die_with_parent(parent)
    import torch

    from bench.run.quiet import quiet_libraries

    torch.set_num_threads(threads)
    quiet_libraries()


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


def _started_call(key: int, fn: Callable[..., Any], *args: Any) -> Any:
    """In a worker: say which process runs item ``key``, then run it."""
    if _STARTED is not None:
        _STARTED.put((key, os.getpid()))
    return fn(*args)


def pool(jobs: int, started: Any = None) -> ProcessPoolExecutor:
    """A spawn pool of ``jobs`` workers with their share of the cores (``started``: see :func:`_started_call`)."""
    threads = threads_per_job(jobs)
    with thread_env(threads):
        executor = ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn"),
                                       initializer=_init_worker, initargs=(threads, os.getpid(), started))
        # workers start on the first submit; warm them now, inside the thread environment
        try:
            for f in [executor.submit(os.getpid) for _ in range(jobs)]:
                f.result()
        except BaseException:  # Ctrl-C or SIGTERM while they start: they must not outlive the run
            _kill(executor)
            raise
    return executor


def _kill(executor: ProcessPoolExecutor) -> None:
    processes = getattr(executor, "_processes", None) or {}
    for process in list(processes.values()):
        process.terminate()
    executor.shutdown(wait=False, cancel_futures=True)


class CellPool(Generic[T]):
    """Runs items on ``jobs`` workers as ``fn(item, data_dir) -> (result, seconds)``.

    :meth:`results` yields ``(item, result, seconds)`` as cells finish, or ``(item, None,
    reason)`` when its worker died. A dying worker breaks the whole pool; the items that were
    running on the other workers are put back at the head of the queue and run again in a new
    pool (each worker reports which item it started, and the dead one is the worker that did not
    end by the pool's own SIGTERM). :attr:`in_flight` holds the items submitted and not yet
    yielded, so a Ctrl-C anywhere can store them as canceled; :meth:`stop` kills the workers.
    """

    def __init__(self, todo: list[T], data_dir: Path, jobs: int, fn: Callable[..., tuple[Any, float]],
                 on_start: Callable[[T], None] | None = None, may_start: Callable[[T], bool] | None = None) -> None:
        self.queue, self.data_dir, self.jobs, self.fn = list(todo), data_dir, jobs, fn
        self.on_start, self.may_start = on_start, may_start
        self.in_flight: dict[Future[Any], T] = {}
        self.executor: ProcessPoolExecutor | None = None
        self._keys: dict[Future[Any], int] = {}
        self._requeued: dict[int, int] = {}  # id(item) -> times put back after another worker died

    def results(self) -> Iterator[tuple[T, Any, float | str]]:
        """Run everything; yield each cell's outcome as it finishes."""
        started = get_context("spawn").SimpleQueue()
        key = 0
        while self.queue:
            self.executor = pool(self.jobs, started)
            workers = dict(getattr(self.executor, "_processes", None) or {})  # pid -> Process, all started
            broken = False
            while (self.queue or self.in_flight) and not broken:
                while self.queue and len(self.in_flight) < self.jobs:
                    item = self.queue.pop(0)
                    if self.may_start is not None and not self.may_start(item):
                        continue  # e.g. claimed by another bench run on the same store
                    key += 1
                    future = self.executor.submit(_started_call, key, self.fn, item, self.data_dir)
                    self.in_flight[future], self._keys[future] = item, key
                    if self.on_start is not None:
                        self.on_start(item)
                done, _ = wait(self.in_flight, return_when=FIRST_COMPLETED)
                for future in done:
                    try:
                        result, seconds = future.result()
                    except BrokenProcessPool:
                        broken = True
                        continue
                    self._keys.pop(future, None)
                    yield self.in_flight.pop(future), result, seconds
            self.executor.shutdown(wait=True)
            if broken:
                yield from self._after_break(workers, _drain(started))

    def _after_break(self, workers: dict[int, Any], pids: dict[int, int]) -> Iterator[tuple[T, Any, float | str]]:
        """Fail the cells of the worker(s) that died; requeue the cells the pool's shutdown killed."""
        dead = {pid for pid, process in workers.items() if process.exitcode not in (None, 0, -signal.SIGTERM)}
        again = []
        for future in list(self.in_flight):
            item, pid = self.in_flight.pop(future), pids.get(self._keys.pop(future, -1))
            if not dead:  # cannot tell which worker died (say, one ended by an outside SIGTERM)
                yield item, None, "its worker process died, or another cell's did (killed, or out of memory?)"
            elif pid in dead:
                yield item, None, "its worker process died (killed, or out of memory?)"
            elif self._requeued.get(id(item), 0) >= MAX_REQUEUES:
                yield item, None, f"its pool broke {MAX_REQUEUES + 1} times while it ran (a worker died each time)"
            else:  # it was running, or waiting, when another worker died: run it again
                self._requeued[id(item)] = self._requeued.get(id(item), 0) + 1
                again.append(item)
        self.queue[:0] = again

    def stop(self) -> None:
        """Kill the workers (Ctrl-C): their cells are lost anyway and must not outlive the run."""
        if self.executor is not None:
            _kill(self.executor)


def _drain(queue: Any) -> dict[int, int]:
    """Everything the workers reported so far: item key -> worker pid."""
    found = {}
    while not queue.empty():
        key, pid = queue.get()
        found[key] = pid
    return found


def run_parallel(todo: list[Job], *, data_dir: Path, jobs: int, execution: Any, finish: Finish,
                 verbose: bool = False) -> None:
    """Run ``todo`` on ``jobs`` workers, handing each outcome to ``finish`` as it arrives.

    A cell whose worker died is finished as failed with that reason; at Ctrl-C the workers are
    killed and every cell in flight is finished as canceled.
    """
    from functools import partial

    from bench.run.jobs import interrupted

    cells = CellPool(todo, data_dir, jobs, fn=partial(timed_cell, execution=execution, verbose=verbose),
                     on_start=lambda job: finish.echo(f"{job.tag} {job.cell.label}: started"),
                     may_start=finish.start)
    try:
        for job, result, seconds in cells.results():
            if result is None:  # the worker died: the cell failed, and says why
                result, seconds = CellResult(interrupted(job, "failed", str(seconds))), 0.0
            finish(job, result, float(seconds))
    except KeyboardInterrupt:
        cells.stop()
        for job in cells.in_flight.values():
            finish.canceled(job)
        raise
