"""Run untrusted, model-written Python programs in a sandbox, one fresh process per program.

What each program gets (details and measured behaviour in ``docs/sandbox.md``):

- Its own process, started through :mod:`bench.evaluate.sandbox_launcher` in a new session
  (process group), with stdin closed, a minimal environment, ``python -I -S`` (no user site,
  no site-packages, no ``PYTHON*`` variables) and a fresh temporary directory as working
  directory, ``HOME`` and ``TMPDIR``, removed afterwards.
- Resource limits: CPU time, address space (memory), number of processes, file size, no core
  dumps, 256 open files.
- Isolated mode (the default, where the kernel allows unprivileged user namespaces and
  ``mount_setattr``, Linux >= 5.12): new user, mount, network, PID, IPC and UTS namespaces.
  The network namespace has only a loopback device that is down, so nothing, the host's
  127.0.0.1 included, can be reached. Every mount is read-only and ``nosuid`` except the working
  directory; ``/proc`` is a fresh read-only one showing only the sandbox's processes. Run as
  root, the program runs as ``nobody`` (65534), and with a user namespace the process limit
  counts only the sandbox's own processes. When the program ends, the sandbox's init (PID 1 of
  the namespace) exits and the kernel kills every process left in it.
- A wall-clock timeout that SIGKILLs the process group, then a sweep that kills any process
  still carrying the run's token in its environment or still in its group.

Without isolation (a kernel or container that forbids user namespaces) :func:`run_program`
refuses to run unless ``allow_unsafe_network=True``; then the program runs with the limits
only: it can reach the network, write wherever its user may, and see the host's processes;
run as root, it is root, and the kernel does not apply the process limit to root.

Layers in both modes: a seccomp filter (:mod:`bench.evaluate.seccomp`: no Unix sockets, memory
files, SysV shared memory, keyrings or io_uring), a fresh session keyring, and a cgroup that bounds
the memory and processes of all the program's processes together where the host lets the harness
create one (:mod:`bench.evaluate.sandbox_cgroup`). In isolated mode the working directory is also a
size-limited tmpfs private to the program's mount namespace (other programs see an empty folder),
``/dev`` holds only null, zero, full, random and urandom, and every other mount is ``nodev``.

Not isolated in either mode: CPU time is limited per process, not per sandbox; the program can
read what its user may read (as ``nobody`` under root: world-readable files; as a normal user:
that user's files, though without a network it can only print them); the kernel is shared.
"""

from __future__ import annotations

import functools
import json
import os
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO

from bench.errors import BenchError
from bench.evaluate import sandbox_cgroup, seccomp
from bench.evaluate import sandbox_launcher as launcher

LAUNCHER = Path(launcher.__file__)
TOKEN_VAR = "PEFTBENCH_SANDBOX"
"""Environment variable carrying each run's token, by which leftover processes are found."""

TAIL_CHARS = 2000
"""How much of the end of stdout and stderr a result keeps."""

_SWEEP_S = 2.0


@dataclass(frozen=True)
class SandboxLimits:
    """Per-program limits.

    Attributes:
        timeout_s: Wall-clock seconds before the whole process group is killed.
        memory_mb: Address-space limit of each process, in MiB.
        cpu_s: CPU seconds per process (SIGXCPU, then SIGKILL one second later).
        max_procs: Processes (and threads) the sandbox may hold at once, the program included.
        max_file_mb: Largest file the program may write, stdout and stderr included, in MiB.
        max_disk_mb: Size of the working directory's tmpfs, all files together (isolated mode).
    """

    timeout_s: float = 5.0
    memory_mb: int = 1024
    cpu_s: int = 5
    max_procs: int = 16
    max_file_mb: int = 16
    max_disk_mb: int = 64

    def __post_init__(self) -> None:
        for name in ("timeout_s", "memory_mb", "cpu_s", "max_procs", "max_file_mb", "max_disk_mb"):
            if not getattr(self, name) > 0:
                raise ValueError(f"Invalid {name}: {getattr(self, name)} (must be > 0)")


@dataclass(frozen=True)
class SandboxResult:
    """How one program ended.

    Attributes:
        passed: True only for exit status 0 within the limits (and the pass marker printed, if asked).
        reason: ``passed``, ``failed`` (non-zero exit), ``early_exit`` (exit status 0 without the
            pass marker of :func:`run_program`), ``memory_limit`` (ended by MemoryError),
            ``timeout`` (wall clock), ``cpu_limit`` (SIGXCPU), ``file_limit`` (SIGXFSZ) or
            ``killed`` (any other signal, SIGKILL at the hard CPU limit included).
        returncode: The program's exit status, negative for a signal (as in subprocess).
        stdout: The last :data:`TAIL_CHARS` characters of standard output.
        stderr: The last :data:`TAIL_CHARS` characters of standard error.
        wall_s: Seconds from start until the program and its group were gone.
        isolated: Whether the namespaces were in place (False only in the unsafe mode).
        pgid: The process group the program ran in (the launcher's pid).
        token: The value of :data:`TOKEN_VAR` in the program's environment.
        cgroup: The version of the cgroup that bounded the program's processes together, or
            None where the harness could not create one (:mod:`bench.evaluate.sandbox_cgroup`).
    """

    passed: bool
    reason: str
    returncode: int
    stdout: str
    stderr: str
    wall_s: float
    isolated: bool
    pgid: int
    token: str
    cgroup: int | None = None


