"""A cgroup per sandboxed program: one bound on the memory and processes of all its processes.

``RLIMIT_AS`` and ``RLIMIT_NPROC`` bound each process; a cgroup bounds their sum, and it also
counts memory that no address space holds (tmpfs files, page cache). Where the harness may
create one, each program runs in its own child of the harness's cgroup:

- cgroup v2, when the harness's cgroup delegates the ``memory`` and ``pids`` controllers (its
  ``cgroup.subtree_control`` lists them, or they can be enabled there, as at the root of a
  container's cgroup namespace): ``memory.max``, ``memory.swap.max`` 0 and ``pids.max``;
- else cgroup v1, when the ``memory`` and ``pids`` hierarchies are mounted and writable:
  ``memory.limit_in_bytes`` (and ``memory.memsw.limit_in_bytes`` where swap is accounted) and
  ``pids.max``;
- else none: the per-process limits alone apply (see docs/sandbox.md).

The launcher moves itself in (its first step, before it forks), so everything the program
starts is inside. When the memory bound is hit the kernel's OOM killer ends a process of the
group, which :meth:`Cgroup.oom_killed` reports.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path

PREFIX = "peftbench-sandbox-"
_RMDIR_S = 2.0


@dataclass(frozen=True)
class Cgroup:
    """The cgroup directories of one program (one for v2, one per controller for v1)."""

    version: int
    dirs: tuple[Path, ...]

    @property
    def procs_files(self) -> list[str]:
        """The ``cgroup.procs`` files the launcher writes its pid to."""
        return [str(d / "cgroup.procs") for d in self.dirs]

    def oom_killed(self) -> bool:
        """Whether the kernel killed a process of the group for exceeding the memory bound."""
        name = "memory.events" if self.version == 2 else "memory.oom_control"
        for d in self.dirs:
            with contextlib.suppress(OSError, ValueError):
                fields = dict(line.split() for line in (d / name).read_text().splitlines())
                if int(fields.get("oom_kill", 0)) > 0:
                    return True
        return False

    def remove(self) -> None:
        """Remove the directories (retrying while the kernel still counts exiting processes)."""
        deadline = time.monotonic() + _RMDIR_S
        for d in self.dirs:
            while True:
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        break
                    time.sleep(0.01)


def _own_paths() -> dict[str, str]:
    """The harness's cgroup per controller (``""`` for v2), from ``/proc/self/cgroup``."""
    paths = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for name in controllers.split(",") if controllers else [""]:
            paths[name] = path
    return paths


def _mounts() -> dict[str, tuple[str, Path]]:
    """``"cgroup2"`` and each v1 controller: (the hierarchy's folder mounted, its mount point)."""
    found: dict[str, tuple[str, Path]] = {}
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        sep = fields.index("-")
        fstype, options = fields[sep + 1], fields[sep + 3].split(",")
        names = ["cgroup2"] if fstype == "cgroup2" else [n for n in ("memory", "pids") if n in options]
        for name in names if fstype in ("cgroup", "cgroup2") else []:
            found.setdefault(name, (fields[3], Path(fields[4])))
    return found


def _folder(mount: tuple[str, Path], own: str) -> Path:
    """Where the cgroup ``own`` (a path in the hierarchy) is under ``mount``."""
    root, point = mount
    relative = Path(own).relative_to(root)  # ValueError if the mount does not show it
    return point / relative


def _make(parent: Path, name: str, settings: dict[str, str]) -> Path:
    path = parent / name
    path.mkdir()
    try:
        for key, value in settings.items():
            if key.endswith("?"):
                with contextlib.suppress(OSError):
                    (path / key[:-1]).write_text(value)
            else:
                (path / key).write_text(value)
    except OSError:
        path.rmdir()
        raise
    return path


def _v2(mount: tuple[str, Path], own: str, name: str, memory: int, pids: int) -> Cgroup:
    parent = _folder(mount, own)
    control = parent / "cgroup.subtree_control"
    if not {"memory", "pids"} <= set(control.read_text().split()):
        control.write_text("+memory +pids")
    path = _make(parent, name, {"memory.max": str(memory), "memory.swap.max?": "0", "pids.max": str(pids)})
    return Cgroup(2, (path,))


def _v1(mounts: dict[str, tuple[str, Path]], own: dict[str, str], name: str, memory: int, pids: int) -> Cgroup:
    mem = _make(_folder(mounts["memory"], own["memory"]), name,
                {"memory.limit_in_bytes": str(memory), "memory.memsw.limit_in_bytes?": str(memory)})
    try:
        pid = _make(_folder(mounts["pids"], own["pids"]), name, {"pids.max": str(pids)})
    except OSError:
        mem.rmdir()
        raise
    return Cgroup(1, (mem, pid))


def create(token: str, memory_bytes: int, max_procs: int) -> Cgroup | None:
    """A fresh cgroup for one program, or None where the host does not let the harness make one."""
    name = PREFIX + token
    try:
        own, mounts = _own_paths(), _mounts()
        if "cgroup2" in mounts and "" in own:
            with contextlib.suppress(OSError):
                return _v2(mounts["cgroup2"], own[""], name, memory_bytes, max_procs)
        if {"memory", "pids"} <= mounts.keys() and {"memory", "pids"} <= own.keys():
            return _v1(mounts, own, name, memory_bytes, max_procs)
    except (OSError, ValueError):
        return None
    return None
