"""Which GPU a local worker gets (``bench run --jobs N``) and the environment it starts with.

Worker ``k`` (its slot, 0 to N-1) gets GPU ``k mod n`` of the ``n`` GPUs this process may use:
the entries of ``CUDA_VISIBLE_DEVICES`` when it is set (so ``CUDA_VISIBLE_DEVICES=2,3 bench run
--jobs 4`` puts workers 0 and 2 on GPU 2, workers 1 and 3 on GPU 3), else all the GPUs torch
counts. The worker is started with ``CUDA_VISIBLE_DEVICES`` naming that one GPU, before torch
starts in it, so it computes on ``cuda:0`` of its own view. Without GPUs the variable is left as
it is. (Under Ray, Ray sets the variable for each task from the GPUs it reserved.)
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

CUDA_VISIBLE = "CUDA_VISIBLE_DEVICES"
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def visible_gpus(environ: Mapping[str, str] | None = None, count: int | None = None) -> list[str]:
    """The GPUs this process may hand out: ``CUDA_VISIBLE_DEVICES``'s entries, else ``0..count-1``.

    CUDA reads the variable up to its first invalid entry, and an empty value or ``-1`` hides
    every GPU; the same is done here. ``count`` defaults to torch's device count (no CUDA
    context is created by counting).
    """
    environ = os.environ if environ is None else environ
    value = environ.get(CUDA_VISIBLE)
    if value is not None:
        entries = []
        for part in value.split(","):
            entry = part.strip()
            if not entry or entry.startswith("-"):
                break
            entries.append(entry)
        return entries
    if count is None:
        count = _device_count()
    return [str(i) for i in range(count)]


def _device_count() -> int:
    try:
        import torch
    except ImportError:  # the assignment logic itself needs no torch
        return 0
    return int(torch.cuda.device_count())


def physical_gpu(index: int, environ: Mapping[str, str] | None = None) -> str:
    """What ``cuda:<index>`` of this process is outside it: an NVML index (``"3"``) or a UUID (``"GPU-…"``).

    ``CUDA_VISIBLE_DEVICES=3`` makes GPU 3 this process's ``cuda:0``, while NVML, which ignores
    the variable, numbers it 3: the memory and energy figures read NVML through this.
    """
    gpus = visible_gpus(environ, count=index + 1)
    if not 0 <= index < len(gpus):
        raise ValueError(f"cuda:{index} is not visible here ({CUDA_VISIBLE}={','.join(gpus)})")
    return gpus[index]


def gpu_for(worker: int, gpus: Sequence[str]) -> str | None:
    """The GPU of worker ``worker``: entry ``worker mod len(gpus)``; None without GPUs."""
    if worker < 0:
        raise ValueError(f"Invalid worker index {worker}")
    return gpus[worker % len(gpus)] if gpus else None


def worker_env(worker: int, threads: int, gpus: Sequence[str]) -> dict[str, str]:
    """The variables worker ``worker`` starts with: its thread count and, with GPUs, its GPU."""
    env = {name: str(threads) for name in THREAD_VARS}
    gpu = gpu_for(worker, gpus)
    if gpu is not None:
        env[CUDA_VISIBLE] = gpu
    return env
