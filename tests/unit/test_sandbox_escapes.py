"""The sandbox against the escapes the namespaces alone left open (docs/sandbox.md).

As in test_sandbox.py, each hostile program exits 0 only if its attack worked, and the host side
is checked too. Each layer has a control that switches that layer alone off (the seccomp filter,
the fresh keyring, the cgroup, isolation) and shows the attack then succeeds, so an assertion
would fail without the layer.
"""

from __future__ import annotations

import ctypes
import os
import socket
import stat
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from bench.evaluate import sandbox, sandbox_cgroup, seccomp
from bench.evaluate.sandbox import run_program
from tests.sandbox_helpers import assert_host_clean

ROOT = os.geteuid() == 0


@pytest.fixture
def no_filter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sandbox, "seccomp_filter", lambda: None)


@pytest.fixture
def no_cgroup(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sandbox_cgroup, "create", lambda *args: None)


@pytest.fixture(scope="module")
def filtered() -> None:
    if seccomp.machine() is None:
        pytest.skip("no seccomp filter for this architecture")


@pytest.fixture(scope="module")
def cgroup() -> None:
    group = sandbox_cgroup.create("probe", 64 << 20, 8)
    if group is None:
        pytest.skip("the host does not let the harness create a cgroup")
    group.remove()


# --------------------------------------------------------------------------- Unix sockets


@pytest.fixture
def unix_listener(shared_dir: Path) -> Iterator[tuple[socket.socket, Path]]:
    path = shared_dir / "host.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    path.chmod(0o777)  # any user may connect: only the sandbox stands in the way
    server.listen(1)
    server.settimeout(0.5)
    yield server, path
    server.close()


def _unix_connect(path: Path) -> str:
    return f"import socket\ns = socket.socket(socket.AF_UNIX)\ns.connect({str(path)!r})\ns.sendall(b'escaped')\n"


def test_unix_socket_connect_is_denied(isolated: None, filtered: None, unix_listener: tuple) -> None:
    server, path = unix_listener
    result = run_program(_unix_connect(path))
    assert not result.passed and "PermissionError" in result.stderr
    with pytest.raises(TimeoutError):
        server.accept()


def test_unix_socket_control(isolated: None, no_filter: None, unix_listener: tuple) -> None:
    server, path = unix_listener
    assert run_program(_unix_connect(path)).passed  # the read-only mount and the netns do not stop it
    conn, _ = server.accept()
    with conn:
        conn.settimeout(2)
        assert conn.recv(16) == b"escaped"


def test_socketpair_and_inet_sockets_still_work(isolated: None) -> None:
    program = "import socket\na, b = socket.socketpair()\na.sendall(b'x')\nassert b.recv(1) == b'x'\nsocket.socket()\n"
    assert run_program(program).passed


# --------------------------------------------------------------------------- memory outside RLIMIT_AS

MEMFD_BOMB = (
    "import os\nfds = []\n"
    "for _ in range(40):\n"  # 640 MiB under a 256 MiB limit
    "    fd = os.memfd_create('x')\n    os.posix_fallocate(fd, 0, 16 << 20)\n    fds.append(fd)\n"
)

SHM_BOMB = (
    "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\nlibc.shmat.restype = ctypes.c_void_p\n"
    "for _ in range(20):\n"  # 320 MiB, each segment detached after it was filled
    "    sid = libc.shmget(0, 16 << 20, 0o1600)\n    assert sid >= 0, ctypes.get_errno()\n"
    "    addr = libc.shmat(sid, None, 0)\n    ctypes.memset(addr, 1, 16 << 20)\n    libc.shmdt(ctypes.c_void_p(addr))\n"
)


def test_memfd_is_denied(isolated: None, filtered: None) -> None:
    result = run_program(MEMFD_BOMB, memory_mb=256)
    assert not result.passed and "PermissionError" in result.stderr


def test_memfd_bomb_is_bounded_by_the_cgroup(isolated: None, cgroup: None, no_filter: None) -> None:
    result = run_program(MEMFD_BOMB, memory_mb=256)
    assert result.cgroup is not None and not result.passed and result.reason == "memory_limit"
    assert_host_clean(result)


