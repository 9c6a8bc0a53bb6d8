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
