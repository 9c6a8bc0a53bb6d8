"""Calibration metrics on predicted class probabilities: ECE, Brier, NLL, reliability bins.

All functions take ``probs`` of shape ``[n, K]`` whose rows are probability vectors and
integer ``labels`` of shape ``[n]`` in ``[0, K)``.

Binning (ECE and reliability diagrams): confidence = max probability, prediction = argmax,
``n_bins`` equal-width bins on [0, 1]; bin b holds confidences in ``(b/n_bins, (b+1)/n_bins]``,
and a confidence of exactly 0 goes to the first bin.
"""

from __future__ import annotations

from typing import TypedDict

import numpy as np
import numpy.typing as npt

from bench.metrics import register_metric
from bench.metrics.accuracy import IntArray, as_label_vector, check_class_range

FloatArray = npt.NDArray[np.float64]

# Rows must sum to 1 within this tolerance: loose enough for bf16 softmax outputs, tight
# enough to reject logits or unnormalised scores passed by mistake.
_ROW_SUM_ATOL = 1e-2


class ReliabilityBins(TypedDict):
    """Per-bin data for a reliability diagram; accuracy/confidence are None for empty bins."""

    lower: list[float]
    upper: list[float]
    count: list[int]
    accuracy: list[float | None]
    confidence: list[float | None]


def _validate(probs: npt.ArrayLike, labels: npt.ArrayLike) -> tuple[FloatArray, IntArray]:
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2:
        raise ValueError(f"probs must be 2-D [n_samples, n_classes], got shape {p.shape}")
    y = as_label_vector(labels, "labels")
    if y.shape[0] != p.shape[0]:
        raise ValueError(
            f"probs and labels disagree on the number of samples: {p.shape[0]} vs {y.shape[0]}"
        )
    if y.size == 0:
        return p, y
    check_class_range(y, p.shape[1], "labels")
    if not np.all(np.isfinite(p)) or p.min() < 0.0 or p.max() > 1.0 + _ROW_SUM_ATOL:
        raise ValueError("probs must be finite probabilities in [0, 1] (logits passed?)")
    worst = float(np.max(np.abs(p.sum(axis=1) - 1.0)))
    if worst > _ROW_SUM_ATOL:
        raise ValueError(f"probs rows must sum to 1, worst row is off by {worst:.3g}")
    return p, y


def _check_n_bins(n_bins: int) -> None:
    if int(n_bins) != n_bins or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}")


def _bin_indices(confidence: FloatArray, n_bins: int) -> IntArray:
    """Bin index per confidence: bin b is ``(b/n_bins, (b+1)/n_bins]``; 0 goes to bin 0."""
    # Edges as b / n_bins (correctly rounded), not linspace's b * step, so that a confidence
    # written as e.g. 0.7 lands in (0.6, 0.7] with 10 bins.
    edges = np.arange(n_bins + 1) / n_bins
    idx = np.searchsorted(edges, confidence, side="left") - 1
    return np.clip(idx, 0, n_bins - 1).astype(np.int64)


def _bin_sums(
    p: FloatArray, y: IntArray, n_bins: int
) -> tuple[IntArray, FloatArray, FloatArray]:
    """Per-bin sample count, number correct and sum of confidences."""
    if y.size == 0:
        return np.zeros(n_bins, np.int64), np.zeros(n_bins), np.zeros(n_bins)
    confidence = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(np.float64)
    idx = _bin_indices(confidence, n_bins)
    count = np.bincount(idx, minlength=n_bins).astype(np.int64)
    n_correct = np.bincount(idx, weights=correct, minlength=n_bins).astype(np.float64)
    conf_sum = np.bincount(idx, weights=confidence, minlength=n_bins).astype(np.float64)
    return count, n_correct, conf_sum


