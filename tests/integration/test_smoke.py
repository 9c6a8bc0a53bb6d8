"""noisy-text-smoke end to end on real data and the real MiniLM: measured figures and the gate.

One run of the whole suite (24 cells: TREC, 700 training rows, {sym-20 %, asym-40 %} × the 12
methods, seed 0) feeds every test in this file:

- each cell's accuracy, and the noisy-label methods' detection, against the figures below;
- a rerun skips every stored cell; the report renders from the store;
- the regression gate passes on this (unchanged) tree:
  ``bench compare results/baselines/noisy-text-smoke <this run> --fail accuracy:-1pp``;
- the same gate fails a deliberately broken method (LoRA at learning rate 0).

The run uses two worker processes of one torch thread each,

    bench run --suite noisy-text-smoke --jobs 2

which gives the numbers of a one-thread process. The figures below are seed 0 of the committed
baseline (results/baselines/README.md), made the same way,

    bench run --suite noisy-text-smoke --set "seeds=[0,1,2,3,4,5]" --jobs 2 --results-dir ...

on a 2-core Intel Xeon with AMX (2026-12-07, commit c0772c4: dropout masks drawn four to a random
word, delora-nld version 3). On the same CPU the two agree exactly; the thread count alone would
not (it changes the float reduction order, and that moves seed-unstable cells by points). Another
CPU family runs other bf16 kernels and rounds differently: the previous baseline's seed 0 on a
2-core AMD EPYC against the same run on the Intel Xeon (2026-11-29, same packages) moved 20 of the
24 cells, by at most 4.4 points of accuracy, detection precision/recall by at most 6.5 points and
AUROC by at most 0.006; the gate passed. Tolerances therefore depend on the CPU: on the
baseline's CPU 3 points of accuracy, 5 of detection precision/recall, 0.05 AUROC; on another 6,
10 and 0.05. A broken loop, wrong labels or a broken noise generator move accuracy far more, and
a detector that swaps its LoRAs' roles or ranks at chance moves detection far more
(docs/delora.md: AUROC 0.08-0.55 for such settings). The gate below is the seed-aware check;
these figures guard against gross breakage.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench import api
from bench.cli import main
from bench.data.loaders import resolve_data_dir
from bench.errors import BenchError
from bench.results.compare import ALL_CELLS
from bench.spec.suite import load_suite

pytestmark = pytest.mark.integration

BASELINE = Path(__file__).resolve().parents[2] / "results" / "baselines" / "noisy-text-smoke"
GATE = ("--fail", "accuracy:-1pp")
BASELINE_SEEDS = 6  # seeds 0-5 of the committed baseline

#: (noise label, method id) -> test accuracy on TREC (500 questions), seed 0, one thread per process.
MEASURED_ACCURACY = {
    ("sym-20%", "lora"): 0.908, ("sym-20%", "pissa"): 0.890, ("sym-20%", "olora"): 0.886,
    ("sym-20%", "dora"): 0.912, ("sym-20%", "rslora"): 0.906, ("sym-20%", "lora-dropout"): 0.890,
    ("sym-20%", "ba-lora"): 0.910, ("sym-20%", "full-ft"): 0.894, ("sym-20%", "delora-nld"): 0.762,
    ("sym-20%", "small-loss"): 0.886, ("sym-20%", "co-teaching"): 0.912, ("sym-20%", "cleanlab"): 0.884,
    ("asym-40%", "lora"): 0.708, ("asym-40%", "pissa"): 0.706, ("asym-40%", "olora"): 0.752,
    ("asym-40%", "dora"): 0.716, ("asym-40%", "rslora"): 0.716, ("asym-40%", "lora-dropout"): 0.708,
    ("asym-40%", "ba-lora"): 0.682, ("asym-40%", "full-ft"): 0.614, ("asym-40%", "delora-nld"): 0.586,
    ("asym-40%", "small-loss"): 0.808, ("asym-40%", "co-teaching"): 0.688, ("asym-40%", "cleanlab"): 0.754,
}

#: method id -> (accuracy, precision_noisy, recall_noisy, auroc) at sym-20 %, seed 0, one thread per process.
MEASURED_DETECTION = {
    "delora-nld": (0.762, 0.2967, 0.3913, 0.698),
    "small-loss": (0.886, 0.75, 0.913, 0.9736),
    "co-teaching": (0.912, 0.9237, 0.7899, 0.973),
    "cleanlab": (0.884, 0.545, 0.8333, 0.932),
}
#: the realised symmetric noise: 138 of the 700 rows (19.7 %) flipped
N_TRULY_CLEAN = 562

#: per-epoch detection curves: Delora's 4 detector epochs, small-loss after its warm-up
#: (epochs 2, 3), co-teaching every epoch; cleanlab selects once
DETECTION_EPOCHS = {"delora-nld": 4, "small-loss": 2, "co-teaching": 3, "cleanlab": 0}
N_TRAIN = 700

#: The CPU the figures above were measured on: ``env.cpu`` of the baseline's records ("Intel(R) Xeon(R) Processor").
BASELINE_CPU = json.loads(next(BASELINE.rglob("*[0-9a-f].json")).read_text())["env"]["cpu"]


@dataclasses.dataclass(frozen=True)
class Tolerance:
    accuracy: float
    detection: float  # precision and recall
    auroc: float


SAME_CPU, OTHER_CPU = Tolerance(0.03, 0.05, 0.05), Tolerance(0.06, 0.10, 0.05)


def _tolerance(record: dict[str, Any]) -> Tolerance:
    return SAME_CPU if record["env"].get("cpu") == BASELINE_CPU else OTHER_CPU


def _data_dir() -> Path:
    try:
        return resolve_data_dir()
    except BenchError as err:
        if os.environ.get("CI"):
            raise  # CI has ../shared/data beside the clone: missing data is a failure there
        pytest.skip(f"real data not available: {err}")


@dataclasses.dataclass(frozen=True)
class SmokeRun:
    results: Path
    records: list[dict[str, Any]]
    ran: list[str]
    failed: list[str]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> SmokeRun:
    results = tmp_path_factory.mktemp("smoke") / "results"
    summary = api.run_suite(load_suite("noisy-text-smoke"), data_dir=_data_dir(), results=results, quiet=True,
                            jobs=2)
    records = [json.loads(p.read_text()) for p in summary.paths]
    return SmokeRun(results, records, list(summary.ran), list(summary.failed))


def _key(record: dict[str, Any]) -> tuple[str, str]:
    return record["spec"]["noise"]["label"], record["spec"]["method"]["id"]


def test_every_cell_succeeds_with_its_measured_accuracy(smoke: SmokeRun) -> None:
    assert smoke.failed == [] and len(smoke.ran) == len(MEASURED_ACCURACY) == 24
    assert sorted(_key(r) for r in smoke.records) == sorted(MEASURED_ACCURACY)
    for record in smoke.records:
        key, m = _key(record), record["metrics"]
        assert record["status"] == "success"
        assert m["accuracy"] == pytest.approx(MEASURED_ACCURACY[key], abs=_tolerance(record).accuracy), key
        assert m["reload_max_abs_diff"] <= 1e-5, key
        assert record["efficiency"]["train_samples_per_s"] > 0
        assert record["noise"]["realised_rate"] == pytest.approx(record["spec"]["noise"]["rate"], abs=0.03)
        assert "collapsed" not in record["diagnostics"], key
        assert (smoke.results / "noisy-text-smoke" / key[1] / f"{record['run_id']}.preds.npz").exists()


def test_noisy_label_methods_detect_injected_noise(smoke: SmokeRun) -> None:
    sym = {r["spec"]["method"]["id"]: r for r in smoke.records if _key(r)[0] == "sym-20%"}
    for method, (accuracy, precision_noisy, recall_noisy, auroc) in MEASURED_DETECTION.items():
        record, m = sym[method], sym[method]["metrics"]
        tol = _tolerance(record)
        assert m["accuracy"] == pytest.approx(accuracy, abs=tol.accuracy), method
        assert m["precision_noisy"] == pytest.approx(precision_noisy, abs=tol.detection), method
        assert m["recall_noisy"] == pytest.approx(recall_noisy, abs=tol.detection), method
        assert m["auroc"] == pytest.approx(auroc, abs=tol.auroc), method
        assert m["n_truly_clean"] == N_TRULY_CLEAN
        assert len(record["curves"].get("detect_auroc", [])) == DETECTION_EPOCHS[method], method
        path = smoke.results / "noisy-text-smoke" / method / f"{record['run_id']}.preds.npz"
        with np.load(path) as arrays:
            assert arrays["train_clean_score"].shape == (N_TRAIN,)


def test_rerun_skips_and_report_renders(smoke: SmokeRun, tmp_path: Path) -> None:
    lines: list[str] = []
    again = api.run_suite(load_suite("noisy-text-smoke"), data_dir=_data_dir(), results=smoke.results,
                          quiet=True, echo=lines.append)
    assert again.ran == [] and sorted(again.skipped) == sorted(r["run_id"] for r in smoke.records)
    paths = api.build_report("noisy-text-smoke", results=smoke.results, reports=tmp_path / "reports")
    leaderboard = (tmp_path / "reports" / "noisy-text-smoke" / "leaderboard.md").read_text()
    assert all(r["run_id"] in leaderboard for r in smoke.records)
    assert any(p.name.startswith("pareto_accuracy_vs_trainable_params") for p in paths)


def test_gate_passes_on_the_unchanged_tree(smoke: SmokeRun, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["compare", str(BASELINE), str(smoke.results), *GATE])
    out = capsys.readouterr().out
    assert code == 0, out
    assert ("gate passed (accuracy:-1pp; α = 0.05, one-sided, Holm-adjusted over 24 gated cell test(s); "
            "the 1 all-cells test(s) apart, α split in halves between the two)") in out
    # every cell, and the pooled mean over cells, was tested against the baseline's other seeds
    # (its own seed 0 held out)
    result = api.compare(BASELINE, smoke.results, fail=("accuracy:-1pp",))
    accuracy = [row for row in result.rows if row.metric == "accuracy"]
    assert len(accuracy) == 25 and sum(row.cell == ALL_CELLS for row in accuracy) == 1
    assert {(r.n_baseline, r.n_new, r.result.test) for r in accuracy} == {(BASELINE_SEEDS - 1, 1, "prediction")}


def test_gate_fails_a_broken_method(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # LoRA that cannot learn: learning rate 0 for the adapters and the head (one epoch: lr 0 learns nothing
    # in any number of epochs, and the cell is matched to the baseline by task, noise, model and method)
    suite = load_suite("noisy-text-smoke", overrides=("train.lr=0", "train.head_lr=0", "train.epochs=1"))
    suite = dataclasses.replace(suite, methods=tuple(m for m in suite.methods if m.id == "lora"),
                                noise=tuple(n for n in suite.noise if n.label() == "sym-20%"))
    summary = api.run_suite(suite, data_dir=_data_dir(), results=tmp_path / "results", quiet=True)
    assert summary.failed == [] and len(summary.ran) == 1
    code = main(["compare", str(BASELINE), str(tmp_path / "results"), *GATE])
    out = capsys.readouterr().out
    assert code == 1, out
    assert "gate FAILED" in out and "trec · sym-20% · minilm · lora: accuracy Δ" in out
