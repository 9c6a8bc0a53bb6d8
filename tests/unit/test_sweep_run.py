"""A two-trial sweep end to end: ``bench run`` stores both trials as their own records, ``bench report`` names the
selected setting. One seed, two cells of random:tiny-bert on 24 toy rows, each in its own worker process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import api
from bench.cli import main
from bench.results.sweep import find_sweeps
from tests.run_helpers import toy_dataset

SUITE = """\
name: toysweep
model: random:tiny-bert
tasks:
  toy: {dataset: toyds}
methods:
  lora: {config: {r: 2, alpha: 4}, sweep: {train.lr: [0.0, 5.0e-2]}}
seeds: [0]
train: {epochs: 2, batch_size: 8, precision: fp32}
"""


def test_a_sweep_runs_as_cells_and_the_report_names_the_selected_setting(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = toy_dataset(tmp_path / "data", 24)
    suite = tmp_path / "toysweep.yaml"
    suite.write_text(SUITE)
    argv = ["run", "--suite", str(suite), "--data-dir", str(data), "--results-dir", str(tmp_path / "results"),
            "--quiet"]
    assert main(argv) == 0
    assert "2 ran, 0 skipped" in capsys.readouterr().out
    stored = [json.loads(p.read_text()) for p in sorted((tmp_path / "results" / "toysweep" / "lora").glob("*.json"))]
    assert len(stored) == 2 and all(r["status"] == "success" for r in stored)
    assert sorted(r["spec"]["sweep"]["trial"]["train.lr"] for r in stored) == [0.0, 0.05]
    assert all(r["spec"]["sweep"]["grid"] == {"train.lr": [0.0, 0.05]} for r in stored)
    assert all(0.0 <= r["metrics"]["val_accuracy"] <= 1.0 and r["metrics"]["val_nll"] > 0 for r in stored)
    # the rule, by hand from the stored validation figures: higher val accuracy, then lower val NLL, then grid order
    best = min(stored, key=lambda r: (-r["metrics"]["val_accuracy"], r["metrics"]["val_nll"],
                                      r["spec"]["train"]["lr"]))
    setting = {0.0: "lr 0", 0.05: "lr 5e-2"}[best["spec"]["train"]["lr"]]
    (sweep,) = find_sweeps(stored)
    assert sweep.setting == setting
    (leaderboard, *_) = api.build_report(str(suite), results=tmp_path / "results", reports=tmp_path / "reports")
    text = leaderboard.read_text()
    assert f"| lora ({setting}) |" in text and "| lora | lr 0 |" in text and "| lora | lr 5e-2 |" in text
    assert main(argv) == 0  # a rerun skips both trials: they are stored cells like any other
    assert "0 ran, 2 skipped" in capsys.readouterr().out