def test_memfd_bomb_control(isolated: None, no_filter: None, no_cgroup: None) -> None:
    result = run_program(MEMFD_BOMB, memory_mb=256)
    assert result.passed and result.cgroup is None  # RLIMIT_AS alone does not count it


def test_sysv_shared_memory_is_denied(isolated: None, filtered: None) -> None:
    result = run_program(SHM_BOMB, memory_mb=256)
    assert not result.passed and "AssertionError: 1" in result.stderr  # EPERM


@pytest.mark.skipif(not ROOT, reason="only root may zero the IPC namespace's shm limits")
def test_sysv_shared_memory_is_off_without_the_filter(isolated: None, no_filter: None) -> None:
    result = run_program(SHM_BOMB, memory_mb=256)
    assert not result.passed and "AssertionError: 22" in result.stderr  # EINVAL: shmmax is 0


CHILDREN_BOMB = (
    "import os, time\n"
    "for _ in range(4):\n"  # 4 x 150 MiB touched, each child under a 256 MiB address-space limit
    "    if os.fork() == 0:\n"
    "        b = bytearray(150 << 20)\n        b[::4096] = b'x' * len(b[::4096])\n"
    "        time.sleep(1)\n        os._exit(0)\n"
    "assert all(os.wait()[1] == 0 for _ in range(4))\n"
)


def test_memory_of_all_processes_together_is_bounded(isolated: None, cgroup: None) -> None:
    result = run_program(CHILDREN_BOMB, memory_mb=256, timeout_s=10)
    assert not result.passed and "AssertionError" in result.stderr  # children were OOM-killed
    assert_host_clean(result)


def test_memory_of_all_processes_control(isolated: None, no_cgroup: None) -> None:
    assert run_program(CHILDREN_BOMB, memory_mb=256, timeout_s=10).passed


# --------------------------------------------------------------------------- keyrings


def _keyctl(*args: object) -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    return int(libc.syscall(seccomp.syscall_number("keyctl"), *args))


@pytest.fixture
def host_key(filtered: None) -> Iterator[None]:
    libc = ctypes.CDLL(None, use_errno=True)
    key = libc.syscall(seccomp.syscall_number("add_key"), b"user", b"peftbench-secret", b"hunter2", 7, -3)
    if key < 0:
        pytest.skip(f"no session keyring for the test process: {os.strerror(ctypes.get_errno())}")
    yield
    _keyctl(21, key)  # KEYCTL_INVALIDATE


def _search_program() -> str:
    nr = seccomp.syscall_number("keyctl")
    # KEYCTL_SEARCH (10) in the session keyring (-3): found means the harness's keyring is shared.
    search = f"libc.syscall({nr}, 10, -3, b'user', b'peftbench-secret', 0)"
    return f"import ctypes\nlibc = ctypes.CDLL(None)\nassert {search} > 0\n"


def test_keyring_calls_are_denied(isolated: None, host_key: None) -> None:
    assert not run_program(_search_program()).passed


def test_session_keyring_is_fresh_without_the_filter(isolated: None, host_key: None, no_filter: None) -> None:
    assert not run_program(_search_program()).passed


def test_session_keyring_control(
    isolated: None, host_key: None, no_filter: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sandbox, "keyring_syscall", lambda: None)
    assert run_program(_search_program()).passed


def test_a_planted_key_does_not_reach_the_next_program(isolated: None, filtered: None, no_filter: None) -> None:
    add, nr = seccomp.syscall_number("add_key"), seccomp.syscall_number("keyctl")
    plant = f"import ctypes\nassert ctypes.CDLL(None).syscall({add}, b'user', b'planted', b'x', 1, -3) > 0\n"
    assert run_program(plant).passed
    find = f"import ctypes\nassert ctypes.CDLL(None).syscall({nr}, 10, -3, b'user', b'planted', 0) > 0\n"
    assert not run_program(find).passed


# --------------------------------------------------------------------------- disk, devices, neighbours

