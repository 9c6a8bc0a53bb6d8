"""Fixtures of the sandbox tests (test_sandbox.py, test_sandbox_escapes.py)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.evaluate import sandbox


@pytest.fixture(scope="module")
def isolated() -> None:
    problem = sandbox.isolation_problem()
    if problem is not None:
        pytest.skip(f"no isolation on this kernel: {problem}")


@pytest.fixture
def unsafe(monkeypatch: pytest.MonkeyPatch) -> None:
    """Switch isolation off, as on a kernel without user namespaces."""
    monkeypatch.setattr(sandbox, "isolation_problem", lambda: "switched off by the test")


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A host directory anyone may reach and write: only the read-only mounts keep the program out.

    Not pytest's tmp_path, whose parent is closed to other users (the program runs as nobody
    when the tests run as root, and would be stopped by the permissions alone).
    """
    path = Path(tempfile.mkdtemp(prefix="peftbench-test-shared-"))
    path.chmod(0o777)
    yield path
    shutil.rmtree(path)
