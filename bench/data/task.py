"""Turn a :class:`~bench.spec.suite.TaskSpec` into the three splits a cell trains and tests on."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bench.data.imbalance import imbalance_keep
from bench.data.loaders import column, file_digest, find_dataset, read_labels, read_split, split_file
from bench.errors import BenchError
from bench.spec.suite import TaskSpec

#: Subsamples are drawn with this fixed seed, independent of the run seed, so every cell of a
#: task (all methods, noise settings and seeds) trains and tests on the same items.
SUBSAMPLE_SEED = 20250101


@dataclass(frozen=True)
class Split:
    """Texts with their given labels and, where known, gold labels."""

    texts: list[str]
    labels: NDArray[np.int64]
    """Labels as given by the data (noisy for real-noise sets)."""
    truth: NDArray[np.int64]
    """Gold labels (equal to ``labels`` unless the task has a ``truth_field``)."""
    ids: NDArray[np.int64]
    """Row numbers in the source file (0-based), to key per-example results."""


@dataclass(frozen=True)
class TaskData:
    """A task's splits, class names and the digest of the files they came from."""

    name: str
    label_names: list[str]
    train: Split
    val: Split
    test: Split
    data_version: str
    imbalance: dict[str, Any] | None = None
    """With the task's ``imbalance:``, the realised subsample (:func:`bench.data.imbalance.imbalance_keep`)."""

    @property
    def n_classes(self) -> int:
        """Number of classes."""
        return len(self.label_names)


def _labels(values: list[object], n_classes: int, where: str) -> NDArray[np.int64]:
    for i, v in enumerate(values, start=1):
        if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < n_classes:
            raise BenchError(f"{where}:{i}: label {v!r} out of range [0, {n_classes})")
    return np.asarray(values, dtype=np.int64)


#: The field that holds gold labels in the shared layout's real-noise sets (hausa, noisyag_news).
GOLD_FIELD = "clean_label"


def _unused_gold(rows: list[dict[str, Any]], spec: TaskSpec, where: str) -> None:
    """Refuse gold labels (``clean_label``) that differ from the trained field while no ``truth_field`` names them.

    Without it, detection would be scored against an all-clean truth.
    """
    if spec.truth_field is not None or spec.label_field == GOLD_FIELD or not all(GOLD_FIELD in r for r in rows):
        return
    differ = sum(r[GOLD_FIELD] != r.get(spec.label_field) for r in rows)
    if differ:
        raise BenchError(
            f"{where}: '{GOLD_FIELD}' differs from '{spec.label_field}' in {differ} of {len(rows)} rows (real label "
            f"noise): set truth_field: {GOLD_FIELD} to score against it, or label_field: {GOLD_FIELD} to train on it")


def _read(folder: Path, split: str, spec: TaskSpec, n_classes: int, given: str, truth: str,
          *, training: bool = False) -> Split:
    rows = read_split(folder, split)
    where = str(split_file(folder, split))  # errors read "<file>:<row>", like read_split's
    if training:
        _unused_gold(rows, spec, where)
    texts = column(rows, spec.text_field, where)
    if any(not isinstance(t, str) or not t.strip() for t in texts):
        bad = next(i for i, t in enumerate(texts, 1) if not isinstance(t, str) or not t.strip())
        raise BenchError(f"{where}:{bad}: empty or non-string text")
    gold = _labels(column(rows, truth, where), n_classes, where)
    observed = gold if given == truth else _labels(column(rows, given, where), n_classes, where)
    return Split(texts, observed, gold, np.arange(len(rows), dtype=np.int64))


def _take(split: Split, index: NDArray[np.int64]) -> Split:
    index = np.sort(index)
    return Split([split.texts[i] for i in index], split.labels[index], split.truth[index], split.ids[index])


def _cap(split: Split, limit: int | None, rng: np.random.Generator) -> Split:
    if limit is None or limit >= len(split.texts):
        return split
    return _take(split, rng.permutation(len(split.texts))[:limit])


def _imbalanced(train: Split, spec: TaskSpec, names: list[str]) -> tuple[Split, dict[str, Any] | None]:
    """The training split with the task's ``imbalance:`` applied (by gold class), and its record."""
    if spec.imbalance is None:
        return train, None
    keep, info = imbalance_keep(train.truth, names, spec.imbalance, f"task {spec.name or spec.dataset}")
    return _take(train, keep), info


def load_task(spec: TaskSpec, data_dir: Path) -> TaskData:
    """Load, check and subsample a task's train, validation and test splits.

    Validation is the train folder's ``val_split`` (or ``validation`` if present); otherwise
    ``val_fraction`` of the training pool is held out. Validation and test use gold labels and
    never reach training: test feeds metrics, validation curves and a ``sweep:``'s choice of
    setting (a clean validation set, as in most noisy-label papers; docs/sweep.md). A task's
    ``imbalance:`` subsamples the capped training split only
    (:mod:`bench.data.imbalance`).
    """
    test_folder = find_dataset(spec.dataset, data_dir)
    train_folder = find_dataset(spec.train_dataset, data_dir) if spec.train_dataset else test_folder
    names = read_labels(test_folder)
    if train_folder != test_folder and read_labels(train_folder) != names:
        raise BenchError(f"{train_folder.name} and {test_folder.name} have different labels.json")
    k = len(names)
    rng = np.random.default_rng(SUBSAMPLE_SEED)
    train = _read(train_folder, spec.train_split, spec, k, spec.label_field,
                  spec.truth_field or spec.label_field, training=True)
    val_split = spec.val_split or ("validation" if split_file(train_folder, "validation")
                                   and spec.train_split != "validation" else None)
    if val_split is not None:
        val = _read(train_folder, val_split, spec, k, spec.eval_label_field, spec.eval_label_field)
    else:
        order = rng.permutation(len(train.texts))
        n_val = max(1, int(round(spec.val_fraction * len(order))))
        val, train = _take(train, order[:n_val]), _take(train, order[n_val:])
        val = Split(val.texts, val.truth, val.truth, val.ids)
    test = _read(test_folder, spec.test_split, spec, k, spec.eval_label_field, spec.eval_label_field)
    files = [split_file(train_folder, spec.train_split), split_file(test_folder, spec.test_split)]
    if val_split is not None:
        files.append(split_file(train_folder, val_split))
    version = "-".join(file_digest(f)[:12] for f in files if f is not None)
    train = _cap(train, spec.max_train, rng)  # the caps draw from rng in this order: train, val, test
    val, test = _cap(val, spec.max_val, rng), _cap(test, spec.max_test, rng)
    train, imbalance = _imbalanced(train, spec, names)
    return TaskData(name=spec.name or spec.dataset, label_names=names, train=train, val=val, test=test,
                    data_version=version, imbalance=imbalance)
