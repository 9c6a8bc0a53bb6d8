"""Selecting a sweep's trial from stored records (bench.results.sweep): validation only, the tie rule, completeness.

Every expected choice below is worked out by hand from the records' figures, in the comments.
"""

from __future__ import annotations

from typing import Any

import pytest

from bench.results.record import make_record
from bench.results.sweep import find_sweeps, select_trials, setting_text, value_text

GRID = {"train.lr": [1e-3, 3e-3, 1e-2]}


def record(lr: float, seed: int, *, val: float | None, test: float, nll: float = 0.5, status: str = "success",
           marked: bool = True, epochs: int = 3, method: str = "lora", **extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "suite": "s", "task": {"name": "trec"}, "noise": {"kind": "symmetric", "rate": 0.2, "label": "sym-20%"},
        "model": {"name": "minilm"}, "method": {"id": method, "name": "lora", "config": {"r": 8}},
        "train": {"lr": lr, "epochs": epochs}, "seed": seed,
    }
    if marked:
        spec["sweep"] = {"grid": GRID, "trial": {"train.lr": lr}}
    metrics = {"accuracy": test, "val_nll": nll, **({"val_accuracy": val} if val is not None else {})}
    return make_record(run_id=f"{method[:3]}{lr:.0e}{seed}{epochs}".replace("-", "")[:12].ljust(12, "0"),
                       spec=spec, env={}, status=status, metrics=metrics if status == "success" else {},
                       started_at="2026-01-01T00:00:00Z", finished_at=f"2026-01-01T00:0{seed}:00Z", **extra)


def chosen(records: list[dict[str, Any]]) -> float | None:
    (sweep,) = find_sweeps(records)
    return None if sweep.selected is None else dict(sweep.selected.point)["train.lr"]


def test_the_best_mean_validation_accuracy_wins_and_test_accuracy_is_never_read() -> None:
    records = [
        # lr 1e-3: val (0.80 + 0.84) / 2 = 0.82; test 0.95 on both seeds, the best test of all
        record(1e-3, 0, val=0.80, test=0.95), record(1e-3, 1, val=0.84, test=0.95),
        # lr 3e-3: val (0.86 + 0.84) / 2 = 0.85, the best validation mean; test the worst
        record(3e-3, 0, val=0.86, test=0.40), record(3e-3, 1, val=0.84, test=0.40),
        # lr 1e-2: val (0.90 + 0.70) / 2 = 0.80, the best single seed, not the best mean
        record(1e-2, 0, val=0.90, test=0.90), record(1e-2, 1, val=0.70, test=0.90),
    ]
    assert chosen(records) == 3e-3
    for r in records:  # any test figures at all: the same choice
        r["metrics"]["accuracy"] = {1e-3: 0.1, 3e-3: 0.2, 1e-2: 0.3}[r["spec"]["train"]["lr"]]
    assert chosen(records) == 3e-3


def test_ties_go_to_the_lower_validation_nll_then_to_the_first_in_the_grid() -> None:
    # equal val means, (0.8 + 0.7) / 2 = (0.7 + 0.8) / 2 = 0.75, the seeds in the other order
    tie = [record(1e-3, 0, val=0.8, test=0.5, nll=0.60), record(1e-3, 1, val=0.7, test=0.5, nll=0.60),
           record(1e-2, 0, val=0.7, test=0.5, nll=0.50), record(1e-2, 1, val=0.8, test=0.5, nll=0.52)]
    assert chosen(tie) == 1e-2  # NLL means 0.60 vs 0.51
    for r in tie:
        r["metrics"]["val_nll"] = 0.5
    assert chosen(tie) == 1e-3  # NLL tied too: the first value the grid lists
    # 0.1 + 0.2 + 0.3 != 0.3 + 0.2 + 0.1 in floating point: fsum and rounding keep it a tie
    three = [record(lr, s, val=v, test=0.5) for lr, vals in ((1e-2, (0.1, 0.2, 0.3)), (3e-3, (0.3, 0.2, 0.1)))
             for s, v in enumerate(vals)]
    assert chosen(three) == 3e-3  # tied on val and NLL; 3e-3 comes before 1e-2 in the grid


