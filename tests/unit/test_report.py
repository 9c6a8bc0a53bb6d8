"""Tests for bench.report: Pareto front, leaderboard markdown (golden file) and plots.

Regenerate the golden leaderboard after an intended change with
``UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/unit/test_report.py`` and review the diff.
"""

from __future__ import annotations

import json
import math
import os
import random
from pathlib import Path
from typing import Any

import pytest

from bench.report import (
    PLOT_FILES,
    aggregate,
    leaderboard_markdown,
    pareto_front,
    plot_pareto,
    plot_reliability,
    write_report,
)
from bench.report.plots import _pool_reliability

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
NAN = math.nan


def load_fixtures() -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted((GOLDEN / "records").glob("*.json"))]


def make_record(run_id: str, *, method: str = "lora", seed: int = 0, task: str = "trec",
                status: str = "success", **metrics: Any) -> dict[str, Any]:
    efficiency = {k: metrics.pop(k) for k in list(metrics) if k.startswith(("peak", "train"))}
    return {
        "run_id": run_id, "status": status, "error": None if status == "success" else "boom",
        "spec": {"task": {"name": task}, "noise": {"kind": "symmetric", "rate": 0.2,
                                                    "label": "sym-20%"},
                 "model": {"name": "minilm"}, "method": {"id": method}, "seed": seed},
        "env": {"device": "cpu", "git_commit": "abc", "git_dirty": False,
                "packages": {"torch": "2.13.0"}},
        "metrics": metrics, "efficiency": efficiency,
    }


# --- pareto_front -----------------------------------------------------------------------

POINTS = [(1.0, 1.0), (2.0, 3.0), (3.0, 2.0), (2.0, 3.0), (NAN, 9.0), (0.5, 0.5), (4.0, NAN)]


@pytest.mark.parametrize(("directions", "expected"), [
    (("max", "max"), [1, 2]),     # (2,3) and (3,2); duplicate index 3 dropped
    (("min", "max"), [5, 0, 1]),  # (0.5,0.5), (1,1), (2,3)
    (("max", "min"), [5, 0, 2]),  # (1,1) survives: nothing has both x >= 1 and y <= 1
    (("min", "min"), [5]),        # (0.5,0.5) dominates everything
])
def test_pareto_front_directions(directions: tuple[str, str], expected: list[int]) -> None:
    assert pareto_front(POINTS, directions) == expected


def test_pareto_front_duplicates_keep_first_and_sort_by_x() -> None:
    assert pareto_front([(3.0, 1.0), (1.0, 3.0), (3.0, 1.0)], ("max", "max")) == [1, 0]
    assert pareto_front([(1.0, 1.0)] * 3, ("min", "min")) == [0]


def test_pareto_front_nan_and_empty() -> None:
    assert pareto_front([], ("max", "max")) == []
    assert pareto_front([(NAN, NAN), (NAN, 1.0)], ("max", "max")) == []
    # A NaN point never dominates: (1, 1) stays on the front despite (NaN, 5).
    assert pareto_front([(NAN, 5.0), (1.0, 1.0)], ("max", "max")) == [1]


def test_pareto_front_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="directions"):
        pareto_front([(1.0, 2.0)], ("up", "max"))
    with pytest.raises(ValueError, match="pair"):
        pareto_front([(1.0, 2.0, 3.0)], ("max", "max"))


def test_pareto_front_matches_brute_force() -> None:
    rng = random.Random(0)
    points = [(float(rng.randint(0, 5)), float(rng.randint(0, 5))) for _ in range(40)]
    front = set(pareto_front(points, ("max", "min")))
    for i, (x, y) in enumerate(points):
        dominated = any(a >= x and b <= y and (a, b) != (x, y) for a, b in points)
        first = points.index((x, y)) == i
        assert (i in front) == (not dominated and first)


# --- aggregation and markdown ------------------------------------------------------------

def test_mean_std_hand_check() -> None:
    records = [make_record("r1", accuracy=0.90, seed=0), make_record("r2", accuracy=0.92, seed=1)]
    row = aggregate(records).iloc[0]
    assert row["accuracy_mean"] == pytest.approx(0.91)
    assert row["accuracy_std"] == pytest.approx(math.sqrt(2 * 0.01**2), rel=1e-9)  # ddof=1
    assert row["n"] == 2 and row["seeds"] == (0, 1) and row["run_ids"] == ("r1", "r2")
    # 95 % CI: t_{0.975,1} = 12.7062, half-width = 12.7062 · 0.014142 / √2 = 0.127062
    assert row["accuracy_ci_low"] == pytest.approx(0.91 - 0.127062, abs=1e-6)
    assert row["accuracy_ci_high"] == pytest.approx(0.91 + 0.127062, abs=1e-6)
    assert "| 91.00 ± 1.41 | [78.29, 103.71] |" in leaderboard_markdown(records, suite="s")


