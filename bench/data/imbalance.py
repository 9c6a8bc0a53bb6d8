"""Class-imbalanced training sets: one named class subsampled to ``1/ratio`` of the others (METHODS.md §5.5 b).

A task's ``imbalance: {ratio: 9, minority: negative}`` keeps every item of every other class
and ``round(n_smallest_other / ratio)`` items of the minority class (round half up), drawn with
:data:`IMBALANCE_SEED`: a fixed seed, independent of the run seed, so every method, noise
setting and seed of the task trains on the same items. On a binary task the ratio is exactly
majority : minority. It is applied to the training split after ``max_train`` (so the
imbalanced set is the balanced task's capped set minus most of its minority items) and never
to validation or test, which stay as distributed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bench.errors import BenchError

#: The minority subsample's seed (the task subsamples' is ``bench.data.task.SUBSAMPLE_SEED``;
#: this one is separate so that validation and test caps draw the same items with or without it).
IMBALANCE_SEED = 20250516


@dataclass(frozen=True)
class ImbalanceSpec:
    """Subsample the ``minority`` class of the training split to ``1/ratio`` of the smallest other class.

    Attributes:
        ratio: smallest other class : minority, >= 1 (9 gives SST-2's 9:1).
        minority: the class, as its index in ``labels.json`` or its name there.
    """

    ratio: float
    minority: int | str

    def __post_init__(self) -> None:
        if not math.isfinite(self.ratio) or self.ratio < 1:
            raise ValueError(f"imbalance ratio must be a number >= 1, got {self.ratio!r}")
        if isinstance(self.minority, int) and self.minority < 0:
            raise ValueError(f"imbalance minority must be a class index >= 0 or a class name, got {self.minority}")


def minority_index(spec: ImbalanceSpec, label_names: list[str], where: str) -> int:
    """The minority class's index: ``spec.minority`` itself, or the index of the class of that name.

    Raises:
        BenchError: an index out of range or a name that is no class (the classes listed).
    """
    classes = ", ".join(f"{i}={name}" for i, name in enumerate(label_names))
    if isinstance(spec.minority, int):
        if spec.minority >= len(label_names):
            raise BenchError(f"{where}: imbalance minority {spec.minority} is not a class index (classes: {classes})")
        return spec.minority
    if spec.minority not in label_names:
        raise BenchError(f"{where}: imbalance minority {spec.minority!r} is not a class name (classes: {classes})")
    return label_names.index(spec.minority)


def minority_target(counts: NDArray[np.int64], minority: int, ratio: float) -> int:
    """``round(min(counts of the other classes) / ratio)``, rounding half up."""
    others = np.delete(counts, minority)
    return int(math.floor(int(others.min()) / ratio + 0.5))


def imbalance_keep(labels: NDArray[np.int64], label_names: list[str], spec: ImbalanceSpec,
                   where: str) -> tuple[NDArray[np.int64], dict[str, Any]]:
    """Positions of ``labels`` to keep, and what the record says about them.

    Returns:
        ``(sorted positions, info)``; ``info`` holds the ratio, the minority's index and name,
        the class counts before (``pool_counts``) and after (``train_counts``) and the seed.

    Raises:
        BenchError: an unknown minority, a minority that would keep no item, or one with fewer
            items than the ratio asks for (a smaller ratio cannot be reached by subsampling it).
    """
    minority = minority_index(spec, label_names, where)
    counts = np.bincount(labels, minlength=len(label_names)).astype(np.int64)
    target = minority_target(counts, minority, spec.ratio)
    name = label_names[minority]
    if target < 1:
        raise BenchError(f"{where}: imbalance ratio {spec.ratio:g} keeps 0 items of class '{name}' "
                         f"(smallest other class: {int(np.delete(counts, minority).min())} items)")
    if target > counts[minority]:
        raise BenchError(f"{where}: imbalance ratio {spec.ratio:g} asks for {target} items of class '{name}', "
                         f"which has {int(counts[minority])}; use a larger ratio")
    rng = np.random.default_rng(IMBALANCE_SEED)
    pool = np.flatnonzero(labels == minority)
    chosen = rng.permutation(pool)[:target]
    keep = np.sort(np.concatenate([np.flatnonzero(labels != minority), chosen])).astype(np.int64)
    info = {"ratio": spec.ratio, "minority": minority, "minority_name": name, "seed": IMBALANCE_SEED,
            "pool_counts": counts.tolist(),
            "train_counts": np.bincount(labels[keep], minlength=len(label_names)).tolist()}
    return keep, info
