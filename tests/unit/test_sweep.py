"""``sweep:`` in a suite (bench.spec.sweep): the grid's trials, their values, precedence with --set, identity."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.errors import BenchError
from bench.run.runner import resolve_suite
from bench.spec.cells import plan
from bench.spec.identity import run_id
from bench.spec.suite import load_suite
from tests.run_helpers import toy_dataset

SUITE = """\
name: swept
model: random:tiny-bert
train: {epochs: 1, lr: 5.0e-3, batch_size: 8}
tasks: {toy: {dataset: toyds}}
seeds: [0, 1]
methods:
  lora:
    config: {alpha: 4}
    sweep: {train.lr: [1.0e-3, 1e-2], config.r: [2, 4, 8]}
  plain: {method: lora, config: {r: 2, alpha: 4}}
"""


def write(tmp_path: Path, text: str = SUITE) -> Path:
    path = tmp_path / "swept.yaml"
    path.write_text(text)
    return path


def grid(path: Path, *overrides: str) -> dict[str, list[tuple[float, int, int]]]:
    """method id -> (lr, r, seed) of each of its cells, in plan order."""
    out: dict[str, list[tuple[float, int, int]]] = {}
    for cell in plan(load_suite(str(path), overrides)):
        out.setdefault(cell.method.id, []).append((cell.train.lr, cell.method.config.get("r", 8), cell.seed))
    return out


def test_the_grid_is_the_product_of_the_lists_in_their_order(tmp_path: Path) -> None:
    cells = grid(write(tmp_path))
    # 2 lrs x 3 ranks = 6 trials per seed, 2 seeds: 12 cells; the first key varies slowest
    assert cells["lora"] == [(lr, r, seed) for seed in (0, 1) for lr in (1e-3, 1e-2) for r in (2, 4, 8)]
    assert cells["plain"] == [(5e-3, 2, 0), (5e-3, 2, 1)]  # a method without a sweep: one cell per seed
    lora = load_suite(str(write(tmp_path))).methods[0]
    assert lora.sweep == {"train.lr": [1e-3, 1e-2], "config.r": [2, 4, 8]}  # "1e-2" (YAML 1.1: a string) as a float


def test_a_trial_keeps_the_rest_of_its_entry_and_says_where_it_sits(tmp_path: Path) -> None:
    cells = [c for c in plan(load_suite(str(write(tmp_path)))) if c.method.id == "lora"]
    assert {c.method.config["alpha"] for c in cells} == {4}
    assert cells[1].trial == (("train.lr", 1e-3), ("config.r", 4))
    assert cells[1].label == "toy clean lora[lr=0.001,r=4] seed0"
    assert cells[1].train.epochs == 1 and cells[1].train.batch_size == 8


def test_nested_form_and_suite_wide_sweep(tmp_path: Path) -> None:
    nested = SUITE.replace("sweep: {train.lr: [1.0e-3, 1e-2], config.r: [2, 4, 8]}",
                           "sweep: {train: {lr: [1.0e-3, 1e-2]}, config: {r: [2, 4, 8]}}")
    assert grid(write(tmp_path, nested)) == grid(write(tmp_path))
    wide = """\
model: random:tiny-bert
tasks: {toy: {dataset: toyds}}
sweep: {train.lr: [1.0e-3, 3.0e-3]}
methods:
  lora: {}
  small-loss: {}
  fixed: {method: lora, sweep: {}}
  own: {method: lora, sweep: {train.epochs: [1, 2]}}
"""
    cells = grid(write(tmp_path, wide))
    assert [lr for lr, _, _ in cells["lora"]] == [lr for lr, _, _ in cells["small-loss"]] == [1e-3, 3e-3]
    assert [lr for lr, _, _ in cells["fixed"]] == [5e-4]  # sweep: {} opts out; the default lr
    assert len(cells["own"]) == 2 and {lr for lr, _, _ in cells["own"]} == {5e-4}  # its own sweep replaces the suite's


def test_set_changes_a_sweeps_values_and_other_keys_but_cannot_fix_a_swept_key(tmp_path: Path) -> None:
    path = write(tmp_path)
    # precedence as everywhere: --set outranks the entry, here the sweep's values
    cells = grid(path, "methods.lora.sweep.train.lr=[2.0e-3]")
    assert [(lr, r) for lr, r, seed in cells["lora"] if seed == 0] == [(2e-3, 2), (2e-3, 4), (2e-3, 8)]
    assert {c.train.epochs for c in plan(load_suite(str(path), ("train.epochs=2",)))} == {2}  # reaches every trial
    for assignment in ("train.lr=1.0e-3", "methods.lora.train.lr=1.0e-3", "methods.lora.config.r=4"):
        with pytest.raises(BenchError, match=r"methods.lora sweeps (train.lr|config.r); set the sweep's values"):
            load_suite(str(path), (assignment,))
    assert grid(path, "methods.plain.train.lr=1.0e-3")["plain"][0][0] == 1e-3  # an unswept entry: as before


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return toy_dataset(tmp_path_factory.mktemp("sweepdata"), 24)


def test_every_trial_has_its_own_run_id_and_spec(tmp_path: Path, data: Path) -> None:
    cells = resolve_suite(load_suite(str(write(tmp_path))), data)
    trials = [c for c in cells if c.cell.method.id == "lora"]
    assert len({c.run_id for c in trials}) == len(trials) == 12
    first = trials[1]  # seed 0, lr 1e-3, r 4
    assert first.spec["train"]["lr"] == 1e-3 and first.spec["method"]["config"]["r"] == 4
    assert first.spec["method"]["id"] == "lora"  # trials group under their method id (one store folder)
    assert first.spec["sweep"] == {"grid": {"train.lr": [1e-3, 1e-2], "config.r": [2, 4, 8]},
                                   "trial": {"train.lr": 1e-3, "config.r": 4}}
    assert all("sweep" not in c.spec for c in cells if c.cell.method.id == "plain")


def test_a_trial_is_the_run_of_the_cell_that_fixes_its_values(tmp_path: Path, data: Path) -> None:
    """The sweep block is not part of the identity: a trial's run id is the plain cell's at those values."""
    swept = resolve_suite(load_suite(str(write(tmp_path))), data)
    fixed = resolve_suite(load_suite(str(write(tmp_path, SUITE.split("methods:")[0] + """\
methods:
  lora: {config: {r: 4, alpha: 4}, train: {lr: 1.0e-3}}
"""))), data)
    (plain,) = [c for c in fixed if c.cell.method.id == "lora" and c.cell.seed == 0]
    (trial,) = [c for c in swept if c.spec.get("sweep", {}).get("trial") == {"train.lr": 1e-3, "config.r": 4}
                and c.cell.seed == 0]
    assert trial.run_id == plain.run_id == run_id(plain.spec)
    # and a suite without a sweep resolves exactly as before sweeps existed: no sweep key anywhere
    assert all("sweep" not in c.spec for c in fixed)
