"""noisy-text-smoke's noisy-label methods on real TREC, against figures measured once.

The four noisy-label methods of the smoke (delora-nld on its reduced budget, small-loss,
co-teaching, cleanlab with 3 folds) at symmetric 20 % noise, seed 0 (4 cells), through the
public API. Accuracy and detection against the truth mask are compared with the figures
below, measured with the same four cells of

    bench run --suite noisy-text-smoke

on a 2-core AMD EPYC CPU (torch 2.13.0 CPU build, bf16 autocast, 2026-11-21). Tolerances:
3 points of accuracy, 5 points of detection precision/recall and 0.05 AUROC (thread-count
and kernel differences across CPUs); a detector that swaps its LoRAs' roles or ranks at
chance moves them far more (docs/delora.md: AUROC 0.08-0.55 for such settings).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from bench import api
from bench.suite import load_suite
from tests.integration.test_smoke import _data_dir

pytestmark = pytest.mark.integration

#: method id -> measured (accuracy, precision_noisy, recall_noisy, auroc) on TREC sym-20 %.
MEASURED = {
    "delora-nld": (0.766, 0.3505, 0.5285, 0.7199),
    "small-loss": (0.910, 0.7080, 0.9171, 0.9714),
    "co-teaching": (0.908, 0.8728, 0.7824, 0.9633),
    "cleanlab": (0.874, 0.5932, 0.8083, 0.9369),
}


def test_noisy_label_methods_detect_injected_noise(tmp_path: Path) -> None:
    suite = load_suite("noisy-text-smoke")
    suite = dataclasses.replace(suite, methods=tuple(m for m in suite.methods if m.id in MEASURED),
                                noise=tuple(n for n in suite.noise if n.label() == "sym-20%"))
    summary = api.run_suite(suite, data_dir=_data_dir(), results=tmp_path / "results", quiet=True)
    assert summary.failed == [] and len(summary.ran) == len(MEASURED)
    for path in summary.paths:
        record = json.loads(path.read_text())
        method, m = record["spec"]["method"]["id"], record["metrics"]
        accuracy, precision_noisy, recall_noisy, auroc = MEASURED[method]
        assert m["accuracy"] == pytest.approx(accuracy, abs=0.03), method
        assert m["precision_noisy"] == pytest.approx(precision_noisy, abs=0.05), method
        assert m["recall_noisy"] == pytest.approx(recall_noisy, abs=0.05), method
        assert m["auroc"] == pytest.approx(auroc, abs=0.05), method
        assert m["n_truly_clean"] == 807  # the realised symmetric noise: 19.3 % of 1,000 rows
        # per-epoch detection: Delora's 4 detector epochs, small-loss after warm-up (epochs 2, 3),
        # co-teaching every epoch; cleanlab selects once
        expected_epochs = {"delora-nld": 4, "small-loss": 2, "co-teaching": 3, "cleanlab": 0}[method]
        assert len(record["curves"].get("detect_auroc", [])) == expected_epochs, method
        with np.load(path.with_name(f"{record['run_id']}.preds.npz")) as arrays:
            assert arrays["train_clean_score"].shape == (1000,)
