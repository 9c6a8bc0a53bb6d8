"""Checks shared by the sandbox tests; their fixtures are in tests/unit/conftest.py."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from bench.evaluate.sandbox import TOKEN_VAR, SandboxResult, find_processes


def sandbox_pids() -> list[int]:
    """Every process on the host that carries a sandbox token, whatever the run."""
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if f"{TOKEN_VAR}=".encode() in Path(entry.path, "environ").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def assert_host_clean(result: SandboxResult) -> None:
    assert find_processes(result.pgid, result.token) == []
    assert subprocess.run(["true"], timeout=10).returncode == 0  # the host can still start a process


