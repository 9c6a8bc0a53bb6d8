"""Classification metrics of a fitted model, and detection scores of its diagnostics."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from bench.metrics.accuracy import accuracy, macro_f1
from bench.metrics.calibration import (
    brier_score,
    expected_calibration_error,
    negative_log_likelihood,
    reliability_bins,
)
from bench.metrics.detection import auroc, detection_scores

#: ECE and reliability diagrams use 15 equal-width bins on the max probability (METHODS.md §0.3).
ECE_BINS = 15


def classification_metrics(probs: NDArray[np.float64], labels: NDArray[np.int64]) -> dict[str, Any]:
    """Accuracy, macro-F1, ECE (15 equal-width bins), Brier, NLL and reliability bins."""
    preds = probs.argmax(axis=1)
    n_classes = probs.shape[1]
    return {
        "accuracy": accuracy(preds, labels),
        "macro_f1": macro_f1(preds, labels, n_classes=n_classes),
        "ece": expected_calibration_error(probs, labels, n_bins=ECE_BINS),
        "brier": brier_score(probs, labels),
        "nll": negative_log_likelihood(probs, labels),
        "reliability": dict(reliability_bins(probs, labels, n_bins=ECE_BINS)),
    }


def detection_metrics(diagnostics: dict[str, Any], truly_clean: NDArray[np.bool_]) -> dict[str, float]:
    """Score a method's noisy-label detection against the truth mask.

    Uses ``diagnostics["selected_clean"]`` (bool per training sample) for precision/recall/F1
    in both conventions and ``diagnostics["clean_score"]`` (higher = cleaner) for AUROC.
    Methods without these diagnostics get no detection metrics.
    """
    out: dict[str, float] = {}
    selected = diagnostics.get("selected_clean")
    if selected is not None:
        out.update(detection_scores(np.asarray(selected, dtype=bool), truly_clean))
    score = diagnostics.get("clean_score")
    if score is not None:
        out["auroc"] = auroc(np.asarray(score, dtype=np.float64), truly_clean)
    return out
