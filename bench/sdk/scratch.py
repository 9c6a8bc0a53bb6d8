"""Scratch folders in the system temporary folder, named by the process that made them.

Every temporary folder the harness or a method makes (reload checks, PiSSA/OLoRA initial
adapters, conversions, GRPO output) is ``peftbench-<what>-<pid>-<random>``. A process killed with
-9 cannot remove its own; :func:`sweep_scratch`, run at the start of ``bench run``, removes every
such folder whose process is gone from this host.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

from bench.processes import pid_alive

#: ``peftbench-<what>-<pid>-<random>``: the folders :func:`sweep_scratch` may remove.
PATTERN = re.compile(r"peftbench-[a-z]+-(\d+)-.+")


def scratch_prefix(what: str) -> str:
    """The ``prefix=`` for ``tempfile.mkdtemp``/``TemporaryDirectory``: ``peftbench-<what>-<pid>-``."""
    return f"peftbench-{what}-{os.getpid()}-"




def sweep_scratch(root: str | Path | None = None) -> list[Path]:
    """Remove the scratch folders of processes that no longer exist; return what was removed."""
    base = Path(root or tempfile.gettempdir())
    removed = []
    for entry in base.iterdir() if base.is_dir() else ():
        match = PATTERN.fullmatch(entry.name)
        if match and entry.is_dir() and not entry.is_symlink() and not pid_alive(int(match.group(1))):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed
