"""Tests for bench compare: matching cells, the seed-aware tests, the gate and the CLI."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench.cli import main
from bench.evaluate.classification import classification_metrics
from bench.results.compare import ALL_CELLS, compare
from bench.results.gate import parse_fail
from bench.results.record import make_record
from bench.results.store import Store

N_ITEMS, N_CLASSES = 200, 3
RESAMPLES = 200  # paired-bootstrap resamples: enough for these clear cases, and fast
ENV = {"git_commit": "aaa", "git_dirty": False, "device": "cpu", "cpu": "AMD EPYC", "python": "3.11.7",
       "packages": {"peftbench": "0.1.0", "torch": "2.13.0", "transformers": "4.57.1", "peft": "0.17.0"}}


def predictions(n_correct: int, *, shift: int = 0) -> dict[str, np.ndarray]:
    """Items 0..N-1 with labels i % 3; the first ``n_correct`` items (after rotating by ``shift``)
    are predicted right with probability 0.8, the others wrong with 0.8 on the next class."""
    labels = np.arange(N_ITEMS) % N_CLASSES
    correct = np.roll(np.arange(N_ITEMS) < n_correct, shift)
    predicted = np.where(correct, labels, (labels + 1) % N_CLASSES)
    probs = np.full((N_ITEMS, N_CLASSES), 0.1)
    probs[np.arange(N_ITEMS), predicted] = 0.8
    return {"ids": np.arange(N_ITEMS) + 1000, "labels": labels, "probs": probs.astype("float32")}


def write_run(root: Path, *, seed: int, accuracy: float, method: str = "lora", noise: float = 0.2,
              suite: str = "s", env: dict[str, Any] | None = None, shift: int = 0) -> dict[str, Any]:
    """Store one successful run whose metrics come from its stored predictions."""
    preds = predictions(round(accuracy * N_ITEMS), shift=shift)
    metrics = classification_metrics(preds["probs"].astype(np.float64), preds["labels"])
    spec = {"suite": suite, "task": {"name": "trec"}, "noise": {"kind": "symmetric", "rate": noise},
            "model": {"name": "minilm"}, "method": {"id": method, "name": method}, "seed": seed}
    rid = f"{method}-{noise}-{seed}-{accuracy}"
    record = make_record(run_id=rid, spec=spec, env=env or ENV, metrics=metrics, status="success",
                         started_at="2025-01-01T00:00:00Z", finished_at="2025-01-01T00:01:00Z")
    store = Store(root)
    store.write(record)
    store.write_predictions(suite, method, rid, preds)
    return record


def write_seeds(root: Path, accuracies: list[float], **kwargs: Any) -> None:
    for seed, acc in enumerate(accuracies):
        write_run(root, seed=seed, accuracy=acc, **kwargs)


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["compare", *argv, "--resamples", str(RESAMPLES)])
    out = capsys.readouterr()
    return code, out.out, out.err


def rows_of(result: Any, metric: str = "accuracy") -> list[Any]:
    return [r for r in result.rows if r.metric == metric]


# --- the gate through the CLI --------------------------------------------------------------

def test_identical_stores_exit_0_with_zero_deltas(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for side in ("base", "new"):
        write_seeds(tmp_path / side, [0.90, 0.905, 0.91])
        write_run(tmp_path / side, seed=0, accuracy=0.8, method="ia3")  # one seed: the per-item test
    code, out, err = run_cli(capsys, str(tmp_path / "base"), str(tmp_path / "new"), "--fail", "accuracy:-1pp")
    assert code == 0 and "gate passed" in out and "FAIL" not in out
    result = compare(tmp_path / "base", tmp_path / "new", n_resamples=RESAMPLES)
    assert len(result.rows) == 10  # 2 cells × 5 metrics
    assert all(r.result.delta == 0 and r.result.p_value == 1 for r in result.rows)
    assert {r.result.test for r in rows_of(result)} == {"welch", "mcnemar-exact"}
    assert "tested per item" in err and "ignores seed variance" in err  # the ia3 cell
    assert "environments differ" not in err


def test_clearly_worse_fails_the_gate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_seeds(tmp_path / "base", [0.90, 0.905, 0.91])
    write_seeds(tmp_path / "new", [0.85, 0.855, 0.86])
    code, out, _ = run_cli(capsys, str(tmp_path / "base"), str(tmp_path / "new"), "--fail", "accuracy:-1pp")
    assert code == 1
    row = rows_of(compare(tmp_path / "base", tmp_path / "new"))[0]
    # both sides: s = 0.005, n = 3 → se = √(2 · 0.005²/3) = 0.0040825, t = -0.05 / 0.0040825 = -12.25
    assert row.result.delta == pytest.approx(-0.05) and row.result.test == "welch"
    assert row.result.p_value < 0.001 and row.result.ci_high < -0.01
    assert ("gate FAILED (accuracy:-1pp; α = 0.05, one-sided, Holm-adjusted over 1 gated cell test(s)) "
            "in 1 case(s):") in out
    assert "trec · symmetric-0.2 · minilm · lora: accuracy Δ -5.00 pp is beyond accuracy:-1pp and significant" in out
    table_line = next(line for line in out.splitlines() if line.startswith("trec") and "accuracy" in line)
    assert table_line.rstrip().endswith("FAIL")


def test_worse_within_seed_noise_passes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_seeds(tmp_path / "base", [0.80, 0.95, 0.88])  # s = 0.0751
    write_seeds(tmp_path / "new", [0.78, 0.90, 0.83])
    code, out, _ = run_cli(capsys, str(tmp_path / "base"), str(tmp_path / "new"), "--fail", "accuracy:-1pp")
    assert code == 0 and "gate passed" in out
    assert "not failing: trec · symmetric-0.2 · minilm · lora: accuracy Δ -4.00 pp is beyond accuracy:-1pp " \
           "but not significant" in out
    row = rows_of(compare(tmp_path / "base", tmp_path / "new"))[0]
    assert row.result.p_value > 0.05 and row.result.ci_low < 0 < row.result.ci_high


def test_one_new_seed_uses_the_prediction_interval(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_seeds(tmp_path / "base", [0.80, 0.95, 0.88])
    write_run(tmp_path / "new", seed=3, accuracy=0.83)
    code, _, _ = run_cli(capsys, str(tmp_path / "base"), str(tmp_path / "new"), "--fail", "accuracy:-1pp")
    row = rows_of(compare(tmp_path / "base", tmp_path / "new"))[0]
    # mean 0.876667, s = 0.075056; se = s·√(1 + 1/3) = 0.086667; t = -0.046667 / 0.086667 = -0.5385, df 2
    assert code == 0 and row.result.test == "prediction" and (row.n_baseline, row.n_new) == (3, 1)
    assert row.result.delta == pytest.approx(-0.046667, abs=1e-6)
    assert row.result.p_value == pytest.approx(0.6444, abs=1e-3)
    # a tight baseline makes the same drop significant
    write_seeds(tmp_path / "tight", [0.875, 0.88, 0.875])
    assert run_cli(capsys, str(tmp_path / "tight"), str(tmp_path / "new"), "--fail", "accuracy:-1pp")[0] == 1


def test_worse_but_less_than_the_threshold_passes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_seeds(tmp_path / "base", [0.90, 0.905, 0.90])
    write_seeds(tmp_path / "new", [0.895, 0.895, 0.89])
    code, out, _ = run_cli(capsys, str(tmp_path / "base"), str(tmp_path / "new"), "--fail", "accuracy:-1pp")
    row = rows_of(compare(tmp_path / "base", tmp_path / "new"))[0]
    assert row.result.delta == pytest.approx(-0.008333, abs=1e-6) and row.result.p_value < 0.05  # real, but small
    assert code == 0 and "gate passed" in out
    assert run_cli(capsys, str(tmp_path / "base"), str(tmp_path / "new"), "--fail", "accuracy:-0.5pp")[0] == 1


def test_single_seeds_fall_back_to_the_item_test(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_run(tmp_path / "base", seed=0, accuracy=0.90)
    write_run(tmp_path / "new", seed=0, accuracy=0.80, shift=30)
    code, out, err = run_cli(capsys, str(tmp_path / "base"), str(tmp_path / "new"), "--fail", "accuracy:-1pp",
                             "--fail", "nll:+0.05")
    assert code == 1 and "ignores seed variance" in err
    result = compare(tmp_path / "base", tmp_path / "new", n_resamples=RESAMPLES)
    acc = rows_of(result)[0].result
    # baseline right on items 0-179, new on items 30-189: only the baseline is right on 0-29 (b = 30),
    # only the new on 180-189 (c = 10); b + c = 40 >= 25 → chi-square, (|30 - 10| - 1)² / 40 = 9.025,
    # p = 0.0026631 (as in test_stats); delta = (c - b) / 200 = -0.10
    assert acc.test == "mcnemar-chi2" and acc.delta == pytest.approx(-0.10)
    assert acc.p_value == pytest.approx(0.0026631, rel=1e-4)
    assert acc.ci_low < -0.05 < acc.ci_high < 0
    assert rows_of(result, "nll")[0].result.test == "bootstrap"
    # NLL: right items cost -ln 0.8 = 0.223144, wrong ones -ln 0.1 = 2.302585;
    # 0.8·0.223144 + 0.2·2.302585 - (0.9·0.223144 + 0.1·2.302585) = 0.1·(2.302585 - 0.223144) = 0.207944
    # p = 2/201, the add-one floor of 200 resamples: no resample had the new NLL lower
    assert ("nll Δ +0.2079 is beyond nll:+0.05 and significant at α = 0.05 "
            "(p = 0.010, one-sided Holm-adjusted = 0.005, bootstrap)") in out


def test_items_or_labels_that_differ_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_run(tmp_path / "base", seed=0, accuracy=0.90)
    record = write_run(tmp_path / "new", seed=0, accuracy=0.90)
    preds = predictions(180)
    Store(tmp_path / "new").write_predictions("s", "lora", record["run_id"], {**preds, "ids": preds["ids"] + 1})
    code, _, err = run_cli(capsys, str(tmp_path / "base"), str(tmp_path / "new"))
    assert code == 2 and err.startswith("error: trec · symmetric-0.2 · minilm · lora: the two sides were evaluated on "
                                        "different items (200 vs 200 items; 1 only in the baseline, 1 only in the new)")
    Store(tmp_path / "new").write_predictions("s", "lora", record["run_id"],
                                              {**preds, "labels": (preds["labels"] + 1) % 3})
    code, _, err = run_cli(capsys, str(tmp_path / "base"), str(tmp_path / "new"))
    assert code == 2 and "disagree on the labels of 200 items" in err


# --- spec parsing and user errors ----------------------------------------------------------

def test_parse_fail_units_and_signs() -> None:
    assert parse_fail("accuracy:-1pp").limit == pytest.approx(-0.01)
    assert parse_fail("ece:+0.01").limit == pytest.approx(0.01)
    assert parse_fail("nll:+0.05").limit == pytest.approx(0.05)
    assert parse_fail("accuracy:2.5pp").limit == pytest.approx(-0.025)  # no sign: the metric's bad direction
    assert parse_fail("ece:1pp").limit == pytest.approx(0.01)
    threshold = parse_fail("accuracy:-1pp")
    assert not threshold.breached(0.90 - 0.91)  # exactly at the limit (float noise) is not beyond it
    assert threshold.breached(-0.0101) and not threshold.breached(0.05)


@pytest.mark.parametrize(("spec", "message"), [
    ("accuracy:-1%", "malformed --fail 'accuracy:-1%': expected METRIC:[+|-]NUMBER[pp], e.g. accuracy:-1pp or "
                     "nll:+0.05; write 'pp' for percentage points"),
    ("accuracy", "malformed --fail 'accuracy'"),
    ("acuracy:-1pp", "--fail 'acuracy:-1pp': unknown metric 'acuracy' (did you mean 'accuracy'?)"),
    ("nll:+5pp", "--fail 'nll:+5pp': 'pp' is for 0–1 metrics"),
])
def test_bad_fail_spec_exits_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                             spec: str, message: str) -> None:
    write_seeds(tmp_path / "base", [0.9, 0.91])
    code, out, err = run_cli(capsys, str(tmp_path / "base"), str(tmp_path / "base"), "--fail", spec)
    assert code == 2 and out == "" and len(err.splitlines()) == 1
    assert err.startswith(f"error: {message}")


def test_missing_or_empty_side_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_seeds(tmp_path / "base", [0.9])
    (tmp_path / "empty").mkdir()
    code, _, err = run_cli(capsys, str(tmp_path / "base"), str(tmp_path / "nope"))
    assert code == 2 and err == f"error: new {tmp_path / 'nope'}: no such folder\n"
    code, _, err = run_cli(capsys, str(tmp_path / "empty"), str(tmp_path / "base"))
    assert code == 2 and err == f"error: baseline {tmp_path / 'empty'}: no successful records\n"
    code, _, err = run_cli(capsys, str(tmp_path / "base"), str(tmp_path / "base"), "--method", "ia3")
    assert code == 2 and "no successful records for methods ia3" in err
    assert run_cli(capsys, str(tmp_path / "base"), str(tmp_path / "base"), "--alpha", "2")[0] == 2


def test_several_suites_need_suite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_seeds(tmp_path / "base", [0.9], suite="a")
    write_seeds(tmp_path / "base", [0.8], suite="b")
    code, _, err = run_cli(capsys, str(tmp_path / "base"), str(tmp_path / "base"))
    assert code == 2 and "holds several suites (a, b); choose one with --suite" in err
    assert run_cli(capsys, str(tmp_path / "base"), str(tmp_path / "base"), "--suite", "a")[0] == 0


# --- environments, layouts, output ---------------------------------------------------------

def test_environment_mismatch_warns_but_commit_does_not(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_seeds(tmp_path / "base", [0.9, 0.91])
    other = {**ENV, "git_commit": "bbb", "git_dirty": True, "cpu": "Intel Xeon",
             "packages": {**ENV["packages"], "peftbench": "0.2.0", "torch": "2.11.0"}}
    write_seeds(tmp_path / "new", [0.9, 0.91], env=other)
    code, _, err = run_cli(capsys, str(tmp_path / "base"), str(tmp_path / "new"))
    assert code == 0
    assert "warning: environments differ: torch 2.13.0 (baseline) vs 2.11.0 (new)" in err
    assert "warning: environments differ: cpu AMD EPYC (baseline) vs Intel Xeon (new)" in err
    assert "git" not in err and "peftbench" not in err and len(err.splitlines()) == 2


def test_sides_can_be_suite_or_method_folders(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_run(tmp_path / "base", seed=0, accuracy=0.9)
    write_run(tmp_path / "base", seed=0, accuracy=0.8, method="ia3")
    write_run(tmp_path / "new", seed=0, accuracy=0.9, noise=0.4)
    write_run(tmp_path / "new", seed=0, accuracy=0.85)
    result = compare(tmp_path / "base" / "s", tmp_path / "new" / "s" / "lora", n_resamples=RESAMPLES)
    assert [r.cell for r in rows_of(result)] == [("trec", "symmetric-0.2", "minilm", "lora")]
    assert rows_of(result)[0].result.test == "mcnemar-exact"  # predictions were found in both layouts
    assert result.only_baseline == [("trec", "symmetric-0.2", "minilm", "ia3")]
    assert result.only_new == [("trec", "symmetric-0.4", "minilm", "lora")]
    code, out, _ = run_cli(capsys, str(tmp_path / "base" / "s"), str(tmp_path / "new" / "s" / "lora"))
    assert code == 0
    assert "only in baseline (not compared): trec · symmetric-0.2 · minilm · ia3" in out
    assert "only in new (not compared): trec · symmetric-0.4 · minilm · lora" in out


def test_markdown_output_is_a_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_seeds(tmp_path / "base", [0.90, 0.905, 0.91])
    write_seeds(tmp_path / "new", [0.85, 0.855, 0.86])
    code, out, _ = run_cli(capsys, str(tmp_path / "base"), str(tmp_path / "new"), "--markdown",
                           "--fail", "accuracy:-1pp")
    lines = out.splitlines()
    assert code == 1 and lines[0] == "## bench compare"
    header = lines.index("| cell | metric | seeds | baseline | new | Δ new − baseline | 95 % CI of Δ | p | test "
                         "| gate |")
    assert lines[header + 1] == "|:---|:---|---:|---:|---:|---:|---:|---:|:---|:---|"
    body = lines[header + 2:header + 7]
    assert all(line.startswith("| ") and line.endswith(" |") and line.count(" | ") == 9 for line in body)
    assert body[0].startswith("| trec · symmetric-0.2 · minilm · lora | accuracy (%) | 3/3 | 90.50 | 85.50 "
                              "| -5.00 pp |")
    assert body[0].endswith("| <0.001 | welch | FAIL |")
    verdict = ("- gate FAILED (accuracy:-1pp; α = 0.05, one-sided, Holm-adjusted over 1 gated cell test(s)) "
               "in 1 case(s):")
    assert verdict in lines


# --- multiple comparisons ------------------------------------------------------------------

def test_holm_adjust_hand_computed() -> None:
    from bench.results.gate import holm_adjust

    # sorted 0.01, 0.02, 0.03, 0.04 of m = 4: 4·0.01 = 0.04, 3·0.02 = 0.06, 2·0.03 = 0.06, 1·0.04 = 0.04 → running max
    assert holm_adjust([0.03, 0.01, 0.04, 0.02]) == pytest.approx([0.06, 0.04, 0.06, 0.06])
    assert holm_adjust([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # min(1, ·)
    assert holm_adjust([]) == []


def test_holm_keeps_one_marginal_cell_among_many_from_failing(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    # 10 unchanged cells and one whose single new seed is a marginal outlier (p ≈ 0.03 unadjusted)
    for noise in range(10):
        write_seeds(tmp_path / "base", [0.80, 0.82, 0.84], noise=noise / 100)
        write_run(tmp_path / "new", seed=3, accuracy=0.82, noise=noise / 100)
    write_seeds(tmp_path / "base", [0.80, 0.82, 0.84], noise=0.5)
    write_run(tmp_path / "new", seed=3, accuracy=0.68, noise=0.5)
    # mean 0.82, s 0.02, se = 0.02·√(4/3) = 0.023094, t = -0.14 / 0.023094 = -6.062, df 2 → p = 0.026148;
    # one-sided 0.013074; Holm: the smallest of 11 p-values gets 11 · 0.013074 = 0.1438, doubled to
    # 0.2876 because the pooled all-cells row takes the other half of α
    plain = compare(tmp_path / "base", tmp_path / "new", fail=("accuracy:-1pp",), correction="none")
    (outlier,) = [r for r in rows_of(plain) if r.cell[1].endswith("0.5")]
    assert outlier.result.p_value == pytest.approx(0.0261, abs=1e-3)
    assert len(plain.failures()) == 1
    holm = compare(tmp_path / "base", tmp_path / "new", fail=("accuracy:-1pp",))
    (held,) = [r for r in rows_of(holm) if r.cell[1].endswith("0.5")]
    assert holm.failures() == [] and holm.gated_p_values()[id(held)] == pytest.approx(11 * 0.026148, abs=1e-4)
    code, out, _ = run_cli(capsys, str(tmp_path / "base"), str(tmp_path / "new"), "--fail", "accuracy:-1pp")
    assert code == 0 and "Holm-adjusted = 0.288" in out
    assert ("Holm-adjusted over 11 gated cell test(s); the 1 all-cells test(s) apart, α split in halves "
            "between the two" in out)
    assert run_cli(capsys, str(tmp_path / "base"), str(tmp_path / "new"), "--fail", "accuracy:-1pp",
                   "--correction", "none")[0] == 1


def test_the_pooled_row_catches_a_broad_drop_that_no_single_cell_shows(tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    # 4 cells × seeds 0-3; cell c at seed s is 0.80 + (0.03, 0.01, -0.01, -0.03)[(s + c) % 4] + 0.005·s,
    # so each cell spreads over 0.77-0.845 while each seed's mean over cells is 0.800, 0.805, 0.810, 0.815
    offsets = (0.03, 0.01, -0.01, -0.03)
    for c in range(4):
        write_seeds(tmp_path / "base", [0.80 + offsets[(s + c) % 4] + 0.005 * s for s in range(4)], noise=c / 10)
        write_run(tmp_path / "new", seed=4, accuracy=0.785, noise=c / 10)  # every cell 2.25 pp below its mean
    result = compare(tmp_path / "base", tmp_path / "new", fail=("accuracy:-1pp",))
    cells = [r for r in rows_of(result) if r.cell != ALL_CELLS]
    (pooled,) = [r for r in rows_of(result) if r.cell == ALL_CELLS]
    assert len(cells) == 4 and all(r.result.p_value > 0.3 for r in cells)
    # pooled: mean 0.8075, s = 0.0064550, se = s·√(1 + 1/4) = 0.0072169, t = -0.0225/0.0072169 = -3.118, df 3
    # → two-sided p = 0.05254; one-sided 0.02627, doubled (α split between the families) 0.05254
    assert (pooled.n_baseline, pooled.n_new, pooled.result.test) == (4, 1, "prediction")
    assert pooled.baseline == pytest.approx(0.8075) and pooled.result.delta == pytest.approx(-0.0225)
    assert pooled.result.p_value == pytest.approx(0.05254, abs=2e-4)
    assert result.gated_p_values()[id(pooled)] == pytest.approx(0.05254, abs=2e-4)
    assert result.failures() == []  # just above α: a 2.25 pp drop is at the edge with 4 seeds
    write_run(tmp_path / "worse", seed=4, accuracy=0.775, noise=0.0)
    for c in range(1, 4):
        write_run(tmp_path / "worse", seed=4, accuracy=0.775, noise=c / 10)
    worse = compare(tmp_path / "base", tmp_path / "worse", fail=("accuracy:-1pp",))
    assert [(r.cell, t.text) for r, t in worse.failures()] == [(ALL_CELLS, "accuracy:-1pp")]
    code, out, _ = run_cli(capsys, str(tmp_path / "base"), str(tmp_path / "worse"), "--fail", "accuracy:-1pp")
    assert code == 1 and "all cells · mean: accuracy Δ -3.25 pp is beyond accuracy:-1pp and significant" in out


def test_a_single_new_seed_is_not_tested_against_its_own_baseline_twin(tmp_path: Path) -> None:
    write_seeds(tmp_path / "base", [0.80, 0.82, 0.84])
    write_run(tmp_path / "new", seed=0, accuracy=0.80)
    result = compare(tmp_path / "base", tmp_path / "new")
    (row,) = rows_of(result)
    # baseline seeds 1, 2: mean 0.83, s = 0.014142; se = s·√(1 + 1/2) = 0.017321; t = -0.03/0.017321 = -1.732, df 1
    assert (row.n_baseline, row.n_new, row.result.test) == (2, 1, "prediction")
    assert row.baseline == pytest.approx(0.83) and row.result.p_value == pytest.approx(1 / 3, abs=1e-3)
    assert any("left out of the baseline's seeds" in w for w in result.warnings)
    # a seed the baseline does not have: all three baseline seeds are used
    write_run(tmp_path / "new3", seed=3, accuracy=0.80)
    (row,) = rows_of(compare(tmp_path / "base", tmp_path / "new3"))
    assert row.n_baseline == 3 and row.baseline == pytest.approx(0.82)


def test_one_sided_p_points_the_bad_way() -> None:
    from bench.results.gate import one_sided

    assert one_sided(0.04, -0.03, bad_down=True) == pytest.approx(0.02)   # a drop in accuracy
    assert one_sided(0.04, +0.03, bad_down=True) == pytest.approx(0.98)   # a gain is no evidence of harm
    assert one_sided(0.04, +0.01, bad_down=False) == pytest.approx(0.02)  # a rise in ECE


# --- generation cells ----------------------------------------------------------------------

def write_generation_run(root: Path, *, seed: int, mmlu_right: int, gsm8k_right: int = 5,
                         passed: list[int] | None = None) -> None:
    """A generation run: 100 MMLU items (the first ``mmlu_right`` right), 20 GSM8K problems
    (the first ``gsm8k_right`` right) and 10 HumanEval problems with one sample each."""
    mmlu = (np.arange(100) < mmlu_right).astype("float32")
    gsm8k = (np.arange(20) < gsm8k_right).astype("float32")
    humaneval = np.asarray(passed if passed is not None else [1, 0] * 5, dtype="int8")[:, None]
    # every choice probability 0.25: confidence 0.25 in one bin, so ECE = |accuracy - 0.25|
    metrics = {"mmlu_0shot_acc": float(mmlu.mean()), "mmlu_0shot_ece": abs(float(mmlu.mean()) - 0.25),
               "gsm8k_exact_match_strict_match": float(gsm8k.mean()),
               "humaneval_pass_at_1": float(humaneval.mean()), "reload_max_abs_diff": 0.0}
    spec = {"suite": "g", "task": {"name": "gsm8k", "kind": "generation"}, "model": {"name": "smollm2"},
            "method": {"id": "lora", "name": "lora"}, "seed": seed}
    rid = f"gen-{seed}-{mmlu_right}-{gsm8k_right}"
    store = Store(root)
    store.write(make_record(run_id=rid, spec=spec, env=ENV, metrics=metrics, status="success",
                            started_at="2025-01-01T00:00:00Z", finished_at="2025-01-01T00:01:00Z"))
    store.write_predictions("g", "lora", rid, {
        "mmlu_0shot_doc_id": np.arange(100), "mmlu_0shot_acc": mmlu, "mmlu_0shot_probs": np.full((100, 4), 0.25),
        "gsm8k_doc_id": np.arange(20), "gsm8k_exact_match_strict_match": gsm8k,
        "humaneval_problem": np.arange(10), "humaneval_passed": humaneval})


def test_generation_cells_compare_their_own_metrics_per_item(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    write_generation_run(tmp_path / "base", seed=0, mmlu_right=40)
    write_generation_run(tmp_path / "new", seed=0, mmlu_right=25, passed=[1, 1] * 5)
    result = compare(tmp_path / "base", tmp_path / "new", n_resamples=RESAMPLES)
    rows = {r.metric: r for r in result.rows}
    assert set(rows) == {"mmlu_0shot_acc", "mmlu_0shot_ece", "gsm8k_exact_match_strict_match", "humaneval_pass_at_1"}
    assert all(r.cell == ("gsm8k", "clean", "smollm2", "lora") for r in result.rows)  # no pooled row
    # MMLU: only the baseline is right on items 25-39 (b = 15, c = 0) → exact binomial, p = 2·0.5^15
    acc = rows["mmlu_0shot_acc"].result
    assert acc.test == "mcnemar-exact" and acc.delta == pytest.approx(-0.15)
    assert acc.p_value == pytest.approx(2 * 0.5 ** 15)
    # GSM8K identical: no discordant items, p = 1; HumanEval: 5 problems only the new passes
    assert rows["gsm8k_exact_match_strict_match"].result.p_value == 1.0
    he = rows["humaneval_pass_at_1"].result
    assert he.delta == pytest.approx(0.5) and he.p_value == pytest.approx(2 * 0.5 ** 5)
    # ECE from the stored choice probabilities and correctness: 0.15 → 0.00
    ece = rows["mmlu_0shot_ece"].result
    assert ece.test == "bootstrap" and ece.delta == pytest.approx(-0.15, abs=1e-6)
    code, out, err = run_cli(capsys, str(tmp_path / "base"), str(tmp_path / "new"), "--fail", "mmlu_0shot_acc:-1pp")
    assert code == 1, out
    assert "gsm8k · clean · smollm2 · lora: mmlu_0shot_acc Δ -15.00 pp" in out
    assert "not tested" not in err


def test_generation_seeds_use_the_seed_tests(tmp_path: Path) -> None:
    for seed, right in enumerate([30, 32, 28]):
        write_generation_run(tmp_path / "base", seed=seed, mmlu_right=right)
    write_generation_run(tmp_path / "new", seed=5, mmlu_right=29)
    result = compare(tmp_path / "base", tmp_path / "new", fail=("mmlu_0shot_acc:-1pp",), n_resamples=RESAMPLES)
    acc = next(r for r in result.rows if r.metric == "mmlu_0shot_acc")
    # baseline mean 0.30, sd 0.02; t = (0.29 - 0.30) / (0.02·√(1 + 1/3)) = -0.4330, df 2
    assert (acc.n_baseline, acc.n_new, acc.result.test) == (3, 1, "prediction")
    assert acc.result.delta == pytest.approx(-0.01, abs=1e-6)  # metrics are float32 means
    assert acc.result.p_value == pytest.approx(0.7073, abs=1e-3)
    assert result.failures() == []


def test_parse_fail_knows_generation_metrics() -> None:
    assert parse_fail("gsm8k_exact_match_strict_match:-2pp").limit == pytest.approx(-0.02)
    assert parse_fail("mmlu_5shot_ece:+1pp").limit == pytest.approx(0.01)
    assert parse_fail("humaneval_pass_at_10:5pp").limit == pytest.approx(-0.05)  # higher is better: bad is down


def test_gate_with_no_common_cell_fails_instead_of_passing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # a CI gate pointed at the wrong folder (here: another noise setting) must not exit 0
    write_seeds(tmp_path / "base", [0.90, 0.905, 0.91])
    write_seeds(tmp_path / "new", [0.90, 0.905, 0.91], noise=0.4)
    code, out, err = run_cli(capsys, str(tmp_path / "base"), str(tmp_path / "new"), "--fail", "accuracy:-1pp")
    assert code == 2 and out == ""
    assert err.strip().splitlines() == ["error: --fail: no cell is present on both sides (1 baseline cell(s), "
                                        "1 new); nothing can be gated"]
    # without a gate the comparison still just says so
    code, out, err = run_cli(capsys, str(tmp_path / "base"), str(tmp_path / "new"))
    assert code == 0 and "no cell is present on both sides" in err
