"""Run cells on a Ray cluster (``bench run --executor ray [--address auto|HOST:PORT]``).

One Ray task per cell. It reserves the cell's ``resources:`` (``num_cpus``, ``num_gpus``;
:mod:`bench.spec.resources`) and runs in a fresh worker process (``max_calls=1``), so the
cell's memory figures are its own; Ray sets ``CUDA_VISIBLE_DEVICES`` from the GPUs it reserved,
and the cell runs ``int(num_cpus)`` torch threads, so one-CPU cells give the numbers of
``--jobs N`` one-thread workers. Without ``--address`` a local Ray is started for the run and
stopped after it; ``auto`` joins the cluster ``ray start`` runs on this machine, ``HOST:PORT``
the one whose head listens there.

This process (the driver) alone writes the store, with the guarantees of ``--jobs``: stored
successes are skipped, every outcome is stored as it arrives (a failed cell with its reason),
a lost worker or node fails only its own cells, which run again up to ``--retries`` times, and
Ctrl-C or SIGTERM cancels the tasks in flight and stores their cells as canceled.

Workers read the data and the embedded weights from the paths the driver names: every node
needs the same environment and a shared filesystem (docs/scaling.md). Ray is imported here
only, and only for a run that asks for it.
"""

from __future__ import annotations

import logging
import signal
import socket
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.errors import BenchError
from bench.run.cell import CellResult

if TYPE_CHECKING:
    from bench.run.jobs import Finish, Job
    from bench.spec.cells import ResolvedCell
    from bench.spec.resources import Resources

#: Seconds to wait for a TCP connection to ``--address`` before calling it unreachable.
PROBE_TIMEOUT_S = 5.0
#: Seconds between checks for a finished task (Ctrl-C is handled between two).
POLL_S = 1.0
INSTALL_HINT = "pip install 'peftbench[ray]' (or pip install ray)"


def require_ray() -> Any:
    """The ``ray`` module, or a one-line :class:`BenchError` saying how to install it."""
    try:
        import ray  # type: ignore[import-not-found,unused-ignore]  # an optional extra: peftbench[ray]
    except ImportError:
        raise BenchError(f"--executor ray needs Ray, which is not installed: {INSTALL_HINT}") from None
    return ray


def probe(address: str | None) -> None:
    """Refuse a ``HOST:PORT`` address nothing listens at (``auto`` and None are left to Ray).

    Raises:
        BenchError: one line with the address and the system's reason.
    """
    if address is None or address == "auto":
        return
    target = address.removeprefix("ray://")
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise BenchError(f"--address {address!r}: expected auto or HOST:PORT (the head's GCS port, "
                         "6379 by default)")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=PROBE_TIMEOUT_S).close()
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise BenchError(f"cannot reach a Ray cluster at {address} ({reason}); start one with "
                         "`ray start --head` there (docs/scaling.md)") from None


def run_job(job: Job, data_dir: Path, execution: Any, threads: int, verbose: bool) -> tuple[CellResult, float]:
    """The Ray task: one cell with ``threads`` torch threads; (its result, seconds)."""
    import torch

    from bench.run.parallel import timed_cell
    from bench.run.quiet import quiet_libraries

    torch.set_num_threads(threads)
    quiet_libraries()
    return timed_cell(job, data_dir, execution, verbose)


def lost_reason(err: BaseException) -> str | None:
    """Why a cell's task ended without a result when its worker or node was lost; None for another error.

    ``ray.exceptions.RayTaskError`` (the task itself raised) and a cancellation are not losses.
    """
    name = type(err).__name__
    if name in ("RayTaskError", "TaskCancelledError") or not _is_ray_error(err):
        return None
    first = (str(err).strip().splitlines() or [""])[0][:200]
    if name == "OutOfMemoryError":
        return f"its Ray worker was killed by Ray's memory monitor (out of CPU memory): {first}"
    if name == "WorkerCrashedError":
        return "its Ray worker process died (killed, or out of memory?)"
    if name in ("NodeDiedError", "LocalRayletDiedError"):
        return f"the Ray node running it died ({name})"
    return f"its Ray task was lost ({name}: {first})"


def _is_ray_error(err: BaseException) -> bool:
    return any(c.__name__ == "RayError" and c.__module__.startswith("ray") for c in type(err).__mro__)


