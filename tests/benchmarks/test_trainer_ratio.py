"""The harness-vs-Trainer throughput benchmark on a small TREC slice: sanity only.

Both loops must train (throughput > 0, finite losses, the last steps' loss below the first
steps'). No timing threshold: the speed comparison lives in ``benchmarks/trainer_ratio.py``;
the ratio is recorded in ``benchmark.extra_info`` for pytest-benchmark's JSON output.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
import pytest
import torch

from bench.errors import BenchError
from bench.sdk.loop import resolve_precision
from bench.spec.suite import TrainConfig
from benchmarks.trainer_ratio import compare, load_trec

pytestmark = pytest.mark.integration

ROWS = 256
MAX_LENGTH = 64


def _trec() -> tuple[Any, int]:
    try:
        return load_trec(ROWS, MAX_LENGTH)
    except BenchError as err:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"real data not available: {err}")


def test_harness_and_trainer_both_train_the_same_lora(benchmark: Any) -> None:
    data, n_classes = _trec()
    precision = resolve_precision("auto", torch.device("cpu"))
    cfg = TrainConfig(epochs=1, batch_size=32, lr=5e-3, precision=precision)
    result = benchmark.pedantic(compare, args=(data, n_classes, cfg), kwargs={"seed": 0},
                                rounds=1, iterations=1)
    benchmark.extra_info.update({k: result[k] for k in (
        "ratio", "harness_samples_per_s", "trainer_samples_per_s", "trainer_own_samples_per_s",
        "harness_mean_loss", "trainer_mean_loss")} | {"rows": ROWS, "precision": precision})

    assert [r["side"] for r in result["runs"]] == ["harness", "trainer"]
    for run in result["runs"]:
        losses = run["step_losses"]
        assert len(losses) == ROWS // cfg.batch_size, run["side"]
        assert run["samples_per_s"] > 0, run["side"]
        assert all(math.isfinite(x) for x in losses) and math.isfinite(run["mean_loss"]), run["side"]
        assert np.mean(losses[-3:]) < np.mean(losses[:3]), (run["side"], losses)
    assert result["trainer_own_samples_per_s"] > 0


#: (precision, fixed length or None, rows, floor of the harness/Trainer ratio per CPU second). The
#: target is 1.2× (docs/speed.md), the floor of the bf16 case with dynamic padding (measured 1.27-1.28×
#: at one thread: dropout masks four to a random word, bf16 casts of frozen weights reused, 12 % fewer
#: padded tokens). At a fixed width in fp32, where the two loops differ only in their dropout masks,
#: 1.07-1.10× was measured; its floor guards parity.
RATIO_CASES = [("bf16", None, 512, 1.2), ("fp32", MAX_LENGTH, 384, 1.0)]
TARGET_RATIO = 1.2


@pytest.mark.slow
@pytest.mark.benchmark(group="loop-vs-trainer")
@pytest.mark.parametrize(("precision", "fixed", "rows", "floor"), RATIO_CASES,
                         ids=["bf16-dynamic", "fp32-fixed64"])
def test_loop_throughput_ratio_vs_trainer(benchmark: Any, precision: str, fixed: int | None, rows: int,
                                          floor: float) -> None:
    """Two interleaved harness/Trainer pairs after an untimed harness run; ratio of median samples/s.

    One torch thread, and the assertion on throughput per process CPU second: on a machine shared
    with other jobs a preempted step inflates wall time on whichever side it hits (measured: wall
    ratios of 0.88-1.66× at load average 3.5-3.9 where the CPU-time ratio held). The wall ratio is
    recorded beside it.
    """
    torch.set_num_threads(1)  # this module is marked integration: conftest gave it every core
    try:
        data, n_classes = load_trec(rows, MAX_LENGTH)
    except BenchError as err:
        pytest.skip(f"real data not available: {err}")
    if precision == "bf16" and resolve_precision("auto", torch.device("cpu")) != "bf16":
        pytest.skip("this CPU does not compute in bf16")
    cfg = TrainConfig(epochs=1, batch_size=32, lr=5e-3, precision=precision)
    result = benchmark.pedantic(compare, args=(data, n_classes, cfg),
                                kwargs={"seed": 0, "fixed_length": fixed, "repeats": 2}, rounds=1, iterations=1)
    benchmark.extra_info.update({k: result[k] for k in (
        "ratio", "cpu_ratio", "harness_samples_per_s", "trainer_samples_per_s", "trainer_own_samples_per_s",
        "harness_cpu_samples_per_s", "trainer_cpu_samples_per_s")}
        | {"rows": rows, "precision": precision, "fixed_length": fixed, "target_ratio": TARGET_RATIO,
           "meets_target": result["cpu_ratio"] >= TARGET_RATIO, "torch_threads": torch.get_num_threads(),
           "loadavg_1m": os.getloadavg()[0]})
    assert result["sane"], result
    assert result["cpu_ratio"] >= floor, {k: v for k, v in result.items() if k != "runs"}