def test_bootstrap_interval_option() -> None:
    records = [make_record(f"r{i}", accuracy=a, seed=i) for i, a in enumerate((0.90, 0.92, 0.94))]
    t_row = aggregate(records).iloc[0]
    boot = aggregate(records, interval="bootstrap", seed=1).iloc[0]
    assert t_row["accuracy_ci_high"] - 0.92 == pytest.approx(0.0496828, abs=1e-6)  # 4.302653 · 0.02 / √3
    assert 0.90 <= boot["accuracy_ci_low"] < 0.92 < boot["accuracy_ci_high"] <= 0.94
    assert boot["accuracy_ci_low"] == aggregate(records, interval="bootstrap", seed=1).iloc[0]["accuracy_ci_low"]


def test_single_seed_shows_mean_only_and_missing_is_dash() -> None:
    text = leaderboard_markdown([make_record("r1", accuracy=0.9, ece=0.05)], suite="s")
    row = next(line for line in text.splitlines() if line.startswith("| lora"))
    # accuracy, its CI (none with one seed), macro-F1 (missing), worst-class accuracy (missing), ECE, NLL (missing)
    assert "| 90.00 | – | – | – | 5.00 | – |" in row and "±" not in row and "n=1" in row
    assert math.isnan(aggregate([make_record("r1", accuracy=0.9)]).iloc[0]["accuracy_ci_low"])


def test_best_mean_is_bold_per_column() -> None:
    records = [make_record("a", method="lora", accuracy=0.9, ece=0.05),
               make_record("b", method="ia3", accuracy=0.8, ece=0.02)]
    rows = {line.split(" | ")[0]: line for line in leaderboard_markdown(records, suite="s")
            .splitlines() if line.startswith(("| lora", "| ia3"))}
    assert "**90.00**" in rows["| lora"] and "**2.00**" in rows["| ia3"]
    assert "**" not in rows["| lora"].replace("**90.00**", "")


def test_gpu_memory_preferred_when_present() -> None:
    records = [make_record("a", accuracy=0.9, peak_rss_gib=3.0, peak_gpu_allocated_gib=1.25)]
    text = leaderboard_markdown(records, suite="s")
    assert "peak GPU mem (GiB)" in text and "| 1.25 |" in text and "3.00" not in text


def test_leaderboard_matches_golden() -> None:
    text = leaderboard_markdown(load_fixtures(), suite="fixture-suite")
    golden = GOLDEN / "leaderboard.md"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(text, encoding="utf-8")
    assert text == golden.read_text(encoding="utf-8")


def test_leaderboard_content_from_fixtures() -> None:
    text = leaderboard_markdown(load_fixtures(), suite="fixture-suite")
    assert text.startswith("<!-- generated by bench report; do not edit -->\n")
    assert "# Leaderboard: fixture-suite" in text
    assert "generated from 8 runs; run_ids: 0a1b2c3d4e5f, 1b2c3d4e5f6a, a1b2c3d4e5f6" in text
    assert "**91.00 ± 1.41** | [78.29, 103.71] |" in text  # trec/sym-20% lora: accuracy 0.90 and 0.92
    assert "b2c3d4e5f6a1†" in text  # the dirty-tree run is marked
    assert text.index("### sst2 · clean") < text.index("### trec · clean") \
        < text.index("### trec · sym-20%")
    assert "## Noisy-label detection" in text and "| 0.842 |" in text
    assert "| sst2 | clean | lora-coteach | 0 | failed | 0a1b2c3d4e5f | RuntimeError: CUDA out" \
        in text and "Traceback" not in text
    assert text.rstrip().splitlines()[-1].startswith("**Environment:** cpu · torch 2.13.0")


def test_leaderboard_is_order_independent() -> None:
    records = load_fixtures()
    shuffled = records[::-1]
    random.Random(1).shuffle(shuffled)
    assert leaderboard_markdown(shuffled, suite="x") == leaderboard_markdown(records, suite="x")


def test_no_detection_section_without_detection_metrics() -> None:
    text = leaderboard_markdown([make_record("a", accuracy=0.9)], suite="s")
    assert "Noisy-label detection" not in text and "## Failed runs\n\nNone." in text


def test_empty_leaderboard_says_no_runs() -> None:
    text = leaderboard_markdown([], suite="empty")
    assert "generated from 0 runs" in text and "No runs recorded" in text


# --- plots and write_report --------------------------------------------------------------

