"""Generation metrics in ``bench compare``: which ones a cell has, their direction, per-item tests.

A generation record's metrics are flat, ``<eval name>_<metric>`` (``gsm8k_exact_match_strict_match``,
``mmlu_0shot_acc``, ``mmlu_0shot_ece``, ``humaneval_pass_at_1``). The seed-level tests of
:mod:`bench.results.compare` work on them unchanged. With one seed per side, the per-item test pairs
the stored per-item scores by item id (``<run_id>.preds.npz``):

- lm-eval evaluations store ``<eval>_doc_id`` and one 0/1 array per metric and filter
  (``<eval>_exact_match_strict_match``, ``<eval>_acc``): McNemar on those, with the paired
  bootstrap's interval;
- HumanEval stores ``<eval>_problem`` and ``<eval>_passed`` (problems × samples): each problem's
  unbiased pass@k, then McNemar when that is 0/1 (one sample, k = 1) and the paired bootstrap
  of the mean otherwise;
- multiple-choice ECE (``<eval>_ece``): the paired bootstrap over items of the ECE recomputed
  from the stored choice probabilities (``<eval>_probs``) and per-item correctness
  (``<eval>_acc``). ECE needs only each item's top probability and whether its argmax is right,
  so the gold choice itself (not stored) is not needed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from bench.evaluate.classification import ECE_BINS
from bench.metrics.calibration import expected_calibration_error
from bench.metrics.passk import pass_at_k
from bench.report.generation import HEADLINE
from bench.results import compare_bias
from bench.results.stats import TestResult, mcnemar_test, pair_items, paired_bootstrap

#: Metric suffixes of an evaluation, in display order, and whether higher is better (the leaderboard's).
SUFFIXES = tuple((suffix, higher) for suffix, _, higher in HEADLINE)
_PASS_AT = re.compile(r"^(?P<eval>[a-z0-9_]+)_pass_at_(?P<k>\d+)$")


def direction(metric: str) -> bool | None:
    """Whether higher is better for a generation metric name; None if it is not one."""
    bias = compare_bias.direction(metric)
    if bias is not None:
        return bias
    for suffix, higher in SUFFIXES:
        if metric.endswith(f"_{suffix}") and len(metric) > len(suffix) + 1:
            return higher
    return True if _PASS_AT.match(metric) else None


def metrics_of(records: Iterable[Mapping[str, Any]]) -> list[str]:
    """The generation metrics the records report, in first-seen order."""
    names: dict[str, None] = {}
    for record in records:
        for key, value in (record.get("metrics") or {}).items():
            if isinstance(value, (int, float)) and direction(key) is not None:
                names[key] = None
    return list(names)


def _scores(arrays: Mapping[str, Any], metric: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(item ids, per-item score) of ``metric`` from a run's stored arrays, or None."""
    if metric in arrays:
        evaluation = next((metric[: -len(s) - 1] for s, _ in SUFFIXES if metric.endswith(f"_{s}")), None)
        if evaluation and f"{evaluation}_doc_id" in arrays:
            return np.asarray(arrays[f"{evaluation}_doc_id"]), np.asarray(arrays[metric], np.float64)
    match = _PASS_AT.match(metric)
    if match and f"{match['eval']}_passed" in arrays and f"{match['eval']}_problem" in arrays:
        passed, k = np.asarray(arrays[f"{match['eval']}_passed"]), int(match["k"])
        if passed.ndim != 2 or passed.shape[1] < k:
            return None
        n = passed.shape[1]
        per_problem = np.array([pass_at_k(n, int(c), k) for c in passed.sum(axis=1)])
        return np.asarray(arrays[f"{match['eval']}_problem"]), per_problem
    return None


def _mean(scores: np.ndarray, _labels: np.ndarray) -> float:
    return float(scores[:, 0].mean())


def _calibration(arrays: Mapping[str, Any], metric: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(item ids, [choice probabilities | correct]) for ``<eval>_ece``, or None."""
    evaluation = metric[: -len("_ece")]
    keys = (f"{evaluation}_doc_id", f"{evaluation}_probs", f"{evaluation}_acc")
    if not metric.endswith("_ece") or not all(k in arrays for k in keys):
        return None
    probs, correct = np.asarray(arrays[keys[1]], np.float64), np.asarray(arrays[keys[2]], np.float64)
    return np.asarray(arrays[keys[0]]), np.column_stack([probs, correct])


def _ece(augmented: np.ndarray, _labels: np.ndarray) -> float:
    """ECE from ``[probs | correct]``: a stand-in label that is the argmax when right, another choice when not."""
    probs, correct = augmented[:, :-1], augmented[:, -1] == 1.0
    top = probs.argmax(axis=1)
    labels = np.where(correct, top, (top + 1) % probs.shape[1])
    return expected_calibration_error(probs / probs.sum(axis=1, keepdims=True), labels, n_bins=ECE_BINS)


def item_tests(base: Mapping[str, Any], new: Mapping[str, Any], metrics: Iterable[str], *, where: str,
               seed: int = 0, n_resamples: int = 1000) -> dict[str, TestResult]:
    """Per-item paired tests of two generation runs, one result per metric both sides stored per item.

    Raises:
        ValueError: If the two runs scored a metric on different items (the message names ``where``).
    """
    out = {}
    for metric in metrics:
        probe = compare_bias.item_test(base, new, metric, where=where, seed=seed, n_resamples=n_resamples)
        if probe is not None:  # a bias probe's metric: its items resampled
            out[metric] = probe
            continue
        cal_b, cal_n = _calibration(base, metric), _calibration(new, metric)
        if cal_b is not None and cal_n is not None:
            (ib, ab), (i_n, an) = cal_b, cal_n
            order_b, order_n = _paired(ib, i_n, where, metric)
            out[metric] = paired_bootstrap(_ece, np.zeros(order_b.size, np.int64), ab[order_b], an[order_n],
                                           n_resamples=n_resamples, seed=seed)
            continue
        b, n = _scores(base, metric), _scores(new, metric)
        if b is None or n is None:
            continue
        order_b, order_n = _paired(b[0], n[0], where, metric)
        sb, sn = b[1][order_b], n[1][order_n]
        boot = paired_bootstrap(_mean, np.zeros(sb.size, np.int64), sb[:, None], sn[:, None],
                                n_resamples=n_resamples, seed=seed)
        if np.isin(sb, (0.0, 1.0)).all() and np.isin(sn, (0.0, 1.0)).all():
            exact = mcnemar_test(sb == 1.0, sn == 1.0)
            boot = TestResult(boot.delta, boot.ci_low, boot.ci_high, exact.p_value, exact.test)
        out[metric] = boot
    return out


def _paired(ids_base: np.ndarray, ids_new: np.ndarray, where: str, metric: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        return pair_items(ids_base, ids_new)
    except ValueError as err:
        raise ValueError(f"{where}: {metric}: {err}") from None
