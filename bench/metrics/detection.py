"""Noisy-label detection metrics against a ground-truth mask of clean samples.

A detection method returns ``selected_clean`` (bool ``[n]``: the method keeps the sample as
clean); the benchmark knows ``truly_clean`` (bool ``[n]``). Scores are reported in two
conventions:

* noisy as positive: ``D^_n = ~selected_clean``, ``D*_n = ~truly_clean``,
  ``P_n = |D^_n & D*_n| / |D^_n|``, ``R_n = |D^_n & D*_n| / |D*_n|``;
* clean as positive: the same with ``selected_clean`` and ``truly_clean``.

F1 is ``2TP / (2TP + FP + FN)``, the harmonic mean of P and R where both are defined, and 0
when TP = 0 but FP + FN > 0. Undefined ratios (0/0) are nan.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from bench.metrics import register_metric

BoolArray = npt.NDArray[np.bool_]


def _as_bool_vector(values: npt.ArrayLike, name: str) -> BoolArray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.size and arr.dtype != np.bool_:
        # Integer input is refused rather than cast: an index array passed by mistake
        # would otherwise be read as a mask without any error.
        raise ValueError(f"{name} must be a boolean mask, got dtype {arr.dtype}")
    return arr.astype(np.bool_)


def _ratio(num: int, den: int) -> float:
    return num / den if den else float("nan")


def _prf(predicted: BoolArray, actual: BoolArray) -> tuple[float, float, float]:
    tp = int(np.sum(predicted & actual))
    fp = int(np.sum(predicted & ~actual))
    fn = int(np.sum(~predicted & actual))
    return _ratio(tp, tp + fp), _ratio(tp, tp + fn), _ratio(2 * tp, 2 * tp + fp + fn)


def detection_scores(selected_clean: npt.ArrayLike, truly_clean: npt.ArrayLike) -> dict[str, float]:
    """Precision, recall and F1 of a clean/noisy split, with noisy and with clean as positive.

    Args:
        selected_clean: Bool mask ``[n]``, True where the method says "clean".
        truly_clean: Bool mask ``[n]``, True where the label is truly clean.

    Returns:
        ``precision_noisy``, ``recall_noisy``, ``f1_noisy``, ``precision_clean``,
        ``recall_clean``, ``f1_clean`` (nan where 0/0; all nan for empty input, since with
        no samples nothing is defined and nan keeps it out of means), plus the counts
        ``n_selected_clean`` and ``n_truly_clean`` (ints).

    Raises:
        ValueError: If the masks are not 1-D bool arrays of equal length.
    """
    selected = _as_bool_vector(selected_clean, "selected_clean")
    truth = _as_bool_vector(truly_clean, "truly_clean")
    if selected.shape != truth.shape:
        raise ValueError(
            f"selected_clean and truly_clean must have the same length, "
            f"got {selected.shape[0]} and {truth.shape[0]}"
        )
    p_n, r_n, f_n = _prf(~selected, ~truth)
    p_c, r_c, f_c = _prf(selected, truth)
    return {
        "precision_noisy": p_n,
        "recall_noisy": r_n,
        "f1_noisy": f_n,
        "precision_clean": p_c,
        "recall_clean": r_c,
        "f1_clean": f_c,
        "n_selected_clean": int(selected.sum()),
        "n_truly_clean": int(truth.sum()),
    }


def _component(key: str) -> Callable[[npt.ArrayLike, npt.ArrayLike], float]:
    """Register ``detection_scores(...)[key]`` as a stand-alone metric named ``key``."""

    def metric(selected_clean: npt.ArrayLike, truly_clean: npt.ArrayLike) -> float:
        return float(detection_scores(selected_clean, truly_clean)[key])

    metric.__name__ = metric.__qualname__ = key
    metric.__doc__ = f"Return ``detection_scores(selected_clean, truly_clean)[{key!r}]``."
    return register_metric(key, higher_is_better=True)(metric)


precision_noisy = _component("precision_noisy")
recall_noisy = _component("recall_noisy")
f1_noisy = _component("f1_noisy")
precision_clean = _component("precision_clean")
recall_clean = _component("recall_clean")
f1_clean = _component("f1_clean")


@register_metric("auroc", higher_is_better=True)
def auroc(scores: npt.ArrayLike, positives: npt.ArrayLike) -> float:
    """Area under the ROC curve via the Mann-Whitney U statistic.

    AUROC = P(score of a random positive > score of a random negative), with ties counting
    1/2; computed from tie-averaged ranks as ``(R_pos - n_pos (n_pos + 1) / 2) / (n_pos n_neg)``.

    Args:
        scores: Finite scores ``[n]``; higher means "more likely positive".
        positives: Bool mask ``[n]`` of the positive class.

    Returns:
        AUROC in [0, 1]; nan if there are no positives or no negatives.

    Raises:
        ValueError: On non-1-D, mismatched or non-finite inputs, or a non-bool mask.
    """
    s = np.asarray(scores, dtype=np.float64)
    pos = _as_bool_vector(positives, "positives")
    if s.ndim != 1 or s.shape != pos.shape:
        raise ValueError(
            f"scores must be 1-D and match positives, got shapes {s.shape} and {pos.shape}"
        )
    if not np.all(np.isfinite(s)):
        raise ValueError("scores must be finite")
    n_pos = int(pos.sum())
    n_neg = pos.size - n_pos
    if n_pos == 0 or n_neg == 0:
        # One class is empty (or no samples): there is no positive/negative pair to rank,
        # the AUROC is undefined, and nan keeps it out of means rather than faking a value.
        return float("nan")
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    mean_rank = ends - (counts - 1) / 2.0  # 1-based average rank of each group of ties
    u = float(mean_rank[inverse.ravel()][pos].sum()) - n_pos * (n_pos + 1) / 2.0
    return u / (n_pos * n_neg)
