"""Run the hostile programs of tests/unit/test_sandbox.py once and print what happened (docs/sandbox.md).

Usage: ``OMP_NUM_THREADS=1 .venv/bin/python scripts/sandbox_hostile.py``
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path

from bench.evaluate.sandbox import TOKEN_VAR, SandboxResult, find_processes, isolation_problem, run_program


def count_sandbox_processes() -> int:
    """Processes on the host that carry any sandbox token."""
    n = 0
    for entry in os.scandir("/proc"):
        try:
            n += entry.name.isdigit() and f"{TOKEN_VAR}=".encode() in Path(entry.path, "environ").read_bytes()
        except OSError:
            pass
    return n


def run_watched(program: str, **limits: float) -> tuple[SandboxResult, int]:
    """Run ``program`` while sampling how many sandbox processes exist; return the result and the peak."""
    box: list[SandboxResult] = []
    thread = threading.Thread(target=lambda: box.append(run_program(program, **limits)))  # type: ignore[arg-type]
    thread.start()
    peak = 0
    while thread.is_alive():
        peak = max(peak, count_sandbox_processes())
        time.sleep(0.01)
    thread.join()
    return box[0], peak


def main() -> None:
    """Print one Markdown row per hostile program."""
    print(f"isolation: {isolation_problem() or 'available'}; uid {os.getuid()}\n")
    shared = Path(tempfile.mkdtemp(prefix="peftbench-hostile-"))
    shared.chmod(0o777)
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.5)
    port = server.getsockname()[1]
    cases = [
        ("infinite loop (timeout 2 s)", "while True: pass\n", {"timeout_s": 2.0, "cpu_s": 30}),
        ("busy loop (cpu_s 1)", "while True: pass\n", {"timeout_s": 10.0, "cpu_s": 1}),
        ("fork bomb, plain (max_procs 8)", "import os\nwhile True: os.fork()\n", {"timeout_s": 2.0, "max_procs": 8}),
        ("fork bomb, stubborn (max_procs 8)",
         "import os\nwhile True:\n    try: os.fork()\n    except OSError: pass\n", {"timeout_s": 2.0, "max_procs": 8}),
        ("memory bomb, 10 GB bytearray (memory_mb 1024)", "x = bytearray(10 * 1024**3)\n", {}),
        ("memory bomb, touched 64 MB chunks (memory_mb 1024)",
         "c = []\nwhile True: c.append(b'x' * (64 << 20))\n", {}),
        ("write outside the workdir", f"open('{shared}/escaped', 'w').write('x')\n", {}),
        ("os.system('touch ...')", f"import os\nassert os.system('touch {shared}/touched') == 0\n", {}),
        ("connect to a host listener", f"import socket\nsocket.create_connection(('127.0.0.1', {port}), 2)\n", {}),
        ("escaped daemon (setsid + sleep 60)",
         "import os, time\nif os.fork() == 0:\n    os.setsid(); time.sleep(60)\n", {}),
    ]
    print("| program | reason | exit | wall s | peak procs | survivors | last stderr line |")
    print("|---|---|---|---|---|---|---|")
    for name, program, limits in cases:
        result, peak = run_watched(program, **limits)
        last = (result.stderr.strip().splitlines() or [""])[-1][:60]
        survivors = len(find_processes(result.pgid, result.token))
        cells = [name, result.reason, result.returncode, f"{result.wall_s:.2f}", peak, survivors, last]
        print("| " + " | ".join(map(str, cells)) + " |")
    try:
        server.accept()
        seen = "a connection ARRIVED"
    except TimeoutError:
        seen = "no connection"
    print(f"\nhost: files written {sorted(p.name for p in shared.iterdir())}; listener: {seen}")
    shutil.rmtree(shared)


if __name__ == "__main__":
    main()
