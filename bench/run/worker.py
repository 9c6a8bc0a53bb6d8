"""A cell's worker process: how it starts, and its whole life (``bench run``'s local executor).

Without GPUs a worker is forked from a forkserver that imported torch, transformers and peft
once for the run (:mod:`bench.run.preload`): a spawned worker spent about 4.4 s of every cell
importing them (2-core Xeon; docs/speed.md). With GPUs it is spawned, so that CUDA starts in it
after its ``CUDA_VISIBLE_DEVICES`` is set. Either way the worker starts as a spawned child of
``bench run`` would: with the parent's environment (plus its own thread count and GPU), working
directory, and standard output and error as they are when the worker starts (a forkserver's own
are those of the moment it started), and it dies with ``bench run``.
"""

from __future__ import annotations

import os
import pickle
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing import get_context, reduction
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from bench.processes import pid_alive
from bench.run.devices import THREAD_VARS

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>

#: What a worker forked from the forkserver has imported already (spawned workers import it as needed).
PRELOAD = ["bench.run.preload"]


def worker_context(gpus: Sequence[str]) -> Any:
    """``forkserver`` preloading :data:`PRELOAD` without GPUs; ``spawn`` with them.

    A forked worker must not inherit a started CUDA: it sets its own ``CUDA_VISIBLE_DEVICES``
    after the fork, which a CUDA started in the forkserver would ignore.
    """
    if gpus:
        return get_context("spawn")
    context = get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    return context


class InheritedFd:
    """A file descriptor of the parent that the child receives as a duplicate (spawn or forkserver).

    Pickled while the process starts, it asks multiprocessing to pass the descriptor along
    (``reduction.DupFd``), as it does for the child's pipe.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __reduce__(self) -> tuple[Any, tuple[Any]]:
        return _detach, (reduction.DupFd(self.fd),)


def _detach(dup: Any) -> int:
    return int(dup.detach())


@dataclass(frozen=True)
class Start:
    """What a worker starts from: its parent, environment, working directory, stdout and stderr."""

    parent: int
    environ: dict[str, str]
    cwd: str
    stdout: Any
    stderr: Any

    @classmethod
    def here(cls, env: dict[str, str]) -> Start:
        """This process as the parent, its environment updated with ``env`` (threads, GPU)."""
        return cls(os.getpid(), {**os.environ, **env}, os.getcwd(), InheritedFd(1), InheritedFd(2))

    def apply(self) -> None:
        """Become that: the environment replaced, the directory changed, fds 1 and 2 replaced."""
        os.environ.clear()
        os.environ.update(self.environ)
        os.chdir(self.cwd)
        for target, fd in ((1, self.stdout), (2, self.stderr)):
            if isinstance(fd, int) and fd != target:
                os.dup2(fd, target)
                os.close(fd)


def die_with_parent(parent: int) -> None:
    """Have the kernel SIGKILL this process when its parent dies (Linux ``PR_SET_PDEATHSIG``).

    Without it a ``kill -9`` of ``bench run`` left its workers training, reparented to init. A
    worker forked by the forkserver dies with the forkserver, which ends when ``bench run``
    (``parent``) does (:func:`leave_forkserver`). If ``parent`` is already gone (it died before
    this ran), exit now. Elsewhere than Linux: a no-op.
    """
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux
        return
    if not pid_alive(parent):
        os._exit(1)


def leave_forkserver() -> None:
    """Close this forked worker's copy of the forkserver's "alive" pipe (spawned workers have none).

    The forkserver ends when every holder of that pipe's write end is gone, and multiprocessing
    hands one to each process it forks. Kept, the workers would keep the forkserver alive after a
    ``kill -9`` of ``bench run``, and the forkserver the workers (they die with it): both would
    run on. Closed, the forkserver ends with ``bench run``.
    """
    from multiprocessing import forkserver

    server = getattr(forkserver, "_forkserver", None)
    fd = getattr(server, "_forkserver_alive_fd", None)
    if isinstance(fd, int):
        os.close(fd)
        setattr(server, "_forkserver_alive_fd", None)  # noqa: B010 - the stdlib's own name


def work(conn: Connection, start: Start, payload: bytes, data_dir: Path) -> None:
    """A worker's whole life: its start applied, one pickled ``(fn, item)``, its outcome sent back.

    The outcome is ``("ok", result)``, ``("raised", error)`` or ``("unloadable", text)`` when the
    payload does not unpickle here (a class the worker cannot import).
    """
    die_with_parent(start.parent)
    leave_forkserver()
    start.apply()
    try:
        import torch

        from bench.run.quiet import quiet_libraries

        torch.set_num_threads(int(start.environ[THREAD_VARS[0]]))
        quiet_libraries()
        try:
            fn, item = pickle.loads(payload)
        except Exception as err:  # noqa: BLE001 - said to the parent in one line
            outcome: tuple[str, Any] = ("unloadable", f"{type(err).__name__}: {err}")
        else:
            outcome = ("ok", fn(item, data_dir))
    except KeyboardInterrupt:  # Ctrl-C reaches the whole process group; the parent stores the cell
        os._exit(130)
    except BaseException as err:  # noqa: BLE001 - the parent re-raises it
        outcome = ("raised", err)
    try:
        conn.send(outcome)
    except Exception as err:  # an unpicklable result or error
        conn.send(("raised", RuntimeError(f"a worker could not send its outcome back: {err!r}")))
    conn.close()
