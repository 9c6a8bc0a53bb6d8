"""Tests for bench.data.loaders and bench.data.task on small folders in the shared layout."""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import bench.data.loaders as loaders
from bench.data.loaders import (
    column,
    data_dir_candidates,
    file_digest,
    find_dataset,
    read_labels,
    read_split,
    resolve_data_dir,
    split_file,
)
from bench.data.task import load_task
from bench.errors import BenchError
from bench.spec.suite import TaskSpec

LABELS = ["neg", "pos", "neutral"]


def rows(n: int, *, offset: int = 0, k: int = 3) -> list[dict[str, Any]]:
    return [{"text": f"text {offset + i}", "label": (offset + i) % k} for i in range(n)]


def write_jsonl(path: Path, items: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in items))
    return path


def make_dataset(root: Path, name: str, *, train: list[dict[str, Any]] | None = None,
                 test: list[dict[str, Any]] | None = None,
                 validation: list[dict[str, Any]] | None = None,
                 labels: list[str] = LABELS) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "labels.json").write_text(json.dumps(labels))
    if train is not None:
        write_jsonl(folder / "train.jsonl", train)
    write_jsonl(folder / "test.jsonl", test if test is not None else rows(6, offset=1000))
    if validation is not None:
        write_jsonl(folder / "validation.jsonl", validation)
    return folder


def task_error(spec: TaskSpec, root: Path) -> str:
    with pytest.raises(BenchError) as info:
        load_task(spec, root)
    message = str(info.value)
    assert "\n" not in message
    return message


# --- resolve_data_dir --------------------------------------------------------------------

