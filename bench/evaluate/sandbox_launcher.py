"""The sandbox's launcher: a separate process that isolates itself, then becomes the program.

:func:`bench.evaluate.sandbox.run_program` starts this file as ``python -I -S sandbox_launcher.py
CONFIG_JSON`` in a new session. It imports only the standard library (it runs under ``-I -S``)
and is never imported by the harness: doing the isolation here, rather than in a
``preexec_fn``, keeps it out of the harness's threads, where forking and then running Python
code is unsafe.

Its first step, in either mode, is to move itself into the program's cgroup, if the harness
made one. In isolated mode it then:

1. makes a private mount namespace (and, as root, an IPC namespace with SysV shared memory off)
   in which the working directory is a fresh size-limited tmpfs holding a copy of the program,
   ``/dev`` is a tmpfs with only null, zero, full, random and urandom, and every other mount is
   read-only, ``nosuid`` and ``nodev`` (when run as root, this happens before the privileges
   are dropped, and an interpreter under a directory closed to others, such as ``/root``, is
   bind-mounted into a small tmpfs laid over that directory);
2. as root, drops to ``nobody`` (65534); a non-root user keeps its own uid;
3. unshares a user namespace (mapping only that one uid), and new mount, network (loopback
   only, down), PID, IPC and UTS namespaces;
4. forks a small init, PID 1 of the new PID namespace, which asks for SIGKILL if the launcher
   dies, takes a session of its own (so the program's ``kill(0, ...)`` cannot reach the
   launcher), mounts a fresh read-only ``/proc`` and forks the program's process (PID 2); that
   one sets the resource limits, joins a fresh session keyring, installs the seccomp filter,
   reports ``ok`` on the status pipe and execs the interpreter. The init reaps orphans, reports
   ``exit <status>`` when the program ends, and exits; the kernel then kills every process left
   in the namespace.

In unsafe mode it only sets the resource limits, the keyring and the filter and execs the
program in place, so the launcher's exit status is the program's.

Setup errors are written to the status pipe as ``error: <step>: <reason>`` and end the launcher
with exit status 125, so the harness can tell a broken sandbox from a failing program.
"""

from __future__ import annotations

import ctypes
import errno
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
PR_SET_SECCOMP = 22
PR_SET_NO_NEW_PRIVS = 38
SECCOMP_MODE_FILTER = 2
KEYCTL_JOIN_SESSION_KEYRING = 1

# mount_setattr(2), Linux >= 5.12; the number is the same on every architecture's unified table.
SYS_MOUNT_SETATTR = 442
AT_FDCWD = -100
AT_RECURSIVE = 0x8000
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4

DEVICES = ("null", "zero", "full", "random", "urandom")
"""The device nodes the private ``/dev`` keeps; every other mount is ``nodev``."""

NOBODY = 65534
SETUP_FAILED = 125

_libc = ctypes.CDLL(None, use_errno=True)


class SetupError(Exception):
    """A step of the isolation failed; the message names the step."""


