"""Unit tests for bench.metrics.passk: hand-computed pass@k values."""

from __future__ import annotations

import math

import pytest

from bench.metrics import get_metric, higher_is_better
from bench.metrics.passk import mean_pass_at_k, pass_at_k


@pytest.mark.parametrize(
    ("n", "c", "k", "expected"),
    [
        # 1 - C(3,1)/C(5,1) = 1 - 3/5 = 0.4 (pass@1 is just c/n)
        (5, 2, 1, 0.4),
        # 1 - C(3,2)/C(5,2) = 1 - 3/10 = 0.7
        (5, 2, 2, 0.7),
        # 1 - C(3,3)/C(5,3) = 1 - 1/10 = 0.9
        (5, 2, 3, 0.9),
        # n - c = 3 < k = 4: every draw of 4 holds a passing sample
        (5, 2, 4, 1.0),
        # no passing sample: 0 whatever k
        (10, 0, 1, 0.0),
        (10, 0, 10, 0.0),
        # all passing: 1
        (10, 10, 1, 1.0),
        (10, 10, 10, 1.0),
        # 1 - C(7,5)/C(10,5) = 1 - 21/252 = 11/12
        (10, 3, 5, 11 / 12),
    ],
)
def test_pass_at_k_hand_computed(n: int, c: int, k: int, expected: float) -> None:
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_matches_binomials_at_large_n() -> None:
    # The product form stays exact where the binomials would be huge integers.
    n, c, k = 200, 37, 10
    assert pass_at_k(n, c, k) == pytest.approx(1 - math.comb(n - c, k) / math.comb(n, k), rel=1e-12)


@pytest.mark.parametrize(("n", "c", "k"), [(5, 2, 6), (5, 2, 0), (5, 6, 1), (5, -1, 1), (0, 0, 1)])
def test_pass_at_k_invalid_raises(n: int, c: int, k: int) -> None:
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


def test_mean_pass_at_k() -> None:
    # problems (n, c): (5, 2) -> 0.7 at k=2, (5, 0) -> 0, (5, 5) -> 1; mean = 1.7 / 3
    assert mean_pass_at_k([5, 5, 5], [2, 0, 5], 2) == pytest.approx(1.7 / 3)
    assert math.isnan(mean_pass_at_k([], [], 1))
    with pytest.raises(ValueError, match="same length"):
        mean_pass_at_k([5, 5], [1], 1)


def test_registered_metrics() -> None:
    assert get_metric("pass_at_1").fn([5, 4], [2, 1]) == pytest.approx((0.4 + 0.25) / 2)
    assert higher_is_better("pass_at_1") and higher_is_better("pass_at_10")