def test_only_complete_trials_compete() -> None:
    records = [
        record(1e-3, 0, val=0.70, test=0.5), record(1e-3, 1, val=0.72, test=0.5),
        # lr 3e-3 has the best seed-0 figure but its seed 1 failed: out
        record(3e-3, 0, val=0.99, test=0.5), record(3e-3, 1, val=None, test=0.5, status="failed", error="boom"),
        # lr 1e-2 ran only seed 0 (seed 1 not stored yet): out
        record(1e-2, 0, val=0.98, test=0.5),
    ]
    (sweep,) = find_sweeps(records)
    assert sweep.seeds == (0, 1) and dict(sweep.selected.point)["train.lr"] == 1e-3  # type: ignore[union-attr]
    assert [sweep.complete(t) for t in sweep.trials] == [True, False, False]
    old = [record(1e-3, s, val=None, test=0.9) for s in (0, 1)] + [record(3e-3, s, val=0.5, test=0.1) for s in (0, 1)]
    assert chosen(old) == 3e-3  # lr 1e-3's runs lack val_accuracy, so it cannot be judged
    nothing = [record(1e-3, 0, val=0.7, test=0.5), record(3e-3, 1, val=0.7, test=0.5)]
    assert chosen(nothing) is None  # each trial misses a seed the other has
    shown, sweeps = select_trials(nothing)
    assert shown == [] and len(sweeps[0].trials) == 2


def test_runs_of_one_cell_outside_the_sweep_and_unmarked_runs_on_the_grid() -> None:
    records = [record(lr, s, val=v, test=0.5) for lr, v in ((1e-3, 0.6), (3e-3, 0.7)) for s in (0, 1)]
    reused = record(1e-2, 0, val=0.9, test=0.5, marked=False)  # stored before the sweep, same run: a trial's seed
    reused2 = record(1e-2, 1, val=0.9, test=0.5, marked=False)
    off_grid = record(5e-3, 0, val=0.99, test=0.99, marked=False)  # another lr: not on the grid
    other = record(3e-3, 0, val=0.99, test=0.99, epochs=1)  # another setting (epochs): not this sweep
    plain = record(5e-3, 0, val=0.1, test=0.1, marked=False, method="dora")  # no sweep at all
    shown, (sweep,) = select_trials([*records, reused, reused2, off_grid, other, plain])
    assert dict(sweep.selected.point)["train.lr"] == 1e-2  # type: ignore[union-attr]
    assert sweep.selected.records == (reused, reused2)  # type: ignore[union-attr]
    assert set(map(id, sweep.outside)) == {id(off_grid), id(other)}
    assert shown == [reused, reused2, plain]  # the selected trial and every record of no sweep, in order


def test_sweeps_are_per_cell_and_per_method() -> None:
    a = [record(lr, 0, val=v, test=0.5) for lr, v in ((1e-3, 0.9), (3e-3, 0.8))]
    b = [record(lr, 0, val=v, test=0.5, method="small-loss") for lr, v in ((1e-3, 0.8), (3e-3, 0.9))]
    sweeps = {s.cell[5]: s for s in find_sweeps([*a, *b])}
    assert sweeps["lora"].setting == "lr 1e-3" and sweeps["small-loss"].setting == "lr 3e-3"


@pytest.mark.parametrize(("value", "text"), [(0.003, "3e-3"), (0.01, "1e-2"), (2.5e-4, "2.5e-4"), (0.5, "0.5"),
                                             (1.0, "1"), (16, "16"), (True, "true"), ("pissa", "pissa"),
                                             (None, "null")])
def test_values_are_written_short(value: Any, text: str) -> None:
    assert value_text(value) == text


def test_setting_text_names_fields_and_keeps_whole_keys_apart() -> None:
    assert setting_text((("train.lr", 0.003), ("config.r", 16))) == "lr 3e-3, r 16"
    assert setting_text((("train.lr", 0.003), ("config.lr", 0.1))) == "train.lr 3e-3, config.lr 0.1"
