"""The sandbox's seccomp filter: a classic-BPF program that denies a few system calls.

The namespaces and resource limits of :mod:`bench.evaluate.sandbox_launcher` leave four ways out,
each closed here with ``EPERM`` (the program sees ``PermissionError``, nothing is killed):

- ``socket(AF_UNIX, ...)``: a Unix socket reaches any host socket file its user may write
  (D-Bus, docker, journald, ssh-agent); the network namespace does not cover path sockets.
  ``socketpair`` stays allowed: a connected pair reaches nothing outside the program.
- ``memfd_create``, ``memfd_secret``, ``shmget`` and ``shmat``: memory that ``RLIMIT_AS``
  does not count once unmapped (a memory file filled with ``posix_fallocate``, or a SysV
  segment attached, filled and detached).
- ``add_key``, ``request_key`` and ``keyctl``: the kernel keyrings, which outlive the process
  and are shared by uid.
- ``io_uring_setup``, ``io_uring_enter`` and ``io_uring_register``: io_uring issues socket,
  connect and open operations that seccomp never sees.

On x86-64 the x32 ABI (syscall numbers with bit 30 set) is denied as a whole, and a syscall made
under any other architecture than the one the filter was built for kills the process: the
numbers would not mean the same calls. The launcher installs the filter with
``PR_SET_NO_NEW_PRIVS`` just before it execs the program; children inherit it.

:func:`build` returns the filter as bytes (``struct sock_filter`` entries, native byte order);
the launcher, which imports only the standard library, receives it hex-encoded.
"""

from __future__ import annotations

import platform
import struct

# linux/audit.h
AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}

# Syscall numbers per architecture (arch/x86/entry/syscalls/syscall_64.tbl; asm-generic/unistd.h).
SYSCALLS = {
    "x86_64": {
        "socket": 41, "shmget": 29, "shmat": 30, "memfd_create": 319, "memfd_secret": 447,
        "add_key": 248, "request_key": 249, "keyctl": 250,
        "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
    },
    "aarch64": {
        "socket": 198, "shmget": 194, "shmat": 196, "memfd_create": 279, "memfd_secret": 447,
        "add_key": 217, "request_key": 218, "keyctl": 219,
        "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
    },
}

DENIED = (
    "shmget", "shmat", "memfd_create", "memfd_secret", "add_key", "request_key", "keyctl",
    "io_uring_setup", "io_uring_enter", "io_uring_register",
)
"""Denied whatever their arguments; ``socket`` is denied only for ``AF_UNIX``."""

AF_UNIX = 1
EPERM = 1
X32_SYSCALL_BIT = 0x40000000

# linux/filter.h, linux/bpf_common.h, linux/seccomp.h
BPF_LD_W_ABS = 0x20
BPF_JEQ_K = 0x15
BPF_JGE_K = 0x35
BPF_RET_K = 0x06
RET_ALLOW = 0x7FFF0000
RET_ERRNO = 0x00050000
RET_KILL_PROCESS = 0x80000000

# struct seccomp_data: int nr; __u32 arch; __u64 instruction_pointer; __u64 args[6]
OFFSET_NR = 0
OFFSET_ARCH = 4
OFFSET_ARG0_LOW = 16  # the low 32 bits of args[0] on a little-endian machine


def machine() -> str | None:
    """This machine's architecture if the filter knows its syscall numbers, else None."""
    name = platform.machine()
    return name if name in SYSCALLS else None


def syscall_number(name: str, arch: str | None = None) -> int:
    """The number of syscall ``name`` on ``arch`` (default: this machine)."""
    return SYSCALLS[arch or machine() or ""][name]


def _op(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k)


def build(arch: str | None = None) -> bytes:
    """The filter for ``arch`` (default: this machine), as ``struct sock_filter`` entries.

    Raises:
        ValueError: For an architecture whose numbers are not in :data:`SYSCALLS`.
    """
    arch = arch or machine()
    if arch not in SYSCALLS:
        raise ValueError(f"no seccomp filter for architecture {platform.machine() if arch is None else arch}")
    numbers = SYSCALLS[arch]
    deny = _op(BPF_RET_K, RET_ERRNO | EPERM)
    allow = _op(BPF_RET_K, RET_ALLOW)
    program = [
        _op(BPF_LD_W_ABS, OFFSET_ARCH),
        _op(BPF_JEQ_K, AUDIT_ARCH[arch], jt=1),
        _op(BPF_RET_K, RET_KILL_PROCESS),
        _op(BPF_LD_W_ABS, OFFSET_NR),
    ]
    # Each test jumps to the deny at the end of its block of two, or falls through past it.
    if arch == "x86_64":
        program += [_op(BPF_JGE_K, X32_SYSCALL_BIT, jf=1), deny]
    for name in DENIED:
        program += [_op(BPF_JEQ_K, numbers[name], jf=1), deny]
    program += [
        _op(BPF_JEQ_K, numbers["socket"], jf=3),
        _op(BPF_LD_W_ABS, OFFSET_ARG0_LOW),
        _op(BPF_JEQ_K, AF_UNIX, jf=1),
        deny,
        allow,
    ]
    return b"".join(program)