def _interpreter() -> tuple[str, str]:
    """The base interpreter (not the venv's wrapper) and its prefix: programs need the stdlib only."""
    executable = getattr(sys, "_base_executable", None) or sys.executable
    return os.path.realpath(executable), sys.base_prefix


@functools.cache
def isolation_problem() -> str | None:
    """Why isolated mode cannot work on this machine, or None when it does (probed once)."""
    try:
        result = _run("pass\n", SandboxLimits(timeout_s=30.0), isolate=True)
    except BenchError as exc:
        return str(exc)
    if not result.passed:
        return f"a trivial program failed in the sandbox ({result.reason}): {result.stderr.strip()[-300:]}"
    return None


def network_isolation_available() -> bool:
    """Whether programs can run in their own network (and user, mount, PID) namespaces here."""
    return isolation_problem() is None


def run_program(
    source: str,
    *,
    timeout_s: float = SandboxLimits.timeout_s,
    memory_mb: int = SandboxLimits.memory_mb,
    cpu_s: int = SandboxLimits.cpu_s,
    max_procs: int = SandboxLimits.max_procs,
    max_file_mb: int = SandboxLimits.max_file_mb,
    max_disk_mb: int = SandboxLimits.max_disk_mb,
    allow_unsafe_network: bool = False,
    pass_marker: str | None = None,
) -> SandboxResult:
    """Run the Python program ``source`` in the sandbox and report how it ended.

    Args:
        source: The program's text.
        timeout_s: Wall-clock limit; see :class:`SandboxLimits` for this and the others.
        memory_mb: Address-space limit per process.
        cpu_s: CPU-time limit per process.
        max_procs: Process limit.
        max_file_mb: File-size limit.
        max_disk_mb: Working-directory size limit.
        allow_unsafe_network: Run with the resource limits only where the kernel cannot
            isolate the program (see the module docstring). Ignored where it can.
        pass_marker: A line the program prints as its last act (e.g. after its tests ran). With it,
            exit status 0 passes only if the marker is in the kept stdout; without, reason
            ``early_exit``: a program that calls ``os._exit(0)`` or ``raise SystemExit(0)`` before
            its tests ran must not pass. Make it a fresh random value per program.

    Raises:
        BenchError: If isolation is unavailable and ``allow_unsafe_network`` is False, or the
            sandbox failed to start.
        ValueError: On a limit that is not positive.
    """
    limits = SandboxLimits(timeout_s, memory_mb, cpu_s, max_procs, max_file_mb, max_disk_mb)
    problem = isolation_problem()
    if problem is not None and not allow_unsafe_network:
        raise BenchError(
            f"cannot isolate model-written code on this machine ({problem}); it would run with "
            "network and filesystem access. Accept that risk explicitly with allow_unsafe_network=True "
            "(--allow-unsafe-network), or run on a kernel that allows unprivileged user namespaces"
        )
    result = _run(source, limits, isolate=problem is None)
    if pass_marker is not None and result.passed and f"{pass_marker}\n" not in result.stdout:
        return replace(result, passed=False, reason="early_exit")
    return result


def _run(source: str, limits: SandboxLimits, *, isolate: bool) -> SandboxResult:
    workdir = tempfile.mkdtemp(prefix="peftbench-sandbox-")
    status_r, status_w = os.pipe()
    try:
        program = Path(workdir, "program.py")
        program.write_text(source)
        program.chmod(0o644)
        token = secrets.token_hex(8)
        group = sandbox_cgroup.create(token, limits.memory_mb * 1024 * 1024, limits.max_procs)
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            start = time.monotonic()
            proc = _start(workdir, token, limits, isolate, status_w, out.fileno(), err.fileno(), group)
            os.close(status_w)
            status_w = -1
            timed_out = _wait_then_kill(proc, limits.timeout_s)
            _sweep(proc.pid, token)
            wall_s = time.monotonic() - start
            stdout, stderr = _tail(out), _tail(err)
        status = _read_status(status_r)
        oom_killed = group is not None and group.oom_killed()
    finally:
        if group is not None:
            group.remove()
        os.close(status_r)
        if status_w >= 0:
            os.close(status_w)
        shutil.rmtree(workdir, ignore_errors=True)
    # "ok" is written just before exec; an exec that then fails adds an "error:" line.
    errors = [line for line in status.splitlines() if line.startswith("error:")]
    if errors or (not status and not timed_out):
        detail = errors[-1] if errors else stderr.strip()[-300:]
        raise BenchError(f"the code-execution sandbox failed to start: {detail}")
    # Isolated, the program is not the launcher's child: the sandbox's init reports its status.
    exits = [int(line.split()[1]) for line in status.splitlines() if line.startswith("exit ")]
    returncode = exits[-1] if exits and not timed_out else proc.returncode
    reason = _reason(returncode, timed_out, stderr)
    if reason == "killed" and oom_killed:
        reason = "memory_limit"
    return SandboxResult(
        passed=reason == "passed", reason=reason, returncode=returncode, stdout=stdout, stderr=stderr,
        wall_s=wall_s, isolated=isolate, pgid=proc.pid, token=token, cgroup=None if group is None else group.version,
    )


