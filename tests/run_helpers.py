"""Helpers for tests that run bench in worker or separate processes: a toy dataset, process states."""

from __future__ import annotations

import json
import time
from pathlib import Path


def toy_dataset(data_root: Path, n_train: int, n_test: int = 8) -> Path:
    """Write ``<data_root>/toyds``: two classes, "good item i" / "bad item i" by parity; return ``data_root``."""
    folder = data_root / "toyds"
    folder.mkdir(parents=True)
    (folder / "labels.json").write_text('["a", "b"]')
    for split, n in (("train", n_train), ("test", n_test)):
        (folder / f"{split}.jsonl").write_text("".join(
            json.dumps({"text": f"{['good', 'bad'][i % 2]} item {i}", "label": i % 2}) + "\n" for i in range(n)))
    return data_root


def running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie or a missing pid is not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def gone(pids: list[int], within_s: float = 15.0) -> bool:
    """Wait up to ``within_s`` for every process of ``pids`` to end; whether they all did."""
    deadline = time.monotonic() + within_s
    while any(running(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not any(running(p) for p in pids)


def sleep_cell(item: str, data_dir: Path) -> tuple[str, float]:
    """A cell function for worker-pool tests: sleep ``item`` seconds."""
    time.sleep(float(item))
    return item, float(item)


def children(pid: int) -> list[int]:
    """The live child processes of ``pid`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[1]) == pid and fields[0] not in ("Z", "X"):
                found.append(int(entry.name))
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text()
    except OSError:
        return ""


def worker_pids(run_pid: int) -> list[int]:
    """The cell workers of the ``bench run`` process ``run_pid``, running now.

    Spawned workers (machines with GPUs) are its children running ``spawn_main``; forked ones
    (without GPUs) are the children of its forkserver child (bench/run/parallel.py).
    """
    found = []
    for child in children(run_pid):
        line = _cmdline(child)
        if "spawn_main" in line:
            found.append(child)
        elif "forkserver" in line:
            found.extend(children(child))
    return found