@pytest.fixture
def places(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """A working directory and a fake repository, nothing existing yet."""
    work = tmp_path / "work" / "cwd"
    work.mkdir(parents=True)
    repo = tmp_path / "elsewhere" / "repo"
    monkeypatch.chdir(work)
    monkeypatch.setattr(loaders, "_REPO", repo)
    monkeypatch.delenv(loaders.DATA_ENV, raising=False)
    return {
        "explicit": tmp_path / "explicit",
        "env": tmp_path / "env",
        "cwd": work / "data",
        "sibling": tmp_path / "work" / "shared" / "data",
        "repo": tmp_path / "elsewhere" / "shared" / "data",
    }


def test_resolve_data_dir_order(places: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    for path in places.values():
        path.mkdir(parents=True)
    monkeypatch.setenv(loaders.DATA_ENV, str(places["env"]))
    assert resolve_data_dir(places["explicit"]) == places["explicit"]
    assert resolve_data_dir(str(places["explicit"])) == places["explicit"]
    assert resolve_data_dir() == places["env"]
    monkeypatch.delenv(loaders.DATA_ENV)
    assert resolve_data_dir().resolve() == places["cwd"].resolve()
    places["cwd"].rmdir()
    assert resolve_data_dir().resolve() == places["sibling"].resolve()
    places["sibling"].rmdir()
    assert resolve_data_dir() == places["repo"]


def test_missing_env_dir_falls_through(places: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    places["repo"].mkdir(parents=True)
    monkeypatch.setenv(loaders.DATA_ENV, str(places["env"]))  # does not exist
    assert resolve_data_dir() == places["repo"]


def test_explicit_dir_does_not_fall_back(places: dict[str, Path]) -> None:
    places["repo"].mkdir(parents=True)
    with pytest.raises(BenchError) as info:
        resolve_data_dir(places["explicit"])
    assert f"looked in: {places['explicit']})" in str(info.value)
    assert str(places["repo"]) not in str(info.value)


def test_error_lists_every_place_looked(places: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(loaders.DATA_ENV, str(places["env"]))
    assert [p.resolve() for p in data_dir_candidates()] == [
        places[k].resolve() for k in ("env", "cwd", "sibling", "repo")]
    with pytest.raises(BenchError) as info:
        resolve_data_dir()
    message = str(info.value)
    assert message.startswith("no data directory found (looked in: ")
    positions = [message.find(f"{places[k]}") for k in ("env", "cwd", "sibling", "repo")]
    assert all(p > 0 for p in positions) and positions == sorted(positions)
    assert "--data-dir" in message and loaders.DATA_ENV in message


# --- datasets and splits -----------------------------------------------------------------

def test_unknown_dataset_did_you_mean(tmp_path: Path) -> None:
    make_dataset(tmp_path, "trec", train=rows(4))
    make_dataset(tmp_path, "sst2", train=rows(4))
    (tmp_path / ".hidden").mkdir()
    assert loaders.dataset_names(tmp_path) == ["sst2", "trec"]
    with pytest.raises(BenchError) as info:
        find_dataset("terc", tmp_path)
    assert str(info.value).startswith(f"dataset 'terc' not found in {tmp_path} (did you mean 'trec'?)")
    assert find_dataset("trec", tmp_path) == tmp_path / "trec"
    assert find_dataset(str(tmp_path / "sst2"), tmp_path / "elsewhere") == tmp_path / "sst2"
    with pytest.raises(BenchError, match="does not exist"):
        find_dataset(str(tmp_path / "nope"), tmp_path)


def test_read_split_and_gzip(tmp_path: Path) -> None:
    folder = make_dataset(tmp_path, "d", train=rows(3))
    with gzip.open(folder / "big.jsonl.gz", "wt", encoding="utf-8") as handle:
        handle.write("".join(json.dumps(r) + "\n" for r in rows(4, offset=10)))
        handle.write("\n")  # blank lines are skipped
    assert split_file(folder, "big") == folder / "big.jsonl.gz"
    assert read_split(folder, "big") == rows(4, offset=10)
    assert read_split(folder, "train") == rows(3)


def test_jsonl_preferred_over_gz(tmp_path: Path) -> None:
    folder = make_dataset(tmp_path, "d", train=rows(3))
    with gzip.open(folder / "train.jsonl.gz", "wt") as handle:
        handle.write(json.dumps({"text": "gz", "label": 0}) + "\n")
    assert split_file(folder, "train") == folder / "train.jsonl"


def test_missing_split_lists_files(tmp_path: Path) -> None:
    folder = make_dataset(tmp_path, "d", train=rows(3))
    with pytest.raises(BenchError) as info:
        read_split(folder, "validation")
    assert str(info.value) == f"{folder}: no split 'validation' (files: test.jsonl, train.jsonl)"


def test_empty_split(tmp_path: Path) -> None:
    folder = make_dataset(tmp_path, "d", train=[])
    (folder / "train.jsonl").write_text("\n  \n")
    with pytest.raises(BenchError, match=r"train\.jsonl: split 'train' is empty"):
        read_split(folder, "train")
    assert "is empty" in task_error(TaskSpec(dataset="d"), tmp_path)


def test_bad_json_line(tmp_path: Path) -> None:
    folder = make_dataset(tmp_path, "d", train=rows(2))
    with open(folder / "train.jsonl", "a") as handle:
        handle.write("{not json\n")
    with pytest.raises(BenchError, match=r"train\.jsonl:3: not valid JSON"):
        read_split(folder, "train")


def test_labels_json(tmp_path: Path) -> None:
    folder = make_dataset(tmp_path, "d", train=rows(2))
    assert read_labels(folder) == LABELS
    (folder / "labels.json").write_text('["only"]')
    with pytest.raises(BenchError, match="at least two class names"):
        read_labels(folder)
    (folder / "labels.json").unlink()
    with pytest.raises(BenchError, match="no labels.json"):
        read_labels(folder)


def test_column_missing_field() -> None:
    with pytest.raises(BenchError) as info:
        column([{"text": "a"}, {"txt": "b", "label": 0}], "text", "d/train.jsonl")
    assert str(info.value) == "d/train.jsonl:2: no field 'text' (fields: label, txt)"


def test_label_out_of_range_names_file_and_line(tmp_path: Path) -> None:
    bad = rows(5)
    bad[3]["label"] = 3  # K = 3
    make_dataset(tmp_path, "d", train=bad)
    message = task_error(TaskSpec(dataset="d"), tmp_path)
    assert f"{tmp_path / 'd' / 'train.jsonl'}:4: label 3 out of range [0, 3)" in message


@pytest.mark.parametrize("label", [-1, 1.0, "1", True, None])
def test_label_must_be_an_int_in_range(tmp_path: Path, label: Any) -> None:
    bad = rows(3)
    bad[1]["label"] = label
    make_dataset(tmp_path, "d", train=bad)
    assert f"train.jsonl:2: label {label!r} out of range" in task_error(TaskSpec(dataset="d"), tmp_path)


def test_test_split_labels_are_checked_too(tmp_path: Path) -> None:
    test = rows(4, offset=1000)
    test[0]["label"] = 9
    make_dataset(tmp_path, "d", train=rows(10), test=test)
    assert "test.jsonl:1: label 9 out of range" in task_error(TaskSpec(dataset="d"), tmp_path)


def test_missing_field_in_task(tmp_path: Path) -> None:
    train = rows(3)
    del train[2]["text"]
    make_dataset(tmp_path, "d", train=train)
    message = task_error(TaskSpec(dataset="d"), tmp_path)
    assert "train.jsonl:3: no field 'text'" in message
    make_dataset(tmp_path, "e", train=rows(3))
    assert "no field 'clean_label'" in task_error(TaskSpec(dataset="e", truth_field="clean_label"),
                                                 tmp_path)


@pytest.mark.parametrize("text", ["", "   ", None, 5])
def test_empty_text(tmp_path: Path, text: Any) -> None:
    train = rows(4)
    train[2]["text"] = text
    make_dataset(tmp_path, "d", train=train)
    assert "train.jsonl:3: empty or non-string text" in task_error(TaskSpec(dataset="d"), tmp_path)


# --- load_task ---------------------------------------------------------------------------

def test_val_fraction_held_out_of_train(tmp_path: Path) -> None:
    make_dataset(tmp_path, "d", train=rows(40))
    data = load_task(TaskSpec(dataset="d", name="dee", val_fraction=0.25), tmp_path)
    assert data.name == "dee" and data.label_names == LABELS and data.n_classes == 3
    assert len(data.val.texts) == 10 and len(data.train.texts) == 30
    train_ids, val_ids = set(data.train.ids.tolist()), set(data.val.ids.tolist())
    assert not train_ids & val_ids
    assert train_ids | val_ids == set(range(40))
    for split in (data.train, data.val):
        assert list(split.ids) == sorted(split.ids)  # source order is kept
        assert split.texts == [f"text {i}" for i in split.ids]
        assert split.labels.tolist() == [i % 3 for i in split.ids]
        assert split.labels.dtype == np.int64
    assert data.test.texts == [f"text {1000 + i}" for i in range(6)]
    assert data.test.ids.tolist() == list(range(6))


def test_val_fraction_holds_out_at_least_one(tmp_path: Path) -> None:
    make_dataset(tmp_path, "d", train=rows(4))
    data = load_task(TaskSpec(dataset="d", val_fraction=0.01), tmp_path)
    assert (len(data.train.texts), len(data.val.texts)) == (3, 1)


def test_validation_file_is_used_when_present(tmp_path: Path) -> None:
    make_dataset(tmp_path, "d", train=rows(20), validation=rows(7, offset=500))
    data = load_task(TaskSpec(dataset="d"), tmp_path)
    assert len(data.train.texts) == 20  # nothing held out
    assert data.val.texts == [f"text {500 + i}" for i in range(7)]
    assert data.val.labels.tolist() == [(500 + i) % 3 for i in range(7)]
    # an explicit val_split wins
    write_jsonl(tmp_path / "d" / "dev.jsonl", rows(2, offset=900))
    data = load_task(TaskSpec(dataset="d", val_split="dev"), tmp_path)
    assert data.val.texts == ["text 900", "text 901"]


def test_max_caps_are_applied(tmp_path: Path) -> None:
    make_dataset(tmp_path, "d", train=rows(50), validation=rows(30, offset=500),
                 test=rows(40, offset=1000))
    data = load_task(TaskSpec(dataset="d", max_train=10, max_val=5, max_test=8), tmp_path)
    assert (len(data.train.texts), len(data.val.texts), len(data.test.texts)) == (10, 5, 8)
    data = load_task(TaskSpec(dataset="d", max_train=500, max_val=None), tmp_path)
    assert (len(data.train.texts), len(data.val.texts), len(data.test.texts)) == (50, 30, 40)


# Computed once with load_task (SUBSAMPLE_SEED 20250101, 6 of the 60 rows held out for
# validation first: ids 1, 9, 12, 47, 52, 56). If this changes, stored runs no longer describe
# the items a rerun would train on.
PINNED_TRAIN_IDS = [4, 8, 13, 22, 23, 25, 28, 30, 33, 42, 43, 46]
PINNED_VAL_IDS = [1, 9, 12, 47, 52, 56]


def test_max_train_is_deterministic_and_not_run_specific(tmp_path: Path) -> None:
    make_dataset(tmp_path / "a", "d", train=rows(60))
    make_dataset(tmp_path / "b", "d", train=rows(60))  # an identical copy elsewhere
    spec = TaskSpec(dataset="d", max_train=12)
    np.random.seed(1)
    random.seed(1)
    first = load_task(spec, tmp_path / "a")
    np.random.seed(2)  # global RNG state must not matter
    random.seed(2)
    second = load_task(spec, tmp_path / "b")
    third = load_task(TaskSpec(dataset="d", max_train=12, name="other-name", max_length=32),
                      tmp_path / "a")
    ids = first.train.ids.tolist()
    assert len(ids) == 12 and ids == sorted(ids)
    assert second.train.ids.tolist() == ids and third.train.ids.tolist() == ids
    assert first.val.ids.tolist() == second.val.ids.tolist()
    assert first.data_version == second.data_version
    assert ids == PINNED_TRAIN_IDS
    assert first.val.ids.tolist() == PINNED_VAL_IDS


def test_data_version_tracks_file_contents(tmp_path: Path) -> None:
    make_dataset(tmp_path, "d", train=rows(10))
    before = load_task(TaskSpec(dataset="d"), tmp_path).data_version
    assert before == load_task(TaskSpec(dataset="d"), tmp_path).data_version
    assert len(before.split("-")) == 2  # train and test digests
    assert before.split("-")[0] == file_digest(tmp_path / "d" / "train.jsonl")[:12]
    write_jsonl(tmp_path / "d" / "train.jsonl", rows(11))
    assert load_task(TaskSpec(dataset="d"), tmp_path).data_version != before


def test_train_from_another_folder_with_clean_labels(tmp_path: Path) -> None:
    """AG News style: train on noisyag_news/validation's gold labels, test on ag_news/test."""
    pool = [{"text": f"pool {i}", "label": (i + 1) % 3, "clean_label": i % 3} for i in range(20)]
    make_dataset(tmp_path, "noisy", train=None, validation=pool)
    make_dataset(tmp_path, "news", test=rows(5, offset=1000))
    spec = TaskSpec(dataset="news", train_dataset="noisy", train_split="validation",
                    label_field="clean_label", val_fraction=0.2)
    data = load_task(spec, tmp_path)
    assert len(data.train.texts) == 16 and len(data.val.texts) == 4  # held out of the pool
    for split in (data.train, data.val):
        assert all(t.startswith("pool ") for t in split.texts)
        assert split.labels.tolist() == [i % 3 for i in split.ids]  # clean_label, not label
        assert split.truth.tolist() == split.labels.tolist()
    assert data.test.texts[0] == "text 1000"
    assert data.test.labels.tolist() == [(1000 + i) % 3 for i in range(5)]


def test_train_folder_with_other_labels_is_rejected(tmp_path: Path) -> None:
    make_dataset(tmp_path, "noisy", train=rows(5), labels=["a", "b", "c"])
    make_dataset(tmp_path, "news")
    message = task_error(TaskSpec(dataset="news", train_dataset="noisy"), tmp_path)
    assert "different labels.json" in message


def test_truth_field_real_noise(tmp_path: Path) -> None:
    """Hausa style: ``label`` is the noisy label, ``clean_label`` the gold one."""
    noisy_rows = {1, 4, 7}
    train = [{"text": f"t{i}", "clean_label": i % 2,
              "label": (1 - i % 2) if i in noisy_rows else i % 2} for i in range(10)]
    val = [{"text": f"v{i}", "label": i % 2, "clean_label": i % 2} for i in range(4)]
    make_dataset(tmp_path, "hausa", train=train, validation=val, labels=["x", "y"],
                 test=[{"text": "q", "label": 1, "clean_label": 1}, {"text": "r", "label": 0}])
    data = load_task(TaskSpec(dataset="hausa", truth_field="clean_label"), tmp_path)
    tr = data.train
    assert tr.truth.tolist() == [i % 2 for i in range(10)]
    assert tr.labels.tolist() == [r["label"] for r in train]
    assert set(np.flatnonzero(tr.labels != tr.truth).tolist()) == noisy_rows
    assert data.val.labels.tolist() == data.val.truth.tolist() == [0, 1, 0, 1]
    assert data.test.labels.tolist() == [1, 0]


def test_truth_field_held_out_val_uses_gold_labels(tmp_path: Path) -> None:
    train = [{"text": f"t{i}", "clean_label": 0, "label": 1} for i in range(10)]  # all noisy
    make_dataset(tmp_path, "real", train=train, labels=["x", "y"],
                 test=[{"text": "q", "label": 0}, {"text": "r", "label": 1}])
    data = load_task(TaskSpec(dataset="real", truth_field="clean_label", val_fraction=0.3), tmp_path)
    assert data.train.labels.tolist() == [1] * 7 and data.train.truth.tolist() == [0] * 7
    assert data.val.labels.tolist() == [0] * 3  # validation never sees the noisy label
