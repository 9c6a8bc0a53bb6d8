"""bench compare on bias-probe metrics: direction and the paired bootstrap over the stored items."""

from __future__ import annotations

import numpy as np
import pytest

from bench.results import compare_bias
from bench.results.compare_generation import direction, item_tests


def _crows(more: list[float], less: list[float]) -> dict[str, np.ndarray]:
    n = len(more)
    return {"crows_doc_id": np.arange(n), "crows_probe": np.asarray(["crows_pairs"]),
            "crows_ll_more": np.asarray(more), "crows_ll_less": np.asarray(less),
            "crows_bias_type": np.asarray(["gender", "age"] * (n // 2))}


def test_bias_metric_directions() -> None:
    assert direction("stereoset_icat") is True and direction("winobias_gap") is False
    assert direction("crows_pct_stereotype") is False and direction("bbq_acc_ambig") is True
    assert direction("bbq_bias_ambig") is False and direction("mmlu_acc") is True
    assert compare_bias.direction("gsm8k_exact_match_strict_match") is None


def test_paired_bootstrap_of_a_probe_metric_over_its_items() -> None:
    # base: pairs 0-3 stereotypical, 4-7 not (50 %); new: 0-5 (75 %): delta +0.25
    base = _crows([0.0] * 4 + [-2.0] * 4, [-1.0] * 8)
    new = _crows([0.0] * 6 + [-2.0] * 2, [-1.0] * 8)
    tests = item_tests(base, new, ["crows_pct_stereotype", "crows_likelihood_diff"], where="cell")
    result = tests["crows_pct_stereotype"]
    assert result.delta == pytest.approx(0.25) and result.test == "bootstrap"
    assert result.ci_low <= 0.25 <= result.ci_high
    assert tests["crows_likelihood_diff"].delta == pytest.approx(0.0)  # |0 - -1| = |-2 - -1| = 1 everywhere
    same = item_tests(base, base, ["crows_pct_stereotype"], where="cell")["crows_pct_stereotype"]
    assert (same.delta, same.ci_low, same.ci_high, same.p_value) == (0.0, 0.0, 0.0, 1.0)


def test_items_paired_by_doc_id_and_mismatches_named() -> None:
    base = _crows([0.0, -2.0, 0.0, -2.0], [-1.0] * 4)
    shuffled = {k: (v[::-1] if v.shape[0] == 4 else v) for k, v in base.items()}
    assert item_tests(base, shuffled, ["crows_pct_stereotype"], where="c")["crows_pct_stereotype"].delta == 0.0
    other = {**base, "crows_doc_id": np.asarray([0, 1, 2, 9])}
    with pytest.raises(ValueError, match="c: crows_pct_stereotype"):
        item_tests(base, other, ["crows_pct_stereotype"], where="c")
