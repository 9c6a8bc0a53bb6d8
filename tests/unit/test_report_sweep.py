"""A sweep on the leaderboard (bench.report.sweep) and in ``bench compare``: the selected setting beside the test
figures, every trial in its own table, and compare at the selected trial of each side."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench import api
from bench.report.markdown import aggregate, leaderboard_markdown
from bench.report.sweep import label_selected
from bench.results.query import expand_variants, label_settings
from bench.results.store import Store
from bench.results.sweep import select_trials
from tests.unit.test_sweep_select import record


def records() -> list[dict[str, Any]]:
    return [
        # lr 1e-3: val 0.82 (the best test, 94 %); lr 3e-3: val 0.85, selected; lr 1e-2: seed 1 failed
        record(1e-3, 0, val=0.80, test=0.95, nll=0.61), record(1e-3, 1, val=0.84, test=0.93, nll=0.59),
        record(3e-3, 0, val=0.86, test=0.40, nll=0.50), record(3e-3, 1, val=0.84, test=0.42, nll=0.52),
        record(1e-2, 0, val=0.90, test=0.90), record(1e-2, 1, val=None, test=0.0, status="failed", error="loss is nan"),
        record(5e-3, 0, val=0.5, test=0.70, marked=False, method="dora"),
        record(5e-3, 1, val=0.5, test=0.72, marked=False, method="dora"),
    ]


def leaderboard(recs: list[dict[str, Any]]) -> str:
    shown, sweeps = select_trials(recs)
    return leaderboard_markdown(expand_variants(label_settings(shown)), suite="s", sweeps=sweeps)


def test_the_leaderboard_names_the_selected_setting_and_lists_every_trial() -> None:
    text = leaderboard(records())
    results = text[text.index("## Results"):text.index("## Sweeps")].splitlines()
    # the Results table: the selected trial only, its test figures (41 % = (0.40 + 0.42) / 2) beside its setting
    assert "| lora (lr 3e-3) | 41.00 ± 1.41 | [28.29, 53.71] |" in text
    assert [line.split(" |")[0] for line in results if line.startswith("| lora")] == ["| lora (lr 3e-3)"]
    # every run is counted in the header, the unselected trials' too
    assert "generated from 8 runs; run_ids: dor5e0303000, dor5e0313000, lor1e0203000, lor1e0213000, " in text
    sweep = text[text.index("## Sweeps"):text.index("## Failed runs")]
    assert "Test accuracy is listed here for reference only: it never enters the choice." in sweep
    assert "gold labels (a clean validation set" in sweep
    assert ("| method | setting | val accuracy (%) ↑ | val NLL ↓ | test accuracy (%), not used for selection | seeds "
            "| note | run ids |") in sweep
    # val (0.80 + 0.84) / 2 = 82.00, sample std √(2 · 0.02²) = 2.83; NLL 0.600; test 94.00 ± 1.41
    assert "| lora | lr 1e-3 | 82.00 ± 2.83 | 0.600 ± 0.014 | 94.00 ± 1.41 | n=2 | – | lor1e0303000, lor1e0313000 |" \
        in sweep
    assert "| lora | lr 3e-3 | 85.00 ± 1.41 | 0.510 ± 0.014 | 41.00 ± 1.41 | n=2 | **selected** |" in sweep
    assert ("| lora | lr 1e-2 | 90.00 | 0.500 | 90.00 | n=1 (+1 failed) | incomplete (1 of 2 seeds without a "
            "success) | lor1e0203000 |") in sweep
    assert "| trec | sym-20% | lora | 1 | failed | lor1e0213000 | loss is nan |" in text  # a trial's failure is listed
    assert "| dora | **71.00 ± 1.41** |" in text  # a method without a sweep: as before


def test_without_a_sweep_the_leaderboard_is_as_before() -> None:
    plain = [r for r in records() if r["spec"]["method"]["id"] == "dora"]
    assert leaderboard(plain) == leaderboard_markdown(plain, suite="s")
    assert "## Sweeps" not in leaderboard(plain)


def test_variant_rows_of_a_selected_trial_carry_its_setting() -> None:
    recs = records()
    for r in recs:
        r["metrics"]["variants"] = {"ensemble_n8": {"accuracy": 0.5}}
    shown, sweeps = select_trials(recs)
    methods = list(label_selected(aggregate(expand_variants(label_settings(shown))), sweeps)["method"])
    assert methods == ["dora", "dora (ensemble_n8)", "lora (lr 3e-3)", "lora (lr 3e-3) (ensemble_n8)"]


def test_a_sweep_without_a_complete_trial_is_only_in_its_section() -> None:
    recs = [r for r in records() if r["spec"]["train"]["lr"] == 1e-2]  # seed 1 failed: nothing complete
    text = leaderboard(recs)
    assert "## Results" not in text and "| lora | lr 1e-2 |" in text and "lor1e0213000 | loss is nan" in text


def write(root: Path, recs: list[dict[str, Any]]) -> Path:
    store = Store(root)
    for r in recs:
        store.write(r)
    return root


def test_compare_and_summarize_use_the_selected_trial(tmp_path: Path) -> None:
    base = write(tmp_path / "base", records())
    new_records = records()
    for r in new_records:  # the new side prefers lr 1e-3 on validation (0.99), with test 0.95 / 0.93
        if r["spec"]["train"]["lr"] == 1e-3 and r["status"] == "success":
            r["metrics"]["val_accuracy"] = 0.99
    new = write(tmp_path / "new", new_records)
    comparison = api.compare(base, new)
    (row,) = [r for r in comparison.rows if r.cell[3] == "lora" and r.metric == "accuracy"]
    assert (row.n_baseline, row.n_new) == (2, 2)
    assert abs(row.baseline - 0.41) < 1e-12 and abs(row.new - 0.94) < 1e-12  # lr 3e-3's test vs lr 1e-3's
    assert any("baseline: swept methods are compared at the trial their sweep selected on validation accuracy: "
               "trec · sym-20% · lora at lr 3e-3" in w for w in comparison.warnings)
    assert any("new: " in w and "lora at lr 1e-3" in w for w in comparison.warnings)
    frame = api.summarize("s", results=base)
    assert list(frame["method"]) == ["dora", "lora (lr 3e-3)"]


def test_a_reused_run_without_the_sweep_block_is_a_seed_of_its_trial_not_another_setting() -> None:
    recs = records()[:4]  # lr 1e-3 and 3e-3, two seeds each; 3e-3 selected (val 0.85)
    recs[2] = record(3e-3, 0, val=0.86, test=0.40, nll=0.50, marked=False)  # stored before the suite swept
    text = leaderboard(recs)
    assert "| lora (lr 3e-3) | 41.00 ± 1.41 | [28.29, 53.71] |" in text  # one row, both seeds
    assert "| lora | lr 3e-3 | 85.00 ± 1.41 | 0.510 ± 0.014 | 41.00 ± 1.41 | n=2 | **selected** |" in text
