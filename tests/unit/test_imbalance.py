"""Tests for a task's ``imbalance:`` (bench.data.imbalance) and the suite's ``report: deltas``."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from bench.data.imbalance import IMBALANCE_SEED, ImbalanceSpec, imbalance_keep, minority_target
from bench.data.loaders import resolve_data_dir
from bench.data.task import load_task
from bench.errors import BenchError
from bench.run.runner import resolve_suite
from bench.spec.suite import TaskSpec, load_suite

NAMES = ["negative", "positive"]


def data_dir() -> Path:
    try:
        return resolve_data_dir(None)
    except BenchError:
        pytest.skip("no data directory")


def test_minority_target_rounds_half_up() -> None:
    # others' smallest count / ratio: 45/9 = 5; 49/9 = 5.44 -> 5; 50/4 = 12.5 -> 13
    assert minority_target(np.array([30, 45]), 0, 9) == 5
    assert minority_target(np.array([30, 49]), 0, 9) == 5
    assert minority_target(np.array([50, 20]), 1, 4) == 13
    assert minority_target(np.array([20, 50, 60]), 0, 2) == 25  # the smallest other class


def test_keep_holds_every_majority_item_and_a_seeded_share_of_the_minority() -> None:
    labels = np.array([0] * 20 + [1] * 50)
    keep, info = imbalance_keep(labels, NAMES, ImbalanceSpec(ratio=5, minority="negative"), "t")
    assert np.all(np.diff(keep) > 0)                                  # sorted positions, no repeats
    assert set(range(20, 70)) <= set(keep.tolist())                   # all 50 positives
    assert np.bincount(labels[keep]).tolist() == [10, 50]             # 50/5 negatives
    expected = np.sort(np.random.default_rng(IMBALANCE_SEED).permutation(np.arange(20))[:10])
    assert keep[:10].tolist() == expected.tolist()                    # the documented draw
    assert info == {"ratio": 5, "minority": 0, "minority_name": "negative", "seed": IMBALANCE_SEED,
                    "pool_counts": [20, 50], "train_counts": [10, 50]}
    by_index, _ = imbalance_keep(labels, NAMES, ImbalanceSpec(ratio=5, minority=0), "t")
    assert by_index.tolist() == keep.tolist()


@pytest.mark.parametrize(("spec", "message"), [
    (ImbalanceSpec(ratio=9, minority="neutral"), "t: imbalance minority 'neutral' is not a class name "
                                                 "(classes: 0=negative, 1=positive)"),
    (ImbalanceSpec(ratio=9, minority=2), "imbalance minority 2 is not a class index"),
    (ImbalanceSpec(ratio=101, minority=0), "imbalance ratio 101 keeps 0 items of class 'negative'"),
    (ImbalanceSpec(ratio=1, minority=0), "asks for 50 items of class 'negative', which has 20; use a larger ratio"),
])
def test_bad_imbalance_is_a_one_line_error(spec: ImbalanceSpec, message: str) -> None:
    labels = np.array([0] * 20 + [1] * 50)
    with pytest.raises(BenchError) as info:
        imbalance_keep(labels, NAMES, spec, "t")
    assert message in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("bad", [0.5, float("nan"), float("inf")])
def test_ratio_must_be_a_finite_number_of_at_least_one(bad: float) -> None:
    with pytest.raises(ValueError, match="imbalance ratio must be a number >= 1"):
        ImbalanceSpec(ratio=bad, minority=0)


def test_sst2_at_9_to_1_subsamples_train_only() -> None:
    data = data_dir()
    balanced = TaskSpec(name="sst2", dataset="sst2", max_train=1200, max_val=300)
    imbalanced = replace(balanced, imbalance=ImbalanceSpec(ratio=9, minority="negative"))
    a, b = load_task(balanced, data), load_task(imbalanced, data)
    # measured on ../shared/data/sst2: the capped 1,200 rows hold 590 negatives and 610 positives
    assert np.bincount(a.train.truth).tolist() == [590, 610]
    assert np.bincount(b.train.truth).tolist() == [68, 610]           # round(610 / 9) = 68
    assert b.imbalance is not None and b.imbalance["train_counts"] == [68, 610]
    assert set(b.train.ids.tolist()) <= set(a.train.ids.tolist())
    assert set(a.train.ids[a.train.truth == 1].tolist()) == set(b.train.ids[b.train.truth == 1].tolist())
    for split in ("val", "test"):                                     # as distributed, the same items
        assert getattr(a, split).ids.tolist() == getattr(b, split).ids.tolist()
    assert a.imbalance is None


def _suite(tmp_path: Path, task_extra: str = "", top_extra: str = "") -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(f"""\
name: imb
tasks:
  sst2: {{dataset: sst2, max_train: 1200, max_val: 300{task_extra}}}
methods:
  lora: {{}}
  pissa: {{method: lora, config: {{variant: pissa}}}}
  ba-lora: {{}}
{top_extra}""")
    return path


def test_minority_by_name_or_index_is_one_run_id_and_none_leaves_ids_alone(tmp_path: Path) -> None:
    data = data_dir()
    ids = {}
    for key, extra in (("none", ""), ("name", ", imbalance: {ratio: 9, minority: negative}"),
                       ("index", ", imbalance: {ratio: 9, minority: 0}"),
                       ("ratio", ", imbalance: {ratio: 8, minority: 0}")):
        cells = resolve_suite(load_suite(str(_suite(tmp_path, extra))), data)
        ids[key] = [c.run_id for c in cells]
        if key == "none":
            assert "imbalance" not in cells[0].spec["task"]
        else:
            assert cells[0].spec["task"]["imbalance"]["minority"] == 0
    assert ids["name"] == ids["index"]
    assert len({ids["none"][0], ids["name"][0], ids["ratio"][0]}) == 3


def test_an_unknown_minority_fails_when_the_suite_resolves(tmp_path: Path) -> None:
    path = _suite(tmp_path, ", imbalance: {ratio: 9, minority: neutral}")
    with pytest.raises(BenchError, match="imbalance minority 'neutral' is not a class name"):
        resolve_suite(load_suite(str(path)), data_dir())


@pytest.mark.parametrize(("extra", "message"), [
    ("report: {deltas: {ba-lora: [pisa]}}", "report.deltas: 'pisa' is not a method of this suite"),
    ("report: {deltas: {ba-lora: [ba-lora]}}", "a method is not compared with itself"),
    ("report: {deltas: {ba-lora: pissa}}", "expected a non-empty list of method ids"),
    ("report: {delta_metrics: [worst_class]}", "unknown metric 'worst_class'"),
    ("report: {delta: {}}", "report: unknown key 'delta'"),
])
def test_bad_report_deltas_are_one_line_errors(tmp_path: Path, extra: str, message: str) -> None:
    with pytest.raises(BenchError) as info:
        load_suite(str(_suite(tmp_path, top_extra=extra + "\n")))
    assert message in str(info.value) and "\n" not in str(info.value)


def test_report_deltas_parse(tmp_path: Path) -> None:
    suite = load_suite(str(_suite(tmp_path, top_extra="report: {deltas: {ba-lora: [pissa, lora]}}\n")))
    assert suite.report.deltas == {"ba-lora": ["pissa", "lora"]}
    assert suite.report.delta_metrics == ("accuracy", "macro_f1", "worst_class_acc")


def test_evals_on_a_classification_task_needs_kind_generation(tmp_path: Path) -> None:
    path = _suite(tmp_path, ", evals: [{task: crows_pairs_local}]")
    with pytest.raises(BenchError, match="tasks.sst2: evals: needs kind: generation"):
        load_suite(str(path))
