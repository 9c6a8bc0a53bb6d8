"""Cell claims: two ``bench run`` processes on one store split the grid instead of both running it.

Before a cell runs, its runner creates ``<store>/<suite>/<method id>/.<run_id>.claim`` with
``O_CREAT | O_EXCL`` (atomic on local filesystems and on NFSv3+), holding its pid, host and start
time, and removes it once the cell's record is written. A cell whose claim exists is skipped
("claimed by …") unless the claim is stale:

- on this host, when its process no longer exists (a run killed with -9);
- from another host, when it is older than :data:`FOREIGN_STALE_S` (its liveness cannot be
  checked from here; a cell running longer than that on another machine may then run twice);
- unreadable (a writer killed between create and write), when older than a minute.

A stale claim is replaced; when two runs take over the same stale claim at once, the one whose
claim is read back wins.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from bench.processes import pid_alive

#: Seconds after which another host's claim counts as abandoned.
FOREIGN_STALE_S = 12 * 3600.0
_UNREADABLE_STALE_S = 60.0


def claim_path(folder: Path, run_id: str) -> Path:
    """The claim file of ``run_id`` in a method's store folder."""
    return folder / f".{run_id}.claim"


def _owner() -> dict[str, Any]:
    return {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}




def read_claim(path: Path) -> dict[str, Any] | None:
    """The claim's owner, or None when it is missing or unreadable."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def is_stale(path: Path) -> bool:
    """Whether an existing claim may be taken over (see the module docstring)."""
    owner = read_claim(path)
    try:
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return True
    if owner is None or not isinstance(owner.get("pid"), int):
        return age > _UNREADABLE_STALE_S
    if owner.get("host") == socket.gethostname():
        return not pid_alive(owner["pid"])
    return age > FOREIGN_STALE_S


def describe(path: Path) -> str:
    """``pid 123 on host h`` for the claim's owner."""
    owner = read_claim(path) or {}
    return f"pid {owner.get('pid', '?')} on host {owner.get('host', '?')}"


def try_claim(path: Path) -> bool:
    """Claim a cell for this process; False when another live run holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    me = _owner()
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            owner = read_claim(path)
            if owner is not None and owner.get("pid") == me["pid"] and owner.get("host") == me["host"]:
                return True  # ours already
            if not is_stale(path):
                return False
            path.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(me, handle)
        owner = read_claim(path)  # a concurrent takeover may have replaced it
        return owner is not None and owner.get("pid") == me["pid"] and owner.get("host") == me["host"]
    return False


def release(path: Path) -> None:
    """Remove this process's claim (another process's is left alone)."""
    owner = read_claim(path)
    if owner is not None and owner.get("pid") == os.getpid() and owner.get("host") == socket.gethostname():
        path.unlink(missing_ok=True)
