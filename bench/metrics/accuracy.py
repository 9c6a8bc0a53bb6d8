"""Classification metrics on integer labels: accuracy, macro-F1, per-class and worst-class accuracy, confusion."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from bench.metrics import register_metric

IntArray = npt.NDArray[np.int64]


def as_label_vector(values: npt.ArrayLike, name: str) -> IntArray:
    """Convert ``values`` to a 1-D int64 array of class ids.

    Args:
        values: Integer class ids (any integer dtype; an empty sequence of any dtype).
        name: Argument name used in error messages.

    Raises:
        ValueError: If the array is not 1-D or not of an integer dtype (bool included).
    """
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must hold integer class ids, got dtype {arr.dtype}")
    return arr.astype(np.int64)


def check_class_range(values: IntArray, n_classes: int, name: str) -> None:
    """Raise ValueError unless every entry of ``values`` lies in ``[0, n_classes)``."""
    if values.size and (values.min() < 0 or values.max() >= n_classes):
        raise ValueError(
            f"{name} must lie in [0, {n_classes}), got values in "
            f"[{values.min()}, {values.max()}]"
        )


def _paired(preds: npt.ArrayLike, labels: npt.ArrayLike) -> tuple[IntArray, IntArray]:
    p = as_label_vector(preds, "preds")
    y = as_label_vector(labels, "labels")
    if p.shape != y.shape:
        raise ValueError(
            f"preds and labels must have the same length, got {p.shape[0]} and {y.shape[0]}"
        )
    return p, y


@register_metric("accuracy", higher_is_better=True)
def accuracy(preds: npt.ArrayLike, labels: npt.ArrayLike) -> float:
    """Fraction of predictions equal to the label.

    Args:
        preds: Predicted class ids, shape ``[n]``.
        labels: True class ids, shape ``[n]``.

    Returns:
        Accuracy in [0, 1]; nan for empty input.

    Raises:
        ValueError: On non-1-D, non-integer or mismatched inputs.
    """
    p, y = _paired(preds, labels)
    if p.size == 0:
        # No samples: the metric is undefined, and nan keeps it out of means
        # rather than faking a value.
        return float("nan")
    return float(np.mean(p == y))


@register_metric("macro_f1", higher_is_better=True)
def macro_f1(preds: npt.ArrayLike, labels: npt.ArrayLike, n_classes: int | None = None) -> float:
    """Unweighted mean over classes of the per-class F1 = 2TP / (2TP + FP + FN).

    A class with TP = 0 but FP + FN > 0 has F1 = 0. A class with TP + FP + FN = 0 (never
    predicted and never true) has undefined F1 and is excluded from the mean.

    With ``n_classes=None`` the classes are the union of the values in ``labels`` and
    ``preds``. With ``n_classes`` given, classes ``0..n_classes-1`` count and values outside
    that range raise; since a class with TP + FP + FN = 0 is still excluded, the value equals
    the ``n_classes=None`` one, so the argument only adds the range check.

    Args:
        preds: Predicted class ids, shape ``[n]``.
        labels: True class ids, shape ``[n]``.
        n_classes: Number of classes, or None to infer them.

    Returns:
        Macro-F1 in [0, 1]; nan for empty input.

    Raises:
        ValueError: On bad shapes or dtypes, negative ids, or ids outside ``[0, n_classes)``.
    """
    p, y = _paired(preds, labels)
    if p.size == 0:
        # No samples: no class has a defined F1, and nan keeps it out of means
        # rather than faking a value.
        return float("nan")
    cm = confusion_matrix(p, y, _class_count(p, y, n_classes))
    tp = np.diag(cm)
    fp = cm.sum(axis=0) - tp
    fn = cm.sum(axis=1) - tp
    denom = 2 * tp + fp + fn
    present = denom > 0
    return float(np.mean(2 * tp[present] / denom[present]))


def _class_count(p: IntArray, y: IntArray, n_classes: int | None) -> int:
    """``n_classes``, or, when None, one more than the largest id in non-empty ``p`` and ``y``."""
    if n_classes is not None:
        return n_classes
    if min(p.min(), y.min()) < 0:
        raise ValueError("preds and labels must be non-negative class ids")
    return int(max(p.max(), y.max())) + 1


def class_accuracies(preds: npt.ArrayLike, labels: npt.ArrayLike, n_classes: int) -> npt.NDArray[np.float64]:
    """Per-class accuracy (recall): the share of each class's items predicted as that class.

    Args:
        preds: Predicted class ids, shape ``[n]``.
        labels: True class ids, shape ``[n]``.
        n_classes: Number of classes K.

    Returns:
        float array ``[K]``; nan for a class with no item in ``labels``.

    Raises:
        ValueError: On bad shapes or dtypes, ``n_classes < 1``, or ids outside ``[0, K)``.
    """
    cm = confusion_matrix(preds, labels, n_classes)
    support = cm.sum(axis=1)
    out = np.full(cm.shape[0], np.nan)
    np.divide(np.diag(cm), support, out=out, where=support > 0)
    return out


@register_metric("worst_class_acc", higher_is_better=True)
def worst_class_accuracy(preds: npt.ArrayLike, labels: npt.ArrayLike, n_classes: int | None = None) -> float:
    """The lowest per-class accuracy (recall) over the classes present in ``labels`` (METHODS.md §5.5 b).

    A classifier that predicts the majority class for everything scores 0 here however
    accurate it is overall.

    Args:
        preds: Predicted class ids, shape ``[n]``.
        labels: True class ids, shape ``[n]``.
        n_classes: Number of classes (values outside ``[0, n_classes)`` raise), or None to
            infer them from the values; a class with no true item is left out either way.

    Returns:
        Worst-class accuracy in [0, 1]; nan for empty input.

    Raises:
        ValueError: On bad shapes or dtypes, negative ids, or ids outside ``[0, n_classes)``.
    """
    p, y = _paired(preds, labels)
    if p.size == 0:
        return float("nan")
    return float(np.nanmin(class_accuracies(p, y, _class_count(p, y, n_classes))))


def confusion_matrix(preds: npt.ArrayLike, labels: npt.ArrayLike, n_classes: int) -> IntArray:
    """Count (true, predicted) pairs.

    Args:
        preds: Predicted class ids, shape ``[n]``.
        labels: True class ids, shape ``[n]``.
        n_classes: Number of classes K.

    Returns:
        int64 array ``[K, K]``; entry ``[i, j]`` counts samples with label i predicted as j
        (rows = true, columns = predicted). All zeros for empty input.

    Raises:
        ValueError: On bad shapes or dtypes, ``n_classes < 1``, or ids outside ``[0, K)``.
    """
    if int(n_classes) != n_classes or n_classes < 1:
        raise ValueError(f"n_classes must be a positive integer, got {n_classes!r}")
    k = int(n_classes)
    p, y = _paired(preds, labels)
    check_class_range(p, k, "preds")
    check_class_range(y, k, "labels")
    counts = np.bincount(y * k + p, minlength=k * k)
    return counts.reshape(k, k).astype(np.int64)