def test_write_report_writes_leaderboard_and_pngs(tmp_path: Path) -> None:
    # One task × noise setting keeps each figure to a single panel (matplotlib is the slow part).
    records = [r for r in load_fixtures() if r["spec"]["task"]["name"] == "trec"
               and r["spec"]["noise"]["kind"] == "symmetric"]
    paths = write_report(records, tmp_path / "out", suite="fixture-suite")
    # classification runs: the four classification plots (the generation and stage plots have no data)
    assert [p.name for p in paths] == ["leaderboard.md", *PLOT_FILES[:4]]
    for path in paths:
        assert path.is_file() and path.parent == tmp_path / "out"
    for path in paths[1:]:
        assert path.read_bytes()[:8] == PNG_MAGIC
    text = paths[0].read_text(encoding="utf-8")
    assert "(pareto_accuracy_vs_trainable_params.png)" in text and "(reliability.png)" in text


def test_plot_pareto_all_fixture_settings(tmp_path: Path) -> None:
    out = plot_pareto(load_fixtures(), tmp_path / "p.png", x="efficiency.train_samples_per_s",
                      x_direction="max", log_x=True)
    assert out == tmp_path / "p.png" and out.read_bytes()[:8] == PNG_MAGIC


def test_write_report_empty_records(tmp_path: Path) -> None:
    (tmp_path / "reliability.png").write_bytes(b"stale")
    paths = write_report([], tmp_path, suite="empty")
    assert paths == [tmp_path / "leaderboard.md"]
    assert "No runs recorded" in paths[0].read_text(encoding="utf-8")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["leaderboard.md"]  # stale plot gone


def test_plots_skip_cleanly_without_fields(tmp_path: Path) -> None:
    records = [make_record("a", accuracy=0.9), make_record("b", status="failed")]
    assert plot_pareto(records, tmp_path / "p.png", x="efficiency.trainable_params") is None
    assert plot_reliability(records, tmp_path / "r.png") is None
    assert list(tmp_path.iterdir()) == []


def test_reliability_pooling_is_count_weighted() -> None:
    bins = {"lower": [0.0, 0.5], "upper": [0.5, 1.0]}
    records = [
        make_record("a", reliability={**bins, "count": [1, 3], "accuracy": [0.0, 1.0],
                                      "confidence": [0.4, 0.8]}),
        make_record("b", reliability={**bins, "count": [0, 1], "accuracy": [None, 0.0],
                                      "confidence": [None, 0.6]}),
        make_record("c", reliability={"lower": [0.0], "upper": [1.0], "count": [5],
                                      "accuracy": [1.0], "confidence": [1.0]}),  # other edges
    ]
    pooled = _pool_reliability(records)["lora"]
    acc, conf = pooled.rates()
    assert pooled.runs == 2 and pooled.count.tolist() == [1, 4]
    assert acc.tolist() == pytest.approx([0.0, 0.75])
    assert conf.tolist() == pytest.approx([0.4, 0.75])
    assert pooled.ece() == pytest.approx((1 * 0.4 + 4 * 0.0) / 5)


def test_variant_rows_are_in_the_leaderboard_but_not_on_plots(tmp_path: Path, monkeypatch) -> None:
    import bench.report as report
    from bench.results.query import expand_variants

    plotted: list = []
    monkeypatch.setattr(report, "_plots", lambda recs, out: plotted.extend(recs) or [])

    records = [json.loads(p.read_text()) for p in sorted((GOLDEN / "records").glob("*.json"))]
    ok = next(r for r in records if r["status"] == "success")
    ok = {**ok, "metrics": {**ok["metrics"], "variants": {"ensemble_n2": {**ok["metrics"], "accuracy": 0.5}}}}
    expanded = expand_variants([ok])
    assert [r.get("variant") for r in expanded] == [None, "ensemble_n2"]
    assert expanded[1]["spec"]["method"]["id"] == f"{ok['spec']['method']['id']} (ensemble_n2)"
    write_report(expanded, tmp_path, suite="s")
    assert "(ensemble_n2)" in (tmp_path / "leaderboard.md").read_text()
    assert plotted == [ok]


def test_api_summarize_reads_the_store(tmp_path: Path) -> None:
    from bench.api import summarize
    from bench.errors import BenchError
    from bench.results.store import Store

    store = Store(tmp_path)
    for i, acc in enumerate((0.90, 0.92, 0.94)):
        record = make_record(f"r{i}", accuracy=acc, seed=i)
        record.update(schema_version=1, spec={**record["spec"], "suite": "s"})
        store.write(record)
    frame = summarize("s", results=tmp_path)
    row = frame.iloc[0]
    assert (row["method"], row["n"], row["accuracy_mean"]) == ("lora", 3, pytest.approx(0.92))
    assert row["accuracy_ci_high"] - row["accuracy_mean"] == pytest.approx(0.0496828, abs=1e-6)
    with pytest.raises(BenchError, match="no records for suite 'other'"):
        summarize("other", results=tmp_path)


