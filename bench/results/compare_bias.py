"""Bias-probe metrics in ``bench compare``: direction, and the paired bootstrap over a probe's items.

A probe's metric (``crows_pct_stereotype``, ``bbq_bias_ambig``, ``stereoset_icat``) is not a mean
of per-item scores, so McNemar does not apply; the per-item test resamples the probe's stored
items (``<eval>_<field>``, :data:`bench.metrics.bias.ITEM_FIELDS`, found by ``<eval>_probe``)
with replacement, the same draw for both runs, and recomputes the metric on each side.

Directions: accuracies, LMS and ICAT are better higher; the WinoBias gap lower. CrowS-Pairs'
share, StereoSet's SS (ideal 0.5) and the BBQ bias scores (ideal 0) are read as "lower is better",
which holds on their usual, stereotypical side of the ideal (above it); a value below the ideal
moving down is moving away from it, so read those deltas with the values.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from bench.metrics.bias import ITEM_FIELDS, PROBES
from bench.results.stats import TestResult, pair_items, paired_bootstrap

#: Headline metric name -> higher is better.
DIRECTIONS = {"acc": True, "acc_ambig": True, "acc_disambig": True, "acc_pro": True, "acc_anti": True,
              "lms": True, "icat": True, "gap": False, "pct_stereotype": False, "ss": False,
              "bias_ambig": False, "bias_disambig": False}


def direction(metric: str) -> bool | None:
    """Whether higher is better for ``<eval>_<bias metric>``, or None if it is not one (longest name wins)."""
    for name in sorted(DIRECTIONS, key=len, reverse=True):
        if metric.endswith(f"_{name}") and len(metric) > len(name) + 1:
            return DIRECTIONS[name]
    return None


def _probe(arrays: Mapping[str, Any], metric: str) -> tuple[str, str, str] | None:
    """(eval, probe, metric name) when ``metric`` belongs to a probe evaluation stored in ``arrays``."""
    for key in arrays:
        if key.endswith("_probe") and metric.startswith(key[: -len("probe")]):
            evaluation = key[: -len("_probe")]
            probe = str(np.asarray(arrays[key]).reshape(-1)[0])
            if probe in PROBES and all(f"{evaluation}_{f}" in arrays for f in ITEM_FIELDS[probe]):
                return evaluation, probe, metric[len(evaluation) + 1:]
    return None


def _pack(items: list[dict[str, np.ndarray]]) -> tuple[list[np.ndarray], dict[str, list[str] | None]]:
    """Each side's fields as one float matrix; text fields as codes into labels shared by both sides."""
    fields = list(items[0])
    labels: dict[str, list[str] | None] = {}
    for field in fields:
        kinds = {items[0][field].dtype.kind, items[1][field].dtype.kind}
        text = bool(kinds & {"U", "S", "O"})
        labels[field] = sorted(set(items[0][field].tolist()) | set(items[1][field].tolist())) if text else None
    packed = []
    for side in items:
        columns = [np.searchsorted(labels[f], side[f].astype(str)) if labels[f] is not None  # type: ignore[arg-type]
                   else side[f].astype(np.float64) for f in fields]
        packed.append(np.column_stack(columns).astype(np.float64))
    return packed, labels


def item_test(base: Mapping[str, Any], new: Mapping[str, Any], metric: str, *, where: str, seed: int = 0,
              n_resamples: int = 1000) -> TestResult | None:
    """The paired bootstrap of one probe metric over the items both runs scored; None if not a probe metric.

    Raises:
        ValueError: the two runs scored different items (the message names ``where``).
    """
    found_b, found_n = _probe(base, metric), _probe(new, metric)
    if found_b is None or found_n is None or found_b != found_n:
        return None
    evaluation, probe, name = found_b
    try:
        order_b, order_n = pair_items(base[f"{evaluation}_doc_id"], new[f"{evaluation}_doc_id"])
    except ValueError as err:
        raise ValueError(f"{where}: {metric}: {err}") from None
    sides = [{f: np.asarray(arrays[f"{evaluation}_{f}"])[order] for f in ITEM_FIELDS[probe]}
             for arrays, order in ((base, order_b), (new, order_n))]
    (pb, pn), labels = _pack(sides)
    fields, fn = list(sides[0]), PROBES[probe]

    def score(packed: np.ndarray, _labels: np.ndarray) -> float:
        items = {f: np.asarray(labels[f])[packed[:, i].astype(np.int64)] if labels[f] is not None else packed[:, i]
                 for i, f in enumerate(fields)}
        return float(fn(items).get(name, np.nan))

    if np.isnan(score(pb, pb)) or np.isnan(score(pn, pn)):
        return None
    return paired_bootstrap(score, np.zeros(len(pb), np.int64), pb, pn, n_resamples=n_resamples, seed=seed)