@register_metric("ece", higher_is_better=False)
def expected_calibration_error(
    probs: npt.ArrayLike, labels: npt.ArrayLike, n_bins: int = 15
) -> float:
    """Expected calibration error, ``sum_b |B_b|/n * |acc(B_b) - conf(B_b)|``.

    Uses the module's binning (equal-width bins, confidence 0 in the first bin).

    Args:
        probs: Class probabilities, shape ``[n, K]``.
        labels: True class ids, shape ``[n]``.
        n_bins: Number of equal-width bins on [0, 1].

    Returns:
        ECE in [0, 1]; nan for empty input.

    Raises:
        ValueError: On bad shapes, labels out of range, non-probability rows or bad n_bins.
    """
    p, y = _validate(probs, labels)
    _check_n_bins(n_bins)
    if y.size == 0:
        # No samples: the metric is undefined, and nan keeps it out of means
        # rather than faking a value.
        return float("nan")
    _, n_correct, conf_sum = _bin_sums(p, y, n_bins)
    # |B_b|/n * |n_correct_b/|B_b| - conf_sum_b/|B_b|| = |n_correct_b - conf_sum_b| / n
    return float(np.abs(n_correct - conf_sum).sum() / y.size)


@register_metric("brier", higher_is_better=False)
def brier_score(probs: npt.ArrayLike, labels: npt.ArrayLike) -> float:
    """Multi-class Brier score: mean over samples of ``sum_k (p_k - onehot_k)^2``.

    This is the original (Brier 1950) multi-class form, with range [0, 2], not the
    binary form in [0, 1].

    Returns:
        Brier score in [0, 2]; nan for empty input.

    Raises:
        ValueError: On bad shapes, labels out of range or non-probability rows.
    """
    p, y = _validate(probs, labels)
    if y.size == 0:
        # No samples: the metric is undefined, and nan keeps it out of means
        # rather than faking a value.
        return float("nan")
    onehot = np.zeros_like(p)
    onehot[np.arange(y.size), y] = 1.0
    return float(np.mean(np.sum((p - onehot) ** 2, axis=1)))


@register_metric("nll", higher_is_better=False, unit="nats")
def negative_log_likelihood(
    probs: npt.ArrayLike, labels: npt.ArrayLike, eps: float = 1e-12
) -> float:
    """Mean negative log-likelihood of the true class, ``mean(-log(max(p_y, eps)))``.

    Args:
        probs: Class probabilities, shape ``[n, K]``.
        labels: True class ids, shape ``[n]``.
        eps: Floor on ``p_y`` so that a zero probability costs ``-log(eps)``, not infinity.

    Returns:
        NLL in nats, >= 0; nan for empty input.

    Raises:
        ValueError: On bad shapes, labels out of range, non-probability rows or eps <= 0.
    """
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps!r}")
    p, y = _validate(probs, labels)
    if y.size == 0:
        # No samples: the metric is undefined, and nan keeps it out of means
        # rather than faking a value.
        return float("nan")
    p_true = p[np.arange(y.size), y]
    return float(np.mean(-np.log(np.maximum(p_true, eps))))


def reliability_bins(
    probs: npt.ArrayLike, labels: npt.ArrayLike, n_bins: int = 15
) -> ReliabilityBins:
    """Per-bin counts, accuracy and mean confidence for a reliability diagram.

    Uses the same binning as :func:`expected_calibration_error`.

    Returns:
        Lists of length ``n_bins``: ``lower``/``upper`` bin edges, ``count``, and
        ``accuracy``/``confidence`` (None for empty bins). Empty input gives all-zero
        counts and all-None accuracy/confidence.

    Raises:
        ValueError: On bad shapes, labels out of range, non-probability rows or bad n_bins.
    """
    p, y = _validate(probs, labels)
    _check_n_bins(n_bins)
    count, n_correct, conf_sum = _bin_sums(p, y, n_bins)
    counts = [int(c) for c in count]
    return {
        "lower": [b / n_bins for b in range(n_bins)],
        "upper": [(b + 1) / n_bins for b in range(n_bins)],
        "count": counts,
        "accuracy": [float(n_correct[b] / c) if c else None for b, c in enumerate(counts)],
        "confidence": [float(conf_sum[b] / c) if c else None for b, c in enumerate(counts)],
    }