def test_real_noise_tasks_are_not_labelled_clean() -> None:
    from bench.results.query import cell_of

    spec = {"task": {"name": "hausa", "truth_field": "clean_label"}, "noise": {"kind": "none", "rate": 0.0,
            "label": "clean"}, "model": {"name": "minilm"}, "method": {"id": "lora"}}
    assert cell_of({"spec": spec})[1] == "real noise"
    spec["task"] = {"name": "trec"}
    assert cell_of({"spec": spec})[1] == "clean"


def test_collapsed_runs_are_listed_and_stay_in_the_means() -> None:
    records = load_fixtures()
    ok = next(r for r in records if r["status"] == "success")
    flagged = json.loads(json.dumps(ok))
    flagged["diagnostics"]["collapsed"] = "predicts 'LOC' for 97.0 % of the test items (gold share 16.2 %)"
    text = leaderboard_markdown([flagged], suite="s")
    assert "## Collapsed runs" in text
    assert f"| {flagged['run_id']} | predicts 'LOC' for 97.0 % of the test items" in text
    assert aggregate([flagged])["n"].tolist() == [1]
    assert "## Collapsed runs" not in leaderboard_markdown([ok], suite="s")


def test_diverged_runs_are_listed() -> None:
    from bench.run.cell import diverged_message
    from bench.sdk.loop import TrainStats

    # issue 19 item 11: lr 1e9 ended at loss 3.7e10 and was stored as an ordinary success
    assert diverged_message([TrainStats(epoch_losses=[0.7, 2.1e3, 3.7e10])]) == (
        "training diverged: last epoch's mean loss 3.7e+10 is 5.29e+10× the first epoch's (0.7)")
    assert diverged_message([TrainStats(epoch_losses=[0.7, 69.0])]) is None           # 98.6×: not flagged
    assert diverged_message([TrainStats(epoch_losses=[0.7])]) is None                 # one epoch: nothing to compare
    two = [TrainStats(epoch_losses=[0.7, 0.1]), TrainStats(epoch_losses=[1.0, 101.0])]
    assert diverged_message(two).startswith("training loop 2 of 2 diverged")          # type: ignore[union-attr]
    ok = next(r for r in load_fixtures() if r["status"] == "success")
    flagged = json.loads(json.dumps(ok))
    flagged["diagnostics"]["diverged"] = "training diverged: last epoch's mean loss 3.7e+10 is ..."
    text = leaderboard_markdown([flagged], suite="s")
    assert "## Diverged runs" in text and f"| {flagged['run_id']} | training diverged" in text
    assert "## Diverged runs" not in leaderboard_markdown([ok], suite="s")


def test_runs_of_different_settings_in_one_cell_are_not_averaged_as_seeds(tmp_path: Path) -> None:
    from bench.results.query import label_settings

    base = make_record("b0", seed=0, accuracy=0.30)
    sft = make_record("s0", seed=0, accuracy=0.50)
    sft1 = make_record("s1", seed=1, accuracy=0.60)
    base["spec"]["train"] = {"epochs": 0, "lr": 2e-4}
    for record in (sft, sft1):
        record["spec"]["train"] = {"epochs": 1, "lr": 2e-4}
    labelled = label_settings([base, sft, sft1])
    assert [r["spec"]["method"]["id"] for r in labelled] == ["lora (train.epochs=0)", "lora (train.epochs=1)",
                                                           "lora (train.epochs=1)"]
    assert base["spec"]["method"]["id"] == "lora"  # the input records are left as they were
    board = leaderboard_markdown(labelled, suite="s")
    assert "| lora (train.epochs=0) | 30.00 |" in board and "| lora (train.epochs=1) | **55.00 ± 7.07** |" in board
    # seeds of one setting keep the plain method id
    assert [r["spec"]["method"]["id"] for r in label_settings([sft, sft1])] == ["lora", "lora"]


def test_unfinished_runs_are_named_failed_or_canceled() -> None:
    from bench.report.tables import unfinished_text

    assert unfinished_text({"n_failed": 0, "n_canceled": 0}) == ""
    assert unfinished_text({"n_failed": 1, "n_canceled": 1}) == " (+1 canceled)"
    assert unfinished_text({"n_failed": 3, "n_canceled": 1}) == " (+2 failed, +1 canceled)"
