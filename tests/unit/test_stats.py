"""Tests for bench.results.stats against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench.metrics.calibration import expected_calibration_error, negative_log_likelihood
from bench.results.stats import (
    bootstrap_interval,
    mcnemar_p_value,
    mcnemar_test,
    pair_items,
    paired_bootstrap,
    prediction_test,
    summarize_seeds,
    t_interval,
    welch_test,
)

T_975_2 = 4.302653  # t_{0.975, df=2}, from a t table


def argmax_accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(probs.argmax(axis=1) == labels))


# --- seed aggregates -------------------------------------------------------------------------

def test_t_interval_hand_example() -> None:
    # [0.90, 0.92, 0.94]: mean 0.92, s² = (0.02² + 0 + 0.02²) / 2 = 0.0004, s = 0.02;
    # half-width = 4.302653 · 0.02 / √3 = 0.0860531 / 1.7320508 = 0.0496828
    low, high = t_interval([0.90, 0.92, 0.94])
    assert (low + high) / 2 == pytest.approx(0.92)
    assert (high - low) / 2 == pytest.approx(0.0496828, abs=1e-6)
    summary = summarize_seeds([0.90, 0.92, 0.94])
    assert (summary.n, summary.mean, summary.std) == (3, pytest.approx(0.92), pytest.approx(0.02))
    assert (summary.ci_low, summary.ci_high) == (low, high)


def test_fewer_than_two_seeds_have_no_interval() -> None:
    one = summarize_seeds([0.9])
    assert one.n == 1 and one.mean == 0.9
    assert math.isnan(one.std) and math.isnan(one.ci_low) and math.isnan(one.ci_high)
    none = summarize_seeds([math.nan])  # a run that did not report the metric
    assert none.n == 0 and math.isnan(none.mean)
    assert all(math.isnan(v) for v in t_interval([]) + bootstrap_interval([1.0]))


def test_bootstrap_interval_is_seeded_and_inside_the_range() -> None:
    values = [0.90, 0.92, 0.94, 0.91]
    first = summarize_seeds(values, interval="bootstrap", seed=3)
    assert first == summarize_seeds(values, interval="bootstrap", seed=3)
    # a percentile interval of resampled means cannot leave [min, max]
    assert 0.90 <= first.ci_low < first.mean < first.ci_high <= 0.94
    with pytest.raises(ValueError, match="unknown interval"):
        summarize_seeds(values, interval="normal")


# --- seed-level tests --------------------------------------------------------------------

def test_welch_hand_example() -> None:
    # baseline [0.90, 0.92, 0.94]: mean 0.92, s² = 0.0004; new [0.80, 0.84]: mean 0.82, s² = 0.0008
    # se² = 0.0004/3 + 0.0008/2 = 0.000133333 + 0.0004 = 0.000533333, se = 0.0230940
    # df = se⁴ / ((0.000133333)²/2 + (0.0004)²/1) = 2.844444e-7 / (8.888889e-9 + 1.6e-7) = 1.684211
    # t = -0.10 / 0.0230940 = -4.330127
    result = welch_test([0.90, 0.92, 0.94], [0.80, 0.84])
    assert result.delta == pytest.approx(-0.10)
    from scipy import stats as st

    df = 1.684211
    assert result.p_value == pytest.approx(2 * st.t.sf(4.330127, df), rel=1e-5)
    half = st.t.ppf(0.975, df) * 0.0230940
    assert (result.ci_low, result.ci_high) == (pytest.approx(-0.10 - half, rel=1e-5),
                                               pytest.approx(-0.10 + half, rel=1e-5))
    # the same p as scipy's own Welch test
    assert result.p_value == pytest.approx(st.ttest_ind([0.80, 0.84], [0.90, 0.92, 0.94],
                                                        equal_var=False).pvalue)


def test_prediction_test_hand_example() -> None:
    # reference [0.90, 0.92, 0.94], new run 0.87: se = 0.02·√(1 + 1/3) = 0.0230940,
    # t = -0.05 / 0.0230940 = -2.165064 with df = 2 → p = 0.162791 (t table / scipy)
    result = prediction_test([0.90, 0.92, 0.94], 0.87)
    assert result.delta == pytest.approx(-0.05)
    assert result.p_value == pytest.approx(0.162791, abs=1e-5)
    assert result.ci_high - result.delta == pytest.approx(T_975_2 * 0.0230940, rel=1e-5)
    flipped = prediction_test([0.90, 0.92, 0.94], 0.87, single_is_new=False)
    assert flipped.delta == pytest.approx(0.05) and flipped.p_value == pytest.approx(result.p_value)


def test_zero_spread_is_certain() -> None:
    assert welch_test([0.9, 0.9], [0.9, 0.9]).p_value == 1.0
    result = welch_test([0.9, 0.9], [0.8, 0.8])
    assert result.p_value == 0.0 and result.ci_low == result.ci_high == pytest.approx(-0.1)
    with pytest.raises(ValueError, match="two or more"):
        welch_test([0.9], [0.8, 0.7])


# --- McNemar -------------------------------------------------------------------------------

def test_mcnemar_exact_hand_example() -> None:
    # b=1, c=7: n = 8, P(X <= 1) = (C(8,0) + C(8,1)) / 2^8 = 9/256 = 0.03515625, p = 2 · that
    assert mcnemar_p_value(1, 7) == (pytest.approx(0.0703125), "exact")
    assert mcnemar_p_value(7, 1)[0] == pytest.approx(0.0703125)
    assert mcnemar_p_value(0, 0) == (1.0, "exact")
    assert mcnemar_p_value(3, 3)[0] == 1.0  # capped at 1


def test_mcnemar_chi_square_hand_example() -> None:
    # b=10, c=30: b+c = 40 >= 25 → (|10-30| - 1)² / 40 = 361/40 = 9.025;
    # chi-square(1) tail = erfc(√(9.025/2)) = erfc(2.124265) = 0.0026631
    p, kind = mcnemar_p_value(10, 30)
    assert kind == "chi2" and p == pytest.approx(0.0026631, rel=1e-4)


def test_mcnemar_from_correctness_vectors() -> None:
    base = np.array([True] * 5 + [True] * 1 + [False] * 7 + [False] * 3)  # 5 both, b=1, c=7, 3 neither
    new = np.array([True] * 5 + [False] * 1 + [True] * 7 + [False] * 3)
    result = mcnemar_test(base, new)
    assert result.delta == pytest.approx((7 - 1) / 16)
    assert result.p_value == pytest.approx(0.0703125) and result.test == "mcnemar-exact"


# --- paired bootstrap -------------------------------------------------------------------

def predictions(seed: int, n: int = 200, k: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.dirichlet(np.ones(k), size=n), rng.integers(0, k, size=n)


def test_paired_bootstrap_identical_predictions() -> None:
    probs, labels = predictions(0)
    for metric in (argmax_accuracy, negative_log_likelihood,
                   lambda p, y: expected_calibration_error(p, y, n_bins=15)):
        result = paired_bootstrap(metric, labels, probs, probs, n_resamples=200)
        assert (result.delta, result.ci_low, result.ci_high, result.p_value) == (0.0, 0.0, 0.0, 1.0)


def test_paired_bootstrap_clearly_better_model() -> None:
    probs, labels = predictions(1)
    better = np.full_like(probs, 0.05)
    better[np.arange(labels.size), labels] = 0.9  # right on every item, confident
    result = paired_bootstrap(argmax_accuracy, labels, probs, better, n_resamples=500)
    assert result.delta > 0.5 and result.ci_low > 0 and result.p_value < 0.05
    nll = paired_bootstrap(negative_log_likelihood, labels, probs, better, n_resamples=500)
    assert nll.delta < 0 and nll.ci_high < 0 and nll.p_value < 0.05
    # with 500 resamples all on one side, p is the add-one floor 2/501
    assert result.p_value == pytest.approx(2 / 501)


def test_paired_bootstrap_is_deterministic_under_a_seed() -> None:
    probs, labels = predictions(2)
    other, _ = predictions(3)
    runs = [paired_bootstrap(negative_log_likelihood, labels, probs, other, n_resamples=100, seed=s)
            for s in (7, 7, 8)]
    assert runs[0] == runs[1] and runs[0] != runs[2]


# --- pairing items -------------------------------------------------------------------------

def test_pair_items_aligns_by_id() -> None:
    a, b = pair_items([3, 1, 2], [2, 3, 1])
    assert np.array_equal(np.array([3, 1, 2])[a], np.array([2, 3, 1])[b])
    with pytest.raises(ValueError, match="different items"):
        pair_items([1, 2, 3], [1, 2, 4])
    with pytest.raises(ValueError, match="repeat"):
        pair_items([1, 1, 2], [1, 2, 3])