class _FilterProgram(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


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


def _private_workdir(workdir: str, program: str, disk_mb: int, owner: int | None) -> None:
    """Lay a size-limited tmpfs over ``workdir`` and copy the program into it.

    The tmpfs bounds what the program may write in total (the file-size limit is per file), and
    it lives only in this mount namespace: programs running beside it see an empty directory.
    """
    with open(os.path.join(workdir, program), "rb") as f:
        source = f.read()
    options = f"size={disk_mb}m,mode=0700" + ("" if owner is None else f",uid={owner},gid={owner}")
    _mount("tmpfs", workdir, "tmpfs", MS_NOSUID | MS_NODEV, options)
    fd = os.open(os.path.join(workdir, program), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.write(fd, source)
    finally:
        os.close(fd)


def _private_dev() -> None:
    """Replace ``/dev`` with a tmpfs holding only :data:`DEVICES` (bind-mounted from the host)."""
    fds = {name: os.open(f"/dev/{name}", os.O_PATH) for name in DEVICES}
    try:
        _mount("tmpfs", "/dev", "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=0755,size=64k")
        for name, fd in fds.items():
            os.close(os.open(f"/dev/{name}", os.O_WRONLY | os.O_CREAT, 0o666))
            _mount(f"/proc/self/fd/{fd}", f"/dev/{name}", None, MS_BIND)
    finally:
        for fd in fds.values():
            os.close(fd)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
        os.symlink(target, f"/dev/{name}")


def _lock_down(cfg: dict[str, Any], owner: int | None) -> None:
    """Make every mount read-only, ``nosuid`` and ``nodev`` but the private workdir and devices."""
    workdir = cfg["workdir"]
    # Private first, so nothing done here propagates back to the host's mounts.
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    _private_workdir(workdir, cfg["program"], cfg["limits"]["disk_mb"], owner)
    _private_dev()
    _set_mount_attr("/", set_=MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, recursive=True)
    _set_mount_attr(workdir, clear=MOUNT_ATTR_RDONLY)
    for name in DEVICES:
        _set_mount_attr(f"/dev/{name}", clear=MOUNT_ATTR_NODEV)
    # The launcher still writes its /proc/self/*_map files; the program gets a fresh read-only /proc.
    _set_mount_attr("/proc", clear=MOUNT_ATTR_RDONLY)


def join_cgroups(procs_files: list[str]) -> None:
    """Move the launcher into the program's cgroup(s), before it starts anything."""
    for path in procs_files:
        try:
            with open(path, "w") as f:
                f.write(str(os.getpid()))
        except OSError as exc:
            raise SetupError(f"join cgroup {os.path.dirname(path)}: {exc.strerror}") from exc


def _no_shared_memory(required: bool) -> None:
    # SysV shared memory off in the new IPC namespace, should the seccomp filter be missing.
    # Root does it in an IPC namespace of the initial user namespace; a normal user's own user
    # namespace does not map root, and the kernel then refuses the write: the filter alone holds.
    for name in ("shmmni", "shmmax", "shmall"):
        try:
            with open(f"/proc/sys/kernel/{name}", "w") as f:
                f.write("0")
        except OSError as exc:
            if required:
                raise SetupError(f"write /proc/sys/kernel/{name}: {exc.strerror}") from exc
            return


def isolate(cfg: dict[str, Any]) -> None:
    """Enter the namespaces and drop privileges (steps 1-3 of the module docstring)."""
    others = CLONE_NEWNET | CLONE_NEWPID | CLONE_NEWUTS
    if os.geteuid() == 0:
        _unshare(CLONE_NEWNS | CLONE_NEWIPC, "unshare mount and IPC namespaces")
        _no_shared_memory(required=True)
        _expose_prefix(cfg["prefix"])
        _lock_down(cfg, NOBODY)
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
        _lock_down(cfg, None)
        _unshare(others | CLONE_NEWIPC, "unshare network namespace")
        _no_shared_memory(required=False)


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


def _join_fresh_keyring(keyctl_nr: int | None) -> None:
    # An anonymous session keyring: the harness's (an SSH or systemd session's) is out of reach.
    if keyctl_nr is None:
        return
    if _libc.syscall(ctypes.c_long(keyctl_nr), ctypes.c_int(KEYCTL_JOIN_SESSION_KEYRING), None) < 0:
        err = ctypes.get_errno()
        if err not in (errno.ENOSYS, errno.EDQUOT):  # no keyrings at all; or too many keys
            raise SetupError(f"join a fresh session keyring: {os.strerror(err)}")


def _install_seccomp(filter_hex: str | None) -> None:
    if filter_hex is None:
        return
    code = bytes.fromhex(filter_hex)
    buffer = ctypes.create_string_buffer(code, len(code))
    program = _FilterProgram(len(code) // 8, ctypes.cast(buffer, ctypes.c_void_p))
    _prctl(PR_SET_NO_NEW_PRIVS, 1)
    result = _libc.prctl(ctypes.c_int(PR_SET_SECCOMP), ctypes.c_ulong(SECCOMP_MODE_FILTER), ctypes.byref(program), 0, 0)
    _check(result, "install the seccomp filter")


def exec_program(cfg: dict[str, Any]) -> None:
    """Set the limits and the seccomp filter, report "ok" on the status pipe, exec the program."""
    set_limits(cfg["limits"])
    os.chdir(cfg["workdir"])
    _join_fresh_keyring(cfg.get("keyctl_nr"))
    _install_seccomp(cfg.get("seccomp"))
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
        # A session of its own: kill(0, ...) from the program must not reach the launcher.
        os.setsid()
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
        join_cgroups(cfg.get("cgroups") or [])
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
