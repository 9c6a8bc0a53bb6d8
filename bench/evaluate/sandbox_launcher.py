"""The sandbox's launcher: a separate process that isolates itself, then becomes the program.

:func:`bench.evaluate.sandbox.run_program` starts this file as ``python -I -S sandbox_launcher.py
CONFIG_JSON`` in a new session. It imports only the standard library (it runs under ``-I -S``)
and is never imported by the harness: doing the isolation here, rather than in a
``preexec_fn``, keeps it out of the harness's threads, where forking and then running Python
code is unsafe.

In isolated mode it:

1. makes a private mount namespace in which every mount is read-only and ``nosuid`` except a
   bind mount of the program's working directory (when run as root, this happens before the
   privileges are dropped, and an interpreter under a directory closed to others, such as
   ``/root``, is bind-mounted into a small tmpfs laid over that directory);
2. as root, drops to ``nobody`` (65534); a non-root user keeps its own uid;
3. unshares a user namespace (mapping only that one uid), and new mount, network (loopback
   only, down), PID, IPC and UTS namespaces;
4. forks a small init, PID 1 of the new PID namespace, which asks for SIGKILL if the launcher
   dies, mounts a fresh read-only ``/proc`` and forks the program's process (PID 2); that one
   sets the resource limits, reports ``ok`` on the status pipe and execs the interpreter. The
   init reaps orphans, reports ``exit <status>`` when the program ends, and exits; the kernel
   then kills every process left in the namespace.

In unsafe mode it only sets the resource limits and execs the program in place, so the
launcher's exit status is the program's.

Setup errors are written to the status pipe as ``error: <step>: <reason>`` and end the launcher
with exit status 125, so the harness can tell a broken sandbox from a failing program.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import signal
import stat
import sys
from typing import Any

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4

# mount_setattr(2), Linux >= 5.12; the number is the same on every architecture's unified table.
SYS_MOUNT_SETATTR = 442
AT_FDCWD = -100
AT_RECURSIVE = 0x8000
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2

NOBODY = 65534
SETUP_FAILED = 125

_libc = ctypes.CDLL(None, use_errno=True)


class SetupError(Exception):
    """A step of the isolation failed; the message names the step."""


class _MountAttr(ctypes.Structure):
    _fields_ = [
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    ]


def _check(result: int, step: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise SetupError(f"{step}: {os.strerror(err)}")


def _unshare(flags: int, step: str) -> None:
    _check(_libc.unshare(ctypes.c_int(flags)), step)


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    def enc(value: str | None) -> bytes | None:
        return None if value is None else value.encode()

    result = _libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data))
    _check(result, f"mount {target}")


def _set_mount_attr(path: str, *, set_: int = 0, clear: int = 0, recursive: bool = False) -> None:
    attr = _MountAttr(set_, clear, 0, 0)
    flags = AT_RECURSIVE if recursive else 0
    result = _libc.syscall(
        ctypes.c_long(SYS_MOUNT_SETATTR), ctypes.c_int(AT_FDCWD), path.encode(), ctypes.c_uint(flags),
        ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr)),
    )
    _check(result, f"mount_setattr {path}")


def _prctl(option: int, value: int) -> None:
    _check(_libc.prctl(ctypes.c_int(option), ctypes.c_ulong(value), 0, 0, 0), f"prctl {option}")


def _write_id_maps(uid: int, gid: int) -> None:
    # Map only the one uid and gid onto themselves: inside, the program is the same unprivileged
    # user, so exec() drops the namespace capabilities the launcher holds while it sets up.
    for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"), ("gid_map", f"{gid} {gid} 1")):
        try:
            with open(f"/proc/self/{name}", "w") as f:
                f.write(text)
        except OSError as exc:
            raise SetupError(f"write /proc/self/{name}: {exc.strerror}") from exc


def _closed_ancestor(path: str) -> str | None:
    """Return the first directory on ``path`` that others may not search, or None."""
    current = "/"
    for part in [p for p in path.split("/") if p]:
        current = os.path.join(current, part)
        if not os.stat(current).st_mode & stat.S_IXOTH:
            return current
    return None


def _expose_prefix(prefix: str) -> None:
    """Make the interpreter's prefix reachable for ``nobody`` (root mode only).

    A tmpfs over the closed ancestor (``/root`` for a pyenv install) hides everything else in
    it, and the prefix alone is bind-mounted back at its own path.
    """
    closed = _closed_ancestor(prefix)
    if closed is None:
        return
    if closed == prefix:
        raise SetupError(f"expose interpreter: {prefix} is not readable by other users")
    fd = os.open(prefix, os.O_PATH | os.O_DIRECTORY)
    try:
        _mount("tmpfs", closed, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=64k")
        os.makedirs(prefix, mode=0o755, exist_ok=True)
        _mount(f"/proc/self/fd/{fd}", prefix, None, MS_BIND | MS_REC)
    finally:
        os.close(fd)


def _read_only_except(workdir: str) -> None:
    # Private first, so nothing done here propagates back to the host's mounts.
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    _mount(workdir, workdir, None, MS_BIND)
    _set_mount_attr("/", set_=MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID, recursive=True)
    _set_mount_attr(workdir, clear=MOUNT_ATTR_RDONLY)
    # The launcher still writes its /proc/self/*_map files; the program gets a fresh read-only /proc.
    _set_mount_attr("/proc", clear=MOUNT_ATTR_RDONLY)


def isolate(cfg: dict[str, Any]) -> None:
    """Enter the namespaces and drop privileges (steps 1-3 of the module docstring)."""
    others = CLONE_NEWNET | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS
    if os.geteuid() == 0:
        _unshare(CLONE_NEWNS, "unshare mount namespace")
        _expose_prefix(cfg["prefix"])
        _read_only_except(cfg["workdir"])
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)
        # setuid() made the process non-dumpable, which makes /proc/self/*_map root's to write.
        _prctl(PR_SET_DUMPABLE, 1)
        _unshare(CLONE_NEWUSER | CLONE_NEWNS | others, "unshare user and network namespaces")
        _write_id_maps(NOBODY, NOBODY)
    else:
        uid, gid = os.getuid(), os.getgid()
        _unshare(CLONE_NEWUSER | CLONE_NEWNS, "unshare user and mount namespaces")
        _write_id_maps(uid, gid)
        _read_only_except(cfg["workdir"])
        _unshare(others, "unshare network namespace")


def set_limits(limits: dict[str, int]) -> None:
    """Set the per-process resource limits; the CPU limit's hard value is one second later."""
    mib = 1024 * 1024
    cpu = limits["cpu_s"]
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_AS, (limits["memory_mb"] * mib,) * 2)
    resource.setrlimit(resource.RLIMIT_NPROC, (limits["max_procs"],) * 2)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits["max_file_mb"] * mib,) * 2)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))


