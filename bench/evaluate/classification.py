"""Classification metrics of a fitted model, and detection scores of its diagnostics."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from bench.metrics.accuracy import accuracy, class_accuracies, macro_f1, worst_class_accuracy
from bench.metrics.calibration import (
    brier_score,
    expected_calibration_error,
    negative_log_likelihood,
    reliability_bins,
)
from bench.metrics.detection import auroc, detection_scores

#: ECE and reliability diagrams use 15 equal-width bins on the max probability (METHODS.md §0.3).
ECE_BINS = 15
#: A run has collapsed when it predicts one class for at least this share of the test items...
COLLAPSE_SHARE = 0.9
#: ...while that class is at most this share of the gold labels (so the data does not explain it).
COLLAPSE_GOLD_SHARE = 0.5


def classification_metrics(probs: NDArray[np.float64], labels: NDArray[np.int64]) -> dict[str, Any]:
    """Accuracy, macro-F1, per-class and worst-class accuracy, ECE (15 bins), Brier, NLL, reliability bins."""
    preds = probs.argmax(axis=1)
    n_classes = probs.shape[1]
    return {
        "accuracy": accuracy(preds, labels),
        "macro_f1": macro_f1(preds, labels, n_classes=n_classes),
        "worst_class_acc": worst_class_accuracy(preds, labels, n_classes=n_classes),
        "class_acc": class_accuracies(preds, labels, n_classes).tolist(),
        "ece": expected_calibration_error(probs, labels, n_bins=ECE_BINS),
        "brier": brier_score(probs, labels),
        "nll": negative_log_likelihood(probs, labels),
        "reliability": dict(reliability_bins(probs, labels, n_bins=ECE_BINS)),
        "pred_top_share": top_share(preds, n_classes),
    }


def validation_metrics(probs: NDArray[np.float64], labels: NDArray[np.int64]) -> dict[str, float]:
    """``val_accuracy`` and ``val_nll`` of the final model on the validation split (a sweep selects on them)."""
    return {"val_accuracy": accuracy(probs.argmax(axis=1), labels), "val_nll": negative_log_likelihood(probs, labels)}


def top_share(preds: NDArray[np.int64], n_classes: int) -> float:
    """Share of the items predicted as the most often predicted class."""
    if len(preds) == 0:
        return float("nan")
    return float(np.bincount(preds, minlength=n_classes).max() / len(preds))


def collapse_message(probs: NDArray[np.float64], labels: NDArray[np.int64], label_names: list[str]) -> str | None:
    """Says why a run looks collapsed (one class predicted for nearly everything), else None.

    Training that diverges or stalls ends predicting one class (on MiniLM with its pooler frozen,
    some seeds keep the loss near ln K: results/baselines/README.md). Such a run is kept in the
    statistics, since it is what the method did, but it is flagged so nobody reads its
    accuracy as a property of the data.
    """
    preds = probs.argmax(axis=1)
    if len(preds) == 0:
        return None
    counts = np.bincount(preds, minlength=probs.shape[1])
    top = int(counts.argmax())
    share = counts[top] / len(preds)
    gold = float(np.mean(labels == top))
    if share < COLLAPSE_SHARE or gold > COLLAPSE_GOLD_SHARE:
        return None
    name = label_names[top] if top < len(label_names) else str(top)
    return (f"predicts '{name}' for {100 * share:.1f} % of the test items "
            f"(gold share {100 * gold:.1f} %): training collapsed")


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


def _group_mean(values: NDArray[np.float64], mask: NDArray[np.bool_]) -> float:
    return float(values[mask].mean()) if mask.any() else float("nan")


def _history_row(entry: dict[str, Any], truly_clean: NDArray[np.bool_], observed: NDArray[np.int64],
                 truth: NDArray[np.int64]) -> dict[str, float]:
    row: dict[str, float] = {"epoch": float(entry["epoch"])}
    row.update(detection_metrics(entry, truly_clean))
    for key, value in entry.items():
        if key in ("epoch", "selected_clean", "clean_score"):
            continue
        array = np.asarray(value)
        if key.startswith("pred_"):
            row[f"train_acc_observed_{key[5:]}"] = float((array == observed).mean())
            row[f"train_acc_true_{key[5:]}"] = float((array == truth).mean())
        elif array.ndim == 0:
            row[key] = float(array)
        elif array.shape == truly_clean.shape:
            row[f"{key}_mean_clean"] = _group_mean(array.astype(np.float64), truly_clean)
            row[f"{key}_mean_noisy"] = _group_mean(array.astype(np.float64), ~truly_clean)
    return row


def selection_curves(history: list[dict[str, Any]], truly_clean: NDArray[np.bool_], observed: NDArray[np.int64],
                     truth: NDArray[np.int64]) -> dict[str, list[float]]:
    """Per-epoch detection curves from a method's ``selection_history`` (see :mod:`bench.sdk.noisy`).

    Each entry gives detection P/R/F1 (both conventions) and AUROC, train accuracy of every
    ``pred_<model>`` against the observed and the true labels (the memorisation analysis), and
    the mean of every other per-sample array over truly clean and truly noisy samples. Curve
    names start with ``detect_``.
    """
    curves: dict[str, list[float]] = {}
    rows = [_history_row(entry, truly_clean, observed, truth) for entry in history]
    for key in dict.fromkeys(k for row in rows for k in row):
        curves[f"detect_{key}"] = [row.get(key, float("nan")) for row in rows]
    return curves


def relabel_metrics(relabels: Any, truth: NDArray[np.int64], n_classes: int) -> tuple[dict[str, float], list[Any]]:
    """Accuracy of a method's new labels (``-1`` = not relabelled) and their confusion matrix.

    Returns:
        ``({"n_relabelled", "relabel_accuracy"}, confusion)`` with ``confusion[true][new]``;
        ``({}, [])`` when the method relabelled nothing.
    """
    new = np.asarray(relabels, dtype=np.int64)
    done = new >= 0
    if not done.any():
        return {}, []
    confusion = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(confusion, (truth[done], new[done]), 1)
    return ({"n_relabelled": int(done.sum()), "relabel_accuracy": float((new[done] == truth[done]).mean())},
            confusion.tolist())
