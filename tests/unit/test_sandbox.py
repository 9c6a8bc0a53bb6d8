"""The code-execution sandbox against hostile programs.

Each hostile program is written so that it would *pass* (exit 0) if its attack worked, and
each test also checks the host side (the file, the listener, the process table). Where it is
safe to do so, a control runs the same program with isolation switched off, to show that the
probe itself works and that the isolation is what stops it.

The hostile tests need isolation (user and network namespaces); they are skipped, with the
reason, on a kernel that forbids them.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from bench.errors import BenchError
from bench.evaluate import sandbox
from bench.evaluate.sandbox import TAIL_CHARS, TOKEN_VAR, run_program
from tests.sandbox_helpers import assert_host_clean, sandbox_pids

# --------------------------------------------------------------------------- ordinary programs


def test_exit_status_decides(isolated: None) -> None:
    ok = run_program("print('hello')")
    assert ok.passed and ok.reason == "passed" and ok.stdout == "hello\n" and ok.isolated
    bad = run_program("raise SystemExit(3)")
    assert not bad.passed and bad.reason == "failed" and bad.returncode == 3
    wrong = run_program("assert 1 + 1 == 3")
    assert wrong.reason == "failed" and "AssertionError" in wrong.stderr


def test_pass_marker_must_be_printed_for_exit_zero_to_pass(isolated: None) -> None:
    assert run_program("print('x'); print('m1')", pass_marker="m1").reason == "passed"
    early = run_program("import os; os._exit(0)\nprint('m1')", pass_marker="m1")
    assert not early.passed and early.reason == "early_exit" and early.returncode == 0
    assert run_program("raise SystemExit(4)", pass_marker="m1").reason == "failed"  # failures stay failures
    assert run_program("import os; os._exit(0)").reason == "passed"  # without a marker: the exit status


def test_fresh_workdir_and_minimal_env(isolated: None) -> None:
    program = (
        "import os, sys\n"
        "open('scratch.txt', 'w').write('ok')\n"  # the working directory is writable
        "print(os.getcwd()); print(os.environ['HOME']); print(os.environ['TMPDIR'])\n"
        "print(sorted(os.environ)); print(sys.flags.isolated, sys.flags.no_site, os.getpid())\n"
    )
    result = run_program(program)
    assert result.passed, result.stderr
    cwd, home, tmpdir, keys, flags = result.stdout.splitlines()
    assert cwd == home == tmpdir and not Path(cwd).exists()  # removed afterwards
    assert keys == str(sorted(["HOME", "LANG", "PATH", TOKEN_VAR, "TMPDIR"]))
    assert flags == "1 1 2"  # python -I -S, PID 2 of its own PID namespace (after the sandbox's init)


def test_output_is_bounded(isolated: None) -> None:
    result = run_program("import sys; sys.stdout.write('x' * (8 << 20))", max_file_mb=1)
    assert not result.passed and "File too large" in result.stderr
    assert len(result.stdout) == TAIL_CHARS


def test_invalid_limits_raise() -> None:
    with pytest.raises(ValueError, match="timeout_s"):
        run_program("pass", timeout_s=0)


# --------------------------------------------------------------------------- hostile programs


def test_infinite_loop_is_killed_at_the_timeout(isolated: None) -> None:
    result = run_program("while True: pass", timeout_s=1.0, cpu_s=30)
    assert result.reason == "timeout" and not result.passed and result.returncode == -9
    assert 1.0 <= result.wall_s < 2.0
    assert_host_clean(result)


def test_cpu_limit_ends_a_busy_program(isolated: None) -> None:
    result = run_program("while True: pass", timeout_s=20.0, cpu_s=1)
    assert result.reason == "cpu_limit" and result.wall_s < 5.0


@pytest.mark.parametrize(
    "program",
    [
        "import os\nwhile True:\n    os.fork()\n",
        # The stubborn kind: a failed fork does not end the process, so the bomb stays at the limit.
        "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n",
    ],
    ids=["plain", "stubborn"],
)
def test_fork_bomb_is_contained(isolated: None, program: str) -> None:
    max_procs = 8
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(run_program, program, timeout_s=2.0, max_procs=max_procs)
        peak = 0
        while not future.done():
            peak = max(peak, len(sandbox_pids()))
            time.sleep(0.02)
        result = future.result()
    # The launcher, the program and its forks together stay within the process limit.
    assert peak <= max_procs
    assert not result.passed and result.wall_s < 3.0
    assert_host_clean(result)
    assert sandbox_pids() == []


@pytest.mark.parametrize(
    "program",
    ["x = bytearray(10 * 1024**3)\n", "chunks = []\nwhile True:\n    chunks.append(b'x' * (64 << 20))\n"],
    ids=["10GB-at-once", "touched-64MB-chunks"],
)
def test_memory_bomb_fails_with_memory_error(isolated: None, program: str) -> None:
    result = run_program(program, memory_mb=256, timeout_s=5.0)
    assert result.reason == "memory_limit" and result.wall_s < 5.0
    assert_host_clean(result)


def test_background_child_outside_the_group_is_killed(isolated: None) -> None:
    program = "import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(60)\n"
    result = run_program(program)
    assert result.passed  # the program itself exits 0 ...
    assert_host_clean(result)  # ... and its escaped child is gone


def _write_program(target: Path) -> str:
    return f"open({str(target)!r}, 'w').write('escaped')\n"


def test_write_outside_workdir_is_refused(isolated: None, shared_dir: Path) -> None:
    target = shared_dir / "escaped.txt"
    result = run_program(_write_program(target))
    assert not result.passed and "Read-only file system" in result.stderr
    assert not target.exists()


def test_write_outside_workdir_control(unsafe: None, shared_dir: Path) -> None:
    target = shared_dir / "escaped.txt"
    assert run_program(_write_program(target), allow_unsafe_network=True).passed
    assert target.read_text() == "escaped"


def test_os_system_cannot_touch_host_files(isolated: None, shared_dir: Path) -> None:
    target = shared_dir / "touched"
    result = run_program(f"import os\nassert os.system('touch {target}') == 0\n")
    assert not result.passed and "Read-only file system" in result.stderr
    assert not target.exists()


def test_os_system_control(unsafe: None, shared_dir: Path) -> None:
    target = shared_dir / "touched"
    assert run_program(f"import os\nassert os.system('touch {target}') == 0\n", allow_unsafe_network=True).passed
    assert target.exists()


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(0.5)
        yield server


def _connect_program(server: socket.socket) -> str:
    port = server.getsockname()[1]
    return f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2).sendall(b'escaped')\n"


def test_network_connection_fails(isolated: None, listener: socket.socket) -> None:
    result = run_program(_connect_program(listener))
    assert not result.passed and "Network is unreachable" in result.stderr
    with pytest.raises(TimeoutError):
        listener.accept()


def test_network_connection_control(unsafe: None, listener: socket.socket) -> None:
    assert run_program(_connect_program(listener), allow_unsafe_network=True).passed
    conn, _ = listener.accept()
    with conn:
        conn.settimeout(2)
        assert conn.recv(16) == b"escaped"


def test_host_processes_are_out_of_reach(isolated: None) -> None:
    program = f"import os\nos.kill({os.getpid()}, 0)\n"  # signal 0: "may I signal the test process?"
    result = run_program(program)
    assert not result.passed and "ProcessLookupError" in result.stderr


def test_host_processes_control(unsafe: None) -> None:
    assert run_program(f"import os\nos.kill({os.getpid()}, 0)\n", allow_unsafe_network=True).passed


# --------------------------------------------------------------------------- refusal and errors


def test_refuses_without_isolation_unless_accepted(unsafe: None) -> None:
    with pytest.raises(BenchError, match="allow_unsafe_network"):
        run_program("pass")
    result = run_program("while True: pass", timeout_s=0.5, allow_unsafe_network=True)
    assert not result.isolated and result.reason == "timeout"
    assert_host_clean(result)


@pytest.mark.parametrize("mode", ["isolated", "unsafe"])
def test_a_broken_sandbox_raises(monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    if mode == "unsafe":
        monkeypatch.setattr(sandbox, "isolation_problem", lambda: "switched off by the test")
    elif sandbox.isolation_problem() is not None:
        pytest.skip("no isolation on this kernel")
    monkeypatch.setattr(sandbox, "_interpreter", lambda: ("/nonexistent/python", "/nonexistent"))
    with pytest.raises(BenchError, match="failed to start"):
        run_program("pass", allow_unsafe_network=True)