class RayCluster:
    """A connection to Ray for one run: checks what the suite asks for, runs its cells, disconnects."""

    def __init__(self, ray: Any, owned: bool) -> None:
        self.ray, self.owned = ray, owned

    @classmethod
    def connect(cls, address: str | None, *, verbose: bool = False) -> RayCluster:
        """Join the cluster at ``address`` (``auto``, ``HOST:PORT``), or start a local one (None).

        A Ray already initialised in this process (a notebook, the tests) is used as it is.

        Raises:
            BenchError: Ray missing, the address unreachable, or Ray refusing to connect.
        """
        ray = require_ray()
        probe(address)
        if ray.is_initialized():
            return cls(ray, owned=False)
        main = threading.current_thread() is threading.main_thread()
        handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)} if main else {}
        try:
            ray.init(address=address, include_dashboard=False, logging_level=logging.ERROR,
                     log_to_driver=verbose)
        except (ConnectionError, RuntimeError, ValueError) as err:
            where = f"at {address}" if address else "(a local one)"
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise BenchError(f"cannot connect to a Ray cluster {where}: {first}") from None
        finally:
            for sig, handler in handlers.items():  # Ray's own would end the run before it stores anything
                if handler is not None:
                    signal.signal(sig, handler)
        return cls(ray, owned=True)

    def nodes(self) -> list[tuple[float, float]]:
        """(CPUs, GPUs) of each live node."""
        return [(float(n["Resources"].get("CPU", 0)), float(n["Resources"].get("GPU", 0)))
                for n in self.ray.nodes() if n.get("Alive")]

    def check(self, cells: Sequence[ResolvedCell]) -> None:
        """Refuse a suite whose cells ask for more CPUs or GPUs than any one node of the cluster has.

        Raises:
            BenchError: one line naming the cell's method and task, and what the cluster has.
        """
        nodes = self.nodes()
        for kind, index in (("GPU", 1), ("CPU", 0)):
            largest = max((n[index] for n in nodes), default=0.0)
            for cell in cells:
                res = cell.cell.resources
                need = res.num_gpus if index else res.num_cpus
                if need > largest:
                    total = sum(n[index] for n in nodes)
                    raise BenchError(
                        f"{cell.cell.suite}: method {cell.cell.method.id} on task {cell.cell.task.name} asks for "
                        f"{need:g} {kind}{'s' if need != 1 else ''} per cell (resources.num_{kind.lower()}s), but "
                        f"the largest node of the Ray cluster has {largest:g} ({total:g} on {len(nodes)} "
                        f"node{'s' if len(nodes) != 1 else ''})")

    def window(self, shapes: Sequence[Resources]) -> int:
        """How many cells to keep submitted at once: as many of the smallest shape as the live nodes hold.

        So a submitted cell is running, or about to: a Ctrl-C cancels only those. (An autoscaling
        cluster grows on pending demand: ask it for nodes with ``ray.autoscaler.sdk.request_resources``
        or a minimum of workers, docs/scaling.md.)
        """
        cpus = min((r.num_cpus for r in shapes), default=1.0)
        gpus = min((r.num_gpus for r in shapes), default=0.0)
        fits = sum(int(min(c // cpus, g // gpus if gpus else c // cpus)) for c, g in self.nodes())
        return max(1, fits)

    def run(self, todo: list[Job], *, data_dir: Path, execution: Any, finish: Finish, verbose: bool = False) -> None:
        """Run ``todo`` as Ray tasks, handing each outcome to ``finish`` as it arrives."""
        task = self.ray.remote(max_calls=1, max_retries=0)(run_job)
        queue = list(todo)
        running: dict[Any, Job] = {}  # object ref -> its job
        shapes = [job.cell.cell.resources for job in todo]
        try:
            while queue or running:
                window = self.window(shapes) if queue else 0  # the nodes of now: a cluster may grow or shrink
                while queue and len(running) < window:
                    job = queue.pop(0)
                    if not finish.start(job):  # claimed by another bench run on this store
                        continue
                    res = job.cell.cell.resources
                    ref = task.options(num_cpus=res.num_cpus, num_gpus=res.num_gpus, name=f"cell {job.cell.run_id}") \
                        .remote(job, Path(data_dir).resolve(), execution, res.threads, verbose)
                    running[ref] = job
                    finish.echo(f"{job.tag} {job.cell.label}: submitted to Ray")
                done, _ = self.ray.wait(list(running), num_returns=1, timeout=POLL_S) if running else ([], [])
                for ref in done:
                    self._finish(running[ref], ref, queue, finish)
                    del running[ref]  # after: a Ctrl-C while it is stored still finds it in flight
        except KeyboardInterrupt:
            for ref, job in running.items():
                self.ray.cancel(ref, force=True)
                finish.canceled(job)
            raise

    def _finish(self, job: Job, ref: Any, queue: list[Job], finish: Finish) -> None:
        """Store one task's outcome; a cell whose worker was lost may go back to the head of ``queue``."""
        from bench.run.jobs import interrupted

        try:
            result, seconds = self.ray.get(ref)
        except self.ray.exceptions.RayError as err:
            reason = lost_reason(err)
            if reason is not None:
                if finish.lost(job, reason):
                    queue.insert(0, job)
                return
            cause = getattr(err, "cause", None) or err  # RayTaskError: the error the task raised
            lines = str(cause).strip().splitlines()
            text = f"its Ray task raised {type(cause).__name__}: {lines[-1] if lines else ''}"
            result, seconds = CellResult(interrupted(job, "failed", text)), 0.0
        finish(job, result, float(seconds))

    def close(self) -> None:
        """Stop the local Ray this run started, or leave the cluster it joined (a Ray this process had is kept)."""
        if self.owned:
            self.ray.shutdown()