def exec_program(cfg: dict[str, Any]) -> None:
    """Set the limits, report "ok" on the status pipe and exec the interpreter on the program."""
    set_limits(cfg["limits"])
    os.chdir(cfg["workdir"])
    status_fd = cfg["status_fd"]
    os.write(status_fd, b"ok\n")
    os.set_inheritable(status_fd, False)
    interpreter = cfg["interpreter"]
    os.execve(interpreter, [interpreter, "-I", "-S", cfg["program"]], cfg["env"])


def _report_error(status_fd: int, exc: Exception) -> None:
    os.write(status_fd, f"error: {exc}\n".encode())
    os._exit(SETUP_FAILED)


def _init_process(cfg: dict[str, Any]) -> None:
    """PID 1 of the new PID namespace: mount /proc, run the program as PID 2, report its end.

    The program is not PID 1 itself because the kernel ignores signals that PID 1 has no
    handler for, SIGXCPU at the soft CPU limit among them. This init also reaps orphans.
    Its exit, after the program's, makes the kernel kill whatever is left in the namespace.
    """
    status_fd = cfg["status_fd"]
    try:
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        _mount("proc", "/proc", "proc", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)
        program = os.fork()
        if program == 0:
            exec_program(cfg)
    except (SetupError, OSError) as exc:
        _report_error(status_fd, exc)
    while True:
        pid, status = os.wait()
        if pid == program:
            break
    os.write(status_fd, f"exit {os.waitstatus_to_exitcode(status)}\n".encode())
    os._exit(0)


def main(argv: list[str]) -> None:
    """Run the program described by the JSON config in ``argv[1]``."""
    cfg = json.loads(argv[1])
    try:
        if not cfg["isolate"]:
            exec_program(cfg)
        isolate(cfg)
        init = os.fork()
    except (SetupError, OSError) as exc:
        _report_error(cfg["status_fd"], exc)
    if init == 0:
        _init_process(cfg)
    os.close(cfg["status_fd"])
    _, status = os.waitpid(init, 0)
    os._exit(os.waitstatus_to_exitcode(status) & 0xFF)


if __name__ == "__main__":
    main(sys.argv)