def seccomp_filter() -> str | None:
    """The seccomp filter for this machine, hex-encoded, or None where none is known (see seccomp)."""
    arch = seccomp.machine()
    return None if arch is None else seccomp.build(arch).hex()


def keyring_syscall() -> int | None:
    """The number of ``keyctl`` here, with which the launcher joins a fresh session keyring."""
    arch = seccomp.machine()
    return None if arch is None else seccomp.syscall_number("keyctl", arch)


def _start(
    workdir: str, token: str, limits: SandboxLimits, isolate: bool, status_fd: int, out: int, err: int,
    group: sandbox_cgroup.Cgroup | None,
) -> subprocess.Popen[bytes]:
    interpreter, prefix = _interpreter()
    env = {"PATH": "/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8", TOKEN_VAR: token}
    config = {
        "isolate": isolate, "workdir": workdir, "program": "program.py", "interpreter": interpreter,
        "prefix": prefix, "status_fd": status_fd, "env": env,
        "limits": {"cpu_s": limits.cpu_s, "memory_mb": limits.memory_mb, "max_procs": limits.max_procs,
                   "max_file_mb": limits.max_file_mb, "disk_mb": limits.max_disk_mb},
        "seccomp": seccomp_filter(), "keyctl_nr": keyring_syscall(),
        "cgroups": [] if group is None else group.procs_files,
    }
    return subprocess.Popen(
        [sys.executable, "-I", "-S", str(LAUNCHER), json.dumps(config)],
        stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=workdir, env=env,
        start_new_session=True, pass_fds=(status_fd,), close_fds=True,
    )


def _wait_then_kill(proc: subprocess.Popen[bytes], timeout_s: float) -> bool:
    """Wait for the launcher; on timeout SIGKILL its group. Return whether it timed out.

    The launcher is waited on through a pidfd without reaping it, so its pid still names the
    process group when the group is killed (a reaped pid could be reused).
    """
    timed_out = False
    try:
        pidfd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):  # Linux < 5.3
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
    else:
        try:
            timed_out = not select.select([pidfd], [], [], timeout_s)[0]
        finally:
            os.close(pidfd)
    _kill_group(proc.pid)
    proc.wait()
    return timed_out


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def find_processes(pgid: int, token: str) -> list[int]:
    """Live (non-zombie) processes in group ``pgid`` or whose environment carries ``token``."""
    needle = f"{TOKEN_VAR}={token}".encode()
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
            # Fields after the parenthesised command: state ppid pgrp ...
            state, _, pgrp = stat.rsplit(")", 1)[1].split()[:3]
            if state in ("Z", "X"):
                continue
            if int(pgrp) == pgid or needle in Path(entry.path, "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except (OSError, ValueError):  # gone meanwhile, or not ours to read
            continue
    return found


def _sweep(pgid: int, token: str) -> None:
    """SIGKILL leftovers until none remain; the PID namespace's teardown may take a moment."""
    deadline = time.monotonic() + _SWEEP_S
    while (pids := find_processes(pgid, token)) and time.monotonic() < deadline:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        time.sleep(0.01)


def _tail(f: IO[bytes]) -> str:
    size = f.seek(0, os.SEEK_END)
    f.seek(max(0, size - 4 * TAIL_CHARS))
    return f.read().decode("utf-8", errors="replace")[-TAIL_CHARS:]


def _read_status(fd: int) -> str:
    # Non-blocking: a write end that somehow survived must not hang the harness.
    os.set_blocking(fd, False)
    try:
        return os.read(fd, 4096).decode(errors="replace").strip()
    except BlockingIOError:
        return ""


def _reason(returncode: int, timed_out: bool, stderr: str) -> str:
    if timed_out:
        return "timeout"
    if returncode == 0:
        return "passed"
    if returncode > 0:
        last = stderr.strip().rsplit("\n", 1)[-1]
        return "memory_limit" if last.startswith("MemoryError") else "failed"
    return {-signal.SIGXCPU: "cpu_limit", -signal.SIGXFSZ: "file_limit"}.get(returncode, "killed")
