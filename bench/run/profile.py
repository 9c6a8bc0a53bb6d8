"""Measuring phases: wall time, peak CPU RSS, torch CUDA peaks, NVML memory and energy.

Every figure has its unit in its name. GPU figures are None (not 0) without a GPU.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

import psutil
import torch

from bench.run.devices import physical_gpu

if TYPE_CHECKING:
    from bench.sdk.loop import TrainStats

GIB = float(2**30)


class _RssSampler(threading.Thread):
    """Polls this process's resident memory every ``interval`` seconds; keeps the peak."""

    def __init__(self, interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.interval, self.peak = interval, 0
        self._stop_event = threading.Event()
        self._process = psutil.Process()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.peak = max(self.peak, self._process.memory_info().rss)
            self._stop_event.wait(self.interval)

    def stop(self) -> int:
        self._stop_event.set()
        self.join()
        return int(max(self.peak, self._process.memory_info().rss))


def _nvml_handle(device: torch.device) -> Any:
    """The NVML handle of ``device`` (the physical GPU behind ``CUDA_VISIBLE_DEVICES``), or None."""
    try:
        import pynvml

        pynvml.nvmlInit()
        gpu = physical_gpu(torch.cuda.current_device() if device.index is None else device.index)
        if gpu.isdigit():
            return pynvml.nvmlDeviceGetHandleByIndex(int(gpu))
        return pynvml.nvmlDeviceGetHandleByUUID(gpu)
    except Exception:  # no driver, no NVML: figures stay None
        return None


class Phase:
    """Context manager measuring one phase (``setup``, ``train``, ``eval``...).

    ``figures`` afterwards holds ``<name>_wall_s``, ``<name>_peak_rss_gib`` and, on CUDA,
    ``<name>_peak_gpu_{allocated,reserved,active}_gib``, ``<name>_gpu_device_used_gib`` (NVML,
    sampled at the end) and ``<name>_gpu_energy_j`` where the driver reports energy.
    """

    def __init__(self, name: str, device: torch.device) -> None:
        self.name, self.device = name, device
        self.figures: dict[str, float | None] = {}

    def __enter__(self) -> Phase:
        self._cuda = self.device.type == "cuda"
        self._nvml = _nvml_handle(self.device) if self._cuda else None
        self._energy0 = self._energy()
        if self._cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        self._sampler = _RssSampler()
        self._sampler.start()
        self._t0 = time.perf_counter()
        return self

    def _energy(self) -> float | None:
        if self._nvml is None:
            return None
        try:
            import pynvml

            return float(pynvml.nvmlDeviceGetTotalEnergyConsumption(self._nvml)) / 1000.0
        except Exception:
            return None

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._cuda:
            torch.cuda.synchronize(self.device)
        wall = time.perf_counter() - self._t0
        n = self.name
        self.figures = {f"{n}_wall_s": wall, f"{n}_peak_rss_gib": self._sampler.stop() / GIB}
        if self._cuda:
            stats = torch.cuda.memory_stats(self.device)
            self.figures.update({
                f"{n}_peak_gpu_allocated_gib": stats.get("allocated_bytes.all.peak", 0) / GIB,
                f"{n}_peak_gpu_reserved_gib": stats.get("reserved_bytes.all.peak", 0) / GIB,
                f"{n}_peak_gpu_active_gib": stats.get("active_bytes.all.peak", 0) / GIB,
            })
            if self._nvml is not None:
                import pynvml

                used = pynvml.nvmlDeviceGetMemoryInfo(self._nvml).used
                self.figures[f"{n}_gpu_device_used_gib"] = used / GIB
            end = self._energy()
            if end is not None and self._energy0 is not None:
                self.figures[f"{n}_gpu_energy_j"] = end - self._energy0


def train_figures(stats: Sequence[TrainStats]) -> dict[str, float]:
    """Steps, samples and tokens of a fit's training loops, and their timed throughput."""
    timed_s = sum(s.timed_s for s in stats)
    return {
        "train_steps": float(sum(s.steps for s in stats)),
        "train_samples": float(sum(s.samples for s in stats)),
        "train_tokens": float(sum(s.tokens for s in stats)),
        "train_samples_per_s": sum(s.timed_samples for s in stats) / timed_s if timed_s else float("nan"),
        "train_tokens_per_s": sum(s.timed_tokens for s in stats) / timed_s if timed_s else float("nan"),
    }


PEAK_KEYS = ("peak_rss_gib", "peak_gpu_allocated_gib", "peak_gpu_reserved_gib", "peak_gpu_active_gib",
             "gpu_device_used_gib")


def overall_peaks(efficiency: dict[str, Any]) -> dict[str, float]:
    """The largest per-phase figure of each peak-memory kind, e.g. ``peak_rss_gib``."""
    out = {}
    for key in PEAK_KEYS:
        values = [v for k, v in efficiency.items() if k.endswith(f"_{key}") and v is not None]
        if values:
            out[key] = max(values)
    return out
