"""Scratch folders carry their process id; bench run removes those of processes that are gone (issue 19, item 15)."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import pytest

from bench.sdk.scratch import scratch_prefix, sweep_scratch


def test_scratch_folders_are_named_by_their_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    folder = Path(tempfile.mkdtemp(prefix=scratch_prefix("reload")))
    assert folder.name.startswith(f"peftbench-reload-{os.getpid()}-")


def test_sweep_removes_only_folders_of_dead_processes(tmp_path: Path) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    gone = [tmp_path / f"peftbench-reload-{dead.pid}-abc", tmp_path / f"peftbench-grpo-{dead.pid}-x1"]
    kept = [tmp_path / f"peftbench-init-{os.getpid()}-abc",   # this (live) process
            tmp_path / "peftbench-reload-abc",                # old name without a pid: owner unknown
            tmp_path / "unrelated-123-x"]
    for folder in (*gone, *kept):
        folder.mkdir()
        (folder / "adapter.safetensors").write_bytes(b"x")
    (tmp_path / f"peftbench-reload-{dead.pid}-file").write_text("a file, not a folder")
    assert sorted(sweep_scratch(tmp_path)) == sorted(gone)
    assert all(f.is_dir() for f in kept) and not any(f.exists() for f in gone)
    assert (tmp_path / f"peftbench-reload-{dead.pid}-file").exists()
    assert sweep_scratch(tmp_path / "missing") == []
