"""The tests behind ``bench compare``: seed-level tests by seed count, and per-item paired tests of two runs.

See :mod:`bench.results.compare` for which test a cell gets.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from bench.errors import BenchError
from bench.evaluate.classification import ECE_BINS
from bench.metrics.accuracy import accuracy, macro_f1
from bench.metrics.calibration import brier_score, expected_calibration_error, negative_log_likelihood
from bench.results.stats import (
    FloatArray,
    ItemMetric,
    TestResult,
    mcnemar_test,
    pair_items,
    paired_bootstrap,
    prediction_test,
    welch_test,
)


def _argmax_accuracy(probs: FloatArray, labels: np.ndarray[Any, Any]) -> float:
    return accuracy(probs.argmax(axis=1), labels)


def _argmax_macro_f1(probs: FloatArray, labels: np.ndarray[Any, Any]) -> float:
    return macro_f1(probs.argmax(axis=1), labels, n_classes=probs.shape[1])


def _ece(probs: FloatArray, labels: np.ndarray[Any, Any]) -> float:
    return expected_calibration_error(probs, labels, n_bins=ECE_BINS)


#: Each compared metric recomputed from per-item predictions, as the runner computes it.
ITEM_METRICS: dict[str, ItemMetric] = {"accuracy": _argmax_accuracy, "macro_f1": _argmax_macro_f1, "ece": _ece,
                                       "nll": negative_log_likelihood, "brier": brier_score}


def item_tests(base: dict[str, Any], new: dict[str, Any], *, where: str, seed: int = 0,
               n_resamples: int = 1000) -> dict[str, TestResult]:
    """Per-item paired tests of two runs' predictions, one result per metric in ``ITEM_METRICS``.

    Items are paired by id. Accuracy gets McNemar's p-value and the paired bootstrap's
    interval; every other metric gets the paired bootstrap.

    Raises:
        BenchError: If the two runs were tested on different items or with different labels.
    """
    try:
        order_b, order_n = pair_items(base["ids"], new["ids"])
    except ValueError as err:
        raise BenchError(f"{where}: {err}") from None
    labels = np.asarray(base["labels"])[order_b]
    differ = int(np.sum(labels != np.asarray(new["labels"])[order_n]))
    if differ:
        raise BenchError(f"{where}: the two sides disagree on the labels of {differ} items")
    pb, pn = np.asarray(base["probs"], np.float64)[order_b], np.asarray(new["probs"], np.float64)[order_n]
    out = {name: paired_bootstrap(fn, labels, pb, pn, n_resamples=n_resamples, seed=seed)
           for name, fn in ITEM_METRICS.items()}
    exact = mcnemar_test(pb.argmax(axis=1) == labels, pn.argmax(axis=1) == labels)
    boot = out["accuracy"]
    out["accuracy"] = TestResult(boot.delta, boot.ci_low, boot.ci_high, exact.p_value, exact.test)
    return out


def seed_test(base: Sequence[float], new: Sequence[float]) -> TestResult | None:
    """The seed-level test for the seed counts (None when both sides have one seed)."""
    if len(base) >= 2 and len(new) >= 2:
        return welch_test(base, new)
    if len(base) >= 2:
        return prediction_test(base, new[0])
    if len(new) >= 2:
        return prediction_test(new, base[0], single_is_new=False)
    return None
