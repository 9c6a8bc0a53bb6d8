"""Tests for bench.report.deltas: the suite's ``report: deltas`` as Welch tests over seeds."""

from __future__ import annotations

import math
from typing import Any

import pytest

from bench.report import leaderboard_markdown
from bench.report.deltas import delta_rows, deltas_section
from bench.spec.suite import ReportSpec


def record(run_id: str, method: str, seed: int, *, task: str = "sst2", status: str = "success",
           **metrics: float) -> dict[str, Any]:
    return {"run_id": run_id, "status": status, "kind": "classification",
            "spec": {"task": {"name": task}, "noise": {"kind": "none", "rate": 0.0, "label": "clean"},
                     "model": {"name": "minilm"}, "method": {"id": method}, "seed": seed},
            "env": {"device": "cpu", "git_commit": "abc", "git_dirty": False, "packages": {"torch": "2.13.0"}},
            "metrics": metrics, "efficiency": {}}


RECORDS = [
    *(record(f"b{i}", "ba-lora", i, accuracy=a, worst_class_acc=w)
      for i, (a, w) in enumerate([(0.80, 0.5), (0.82, 0.6), (0.84, 0.7)])),
    *(record(f"p{i}", "pissa", i, accuracy=a, worst_class_acc=w)
      for i, (a, w) in enumerate([(0.70, 0.5), (0.72, 0.6), (0.74, 0.7)])),
    record("l0", "lora", 0, accuracy=0.75),
    record("l1", "lora", 1, status="failed"),
]


def test_welch_difference_hand_computed() -> None:
    rows = delta_rows(RECORDS, {"ba-lora": ["pissa"]}, ["accuracy"])
    (row,) = rows
    # means 0.82 and 0.72, both variances 0.0004: se = √(2 · 0.0004/3) = 0.0163299, df = 4,
    # t = 6.1237, two-sided p = 0.003602 (scipy.stats.ttest_ind(equal_var=False) gives the same);
    # half-width t(0.975, 4) · se = 2.776445 · 0.0163299 = 0.045339
    assert row.delta == pytest.approx(0.10)
    assert (row.n_method, row.n_reference) == (3, 3)
    assert row.ci_low == pytest.approx(0.10 - 0.045339, abs=1e-6)
    assert row.ci_high == pytest.approx(0.10 + 0.045339, abs=1e-6)
    assert row.p == pytest.approx(0.0036022, abs=1e-6)


def test_equal_spread_and_no_difference_is_p_one() -> None:
    (row,) = delta_rows(RECORDS, {"ba-lora": ["pissa"]}, ["worst_class_acc"])
    assert row.delta == pytest.approx(0.0) and row.p == pytest.approx(1.0)


def test_one_seed_a_side_has_a_difference_but_no_test() -> None:
    # lora has one successful seed (the failed one is left out)
    (row,) = delta_rows(RECORDS, {"ba-lora": ["lora"]}, ["accuracy"])
    assert row.n_reference == 1 and row.delta == pytest.approx(0.82 - 0.75)
    assert math.isnan(row.p) and math.isnan(row.ci_low)


def test_missing_method_or_metric_gives_no_row() -> None:
    assert delta_rows(RECORDS, {"ba-lora": ["dora"]}, ["accuracy"]) == []
    assert delta_rows(RECORDS, {"ba-lora": ["lora"]}, ["worst_class_acc"]) == []  # lora never reported it
    assert deltas_section(RECORDS, {}, ["accuracy"]) == []


def test_section_in_the_leaderboard() -> None:
    report = ReportSpec(deltas={"ba-lora": ["pissa", "lora"]}, delta_metrics=("accuracy",))
    text = leaderboard_markdown(RECORDS, suite="s", report=report)
    assert "## Differences between methods" in text
    assert "| sst2 · clean | ba-lora − pissa | accuracy | 3/3 | 82.00 | 72.00 | +10.00 | [+5.47, +14.53] | 0.004 |" \
        in text
    assert "| sst2 · clean | ba-lora − lora | accuracy | 3/1 | 82.00 | 75.00 | +7.00 | – | – |" in text
    assert "Differences between methods" not in leaderboard_markdown(RECORDS, suite="s")