DISK_FILL = "for i in range(12):\n    open(f'f{i}', 'wb').write(b'x' * (8 << 20))\n"  # 96 MiB in 8 MiB files


def test_total_disk_use_is_bounded(isolated: None) -> None:
    result = run_program(DISK_FILL, max_disk_mb=64)
    assert not result.passed and "No space left on device" in result.stderr


def test_total_disk_use_control(unsafe: None) -> None:
    assert run_program(DISK_FILL, max_disk_mb=64, allow_unsafe_network=True).passed


@pytest.fixture
def host_device(shared_dir: Path) -> Path:
    if not ROOT:
        pytest.skip("only root can make a device node")
    path = shared_dir / "zero"
    os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 5))  # a world-writable /dev/zero
    path.chmod(0o666)
    return path


def test_device_nodes_outside_dev_do_not_open(isolated: None, host_device: Path) -> None:
    result = run_program(f"open({str(host_device)!r}, 'rb').read(1)\n")
    assert not result.passed and "PermissionError" in result.stderr  # nodev


def test_device_nodes_control(unsafe: None, host_device: Path) -> None:
    assert run_program(f"open({str(host_device)!r}, 'rb').read(1)\n", allow_unsafe_network=True).passed


def test_dev_holds_only_the_harmless_devices(isolated: None) -> None:
    program = (
        "import os\nassert sorted(os.listdir('/dev')) == ['fd', 'full', 'null', 'random', 'stderr', 'stdin',"
        " 'stdout', 'urandom', 'zero'], os.listdir('/dev')\n"
        "open('/dev/null', 'w').write('x')\nassert len(open('/dev/urandom', 'rb').read(8)) == 8\n"
    )
    result = run_program(program)
    assert result.passed, result.stderr


def _neighbours(timeout_s: float) -> tuple[bool, bool]:
    """Run a program that keeps a secret in its folder beside one that looks for it."""
    keeper = "import time\nopen('secret.txt', 'w').write('hunter2')\ntime.sleep(1.5)\n"
    pattern = os.path.join(tempfile.gettempdir(), "peftbench-sandbox-*", "secret.txt")
    seeker = (
        f"import glob, time\nfor _ in range(40):\n    found = glob.glob({pattern!r})\n    if found:\n        break\n"
        "    time.sleep(0.05)\nassert open(found[0]).read() == 'hunter2'\n"
    )
    with ThreadPoolExecutor(2) as pool:
        kept = pool.submit(run_program, keeper, timeout_s=timeout_s, allow_unsafe_network=True)
        time.sleep(0.3)
        sought = pool.submit(run_program, seeker, timeout_s=timeout_s, allow_unsafe_network=True)
        return kept.result().passed, sought.result().passed


def test_programs_cannot_read_each_others_folders(isolated: None) -> None:
    assert _neighbours(5) == (True, False)


def test_programs_neighbours_control(unsafe: None) -> None:
    if not ROOT:
        pytest.skip("a normal user's own folders are readable by the same user")
    assert _neighbours(5) == (True, True)


# --------------------------------------------------------------------------- signals


def test_signalling_its_own_group_does_not_reach_the_launcher(isolated: None) -> None:
    # Before the sandbox's init took a session of its own, kill(0, SIGTERM) ended the launcher
    # (reason "killed", exit -15) and with it the run.
    program = "import os, signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nos.kill(0, signal.SIGTERM)\n"
    result = run_program(program)
    assert result.passed, (result.reason, result.returncode)
    program = "import os, signal\nos.kill(0, signal.SIGSTOP)\n"  # stops only itself
    result = run_program(program, timeout_s=1)
    assert result.reason == "timeout"
    assert_host_clean(result)


def test_the_filter_is_built_per_architecture() -> None:
    x86, arm = seccomp.build("x86_64"), seccomp.build("aarch64")
    assert len(x86) % 8 == 0 and len(arm) % 8 == 0 and x86 != arm
    assert len(x86) // 8 == 4 + 2 + 2 * len(seccomp.DENIED) + 5  # arch check, x32, denials, socket
    with pytest.raises(ValueError, match="riscv64"):
        seccomp.build("riscv64")
