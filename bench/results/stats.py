"""Statistics for reading benchmark differences: seed aggregates and significance tests.

Two kinds of noise are handled separately, because they answer different questions:

- **Seed noise** (different seeds give different models): :func:`summarize_seeds` (mean, sample
  std and a 95 % interval of the mean), :func:`welch_test` (two sets of seeds) and
  :func:`prediction_test` (one new run against a set of seeds).
- **Item noise** (a finite test set): :func:`mcnemar_test` and :func:`paired_bootstrap`
  compare two models' predictions on the same items. Their error bars say nothing about how
  another seed would score.

Every test returns a :class:`TestResult` whose ``delta`` is ``new - baseline``. All functions are
pure (numpy/scipy); the random ones take a ``seed`` and are deterministic under it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import stats as st

FloatArray = npt.NDArray[np.float64]
#: ``metric(probs [n, K], labels [n]) -> float``: a metric computed from per-item predictions.
ItemMetric = Callable[[FloatArray, npt.NDArray[np.int64]], float]

#: Below this many discordant items McNemar uses the exact binomial test; at or above it the
#: chi-square approximation with continuity correction (Edwards 1948). At b+c = 25 the normal
#: approximation to Binomial(25, 1/2) is already close (np(1-p) = 6.25 > 5).
MCNEMAR_EXACT_BELOW = 25
INTERVALS = ("t", "bootstrap")


@dataclass(frozen=True)
class SeedSummary:
    """Mean, spread and interval of one metric over seeds.

    Attributes:
        n: Number of values (seeds).
        mean: Their mean (NaN when ``n == 0``).
        std: Sample standard deviation, ddof=1 (NaN when ``n < 2``).
        ci_low: Lower end of the interval of the mean (NaN when ``n < 2``).
        ci_high: Upper end of the interval of the mean (NaN when ``n < 2``).
    """

    n: int
    mean: float
    std: float
    ci_low: float
    ci_high: float


@dataclass(frozen=True)
class TestResult:
    """The outcome of comparing a baseline with a new result.

    Attributes:
        delta: ``new - baseline``.
        ci_low: Lower end of the interval of ``delta``.
        ci_high: Upper end of the interval of ``delta``.
        p_value: Two-sided p-value of ``delta == 0`` (NaN when no test applies).
        test: Name of the test that produced it (``welch``, ``prediction``, ``mcnemar``, ...).
    """

    __test__ = False  # not a pytest class, despite the name

    delta: float
    ci_low: float
    ci_high: float
    p_value: float
    test: str


def _values(values: Sequence[float] | FloatArray) -> FloatArray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"expected a 1-D sequence of values, got shape {array.shape}")
    return array


def _t_quantile(confidence: float, df: float) -> float:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence!r}")
    return float(st.t.ppf(0.5 + confidence / 2, df))


def t_interval(values: Sequence[float] | FloatArray, confidence: float = 0.95) -> tuple[float, float]:
    """Student-t interval of the mean: ``mean ± t_{(1+c)/2, n-1} · s / √n``.

    Args:
        values: One value per seed.
        confidence: Coverage of the interval.

    Returns:
        ``(low, high)``; ``(nan, nan)`` for fewer than two values (no spread to scale by).
    """
    x = _values(values)
    if x.size < 2:
        return math.nan, math.nan
    half = _t_quantile(confidence, x.size - 1) * float(x.std(ddof=1)) / math.sqrt(x.size)
    mean = float(x.mean())
    return mean - half, mean + half


def bootstrap_interval(values: Sequence[float] | FloatArray, *, confidence: float = 0.95,
                       n_resamples: int = 10_000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean, resampling seeds with replacement.

    With a handful of seeds this interval is too narrow (it cannot be wider than the range
    of the values); the t-interval is the default for that reason.

    Returns:
        ``(low, high)``; ``(nan, nan)`` for fewer than two values.
    """
    x = _values(values)
    if x.size < 2:
        return math.nan, math.nan
    _t_quantile(confidence, 1)  # validates confidence
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(n_resamples, x.size))].mean(axis=1)
    low, high = np.quantile(means, [(1 - confidence) / 2, (1 + confidence) / 2])
    return float(low), float(high)


def summarize_seeds(values: Sequence[float] | FloatArray, *, interval: str = "t", confidence: float = 0.95,
                    seed: int = 0) -> SeedSummary:
    """Mean, sample std (ddof=1) and interval of the mean over seeds.

    Args:
        values: One value per seed; NaN values are dropped (a run that did not report it).
        interval: ``"t"`` (Student-t, the default) or ``"bootstrap"`` (percentile, seeded).
        confidence: Coverage of the interval.
        seed: Random seed of the bootstrap.

    Raises:
        ValueError: On an unknown ``interval``.
    """
    if interval not in INTERVALS:
        raise ValueError(f"unknown interval {interval!r}; use one of {INTERVALS}")
    x = _values(values)
    x = x[~np.isnan(x)]
    if x.size == 0:
        return SeedSummary(0, math.nan, math.nan, math.nan, math.nan)
    with np.errstate(invalid="ignore"):  # inf values give a NaN std
        std = float(x.std(ddof=1)) if x.size > 1 else math.nan
    if interval == "t":
        low, high = t_interval(x, confidence)
    else:
        low, high = bootstrap_interval(x, confidence=confidence, seed=seed)
    return SeedSummary(int(x.size), float(x.mean()), std, low, high)


def _t_result(delta: float, se: float, df: float, confidence: float, test: str) -> TestResult:
    """Two-sided t-test of ``delta / se`` with ``df`` degrees of freedom, and its interval."""
    if se == 0:  # no spread at all: any difference is certain, none is no evidence
        return TestResult(delta, delta, delta, 1.0 if delta == 0 else 0.0, test)
    half = _t_quantile(confidence, df) * se
    p = 2 * float(st.t.sf(abs(delta) / se, df))
    return TestResult(delta, delta - half, delta + half, min(p, 1.0), test)


def welch_test(baseline: Sequence[float] | FloatArray, new: Sequence[float] | FloatArray, *,
               confidence: float = 0.95) -> TestResult:
    """Welch's unequal-variance t-test of two sets of seed-level values.

    ``se = √(s_b²/n_b + s_n²/n_n)`` and Welch–Satterthwaite degrees of freedom
    ``df = se⁴ / ((s_b²/n_b)²/(n_b-1) + (s_n²/n_n)²/(n_n-1))``.

    Raises:
        ValueError: If either side has fewer than two values.
    """
    b, n = _values(baseline), _values(new)
    if b.size < 2 or n.size < 2:
        raise ValueError(f"Welch's test needs two or more values per side, got {b.size} and {n.size}")
    vb, vn = float(b.var(ddof=1)) / b.size, float(n.var(ddof=1)) / n.size
    se = math.sqrt(vb + vn)
    df = (vb + vn) ** 2 / (vb**2 / (b.size - 1) + vn**2 / (n.size - 1)) if se > 0 else 1.0
    return _t_result(float(n.mean() - b.mean()), se, df, confidence, "welch")


def prediction_test(reference: Sequence[float] | FloatArray, single: float, *, single_is_new: bool = True,
                    confidence: float = 0.95) -> TestResult:
    """Is one run consistent with a set of seeds? A prediction-interval t-test.

    A new draw from the reference distribution differs from the reference mean with standard
    error ``s·√(1 + 1/n)``, so ``t = (x - mean) / (s·√(1 + 1/n))`` with ``df = n - 1``.

    Args:
        reference: Seed-level values of the side with two or more seeds.
        single: The one value of the other side.
        single_is_new: True when ``single`` is the new side (delta = single - mean), False
            when it is the baseline (delta = mean - single).
        confidence: Coverage of the interval of the delta.

    Raises:
        ValueError: If ``reference`` has fewer than two values.
    """
    r = _values(reference)
    if r.size < 2:
        raise ValueError(f"the prediction test needs two or more reference values, got {r.size}")
    delta = float(single - r.mean()) if single_is_new else float(r.mean() - single)
    se = float(r.std(ddof=1)) * math.sqrt(1 + 1 / r.size)
    return _t_result(delta, se, r.size - 1, confidence, "prediction")


def mcnemar_p_value(b: int, c: int) -> tuple[float, str]:
    """Two-sided McNemar p-value from the discordant counts.

    ``b`` counts items only the baseline gets right, ``c`` items only the new model gets
    right. Under the null each discordant item is a fair coin, so with ``b + c <
    MCNEMAR_EXACT_BELOW`` the exact test is ``p = min(1, 2·P(X ≤ min(b, c)))``,
    ``X ~ Binomial(b + c, 1/2)``; otherwise ``(max(|b - c| - 1, 0))² / (b + c)`` is referred to
    chi-square with one degree of freedom (continuity-corrected).

    Returns:
        ``(p, "exact" | "chi2")``.
    """
    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must be >= 0, got b={b}, c={c}")
    n = b + c
    if n == 0:  # the models agree on every item: no evidence of a difference
        return 1.0, "exact"
    if n < MCNEMAR_EXACT_BELOW:
        return min(1.0, 2 * float(st.binom.cdf(min(b, c), n, 0.5))), "exact"
    statistic = max(abs(b - c) - 1, 0) ** 2 / n
    return float(st.chi2.sf(statistic, 1)), "chi2"


def mcnemar_test(correct_baseline: npt.ArrayLike, correct_new: npt.ArrayLike) -> TestResult:
    """McNemar's test on paired per-item correctness.

    Args:
        correct_baseline: Bool per item, the baseline's prediction is right.
        correct_new: Bool per item (same items, same order), the new prediction is right.

    Returns:
        ``delta`` is the accuracy difference ``(c - b) / n``; the interval is not computed
        here (NaN): McNemar is a test, use :func:`paired_bootstrap` for an interval.
    """
    a = np.asarray(correct_baseline, dtype=bool)
    z = np.asarray(correct_new, dtype=bool)
    if a.shape != z.shape or a.ndim != 1:
        raise ValueError(f"expected two 1-D arrays of equal length, got {a.shape} and {z.shape}")
    b, c = int(np.sum(a & ~z)), int(np.sum(~a & z))
    p, kind = mcnemar_p_value(b, c)
    delta = (c - b) / a.size if a.size else math.nan
    return TestResult(delta, math.nan, math.nan, p, f"mcnemar-{kind}")


def paired_bootstrap(metric: ItemMetric, labels: npt.ArrayLike, probs_baseline: npt.ArrayLike,
                     probs_new: npt.ArrayLike, *, n_resamples: int = 1000, confidence: float = 0.95,
                     seed: int = 0) -> TestResult:
    """Paired bootstrap over test items of ``metric(new) - metric(baseline)``.

    Each resample draws n items with replacement and scores both models on the same draw.
    The interval is the percentile interval of the resampled deltas; the p-value is the one
    that matches it, ``p = min(1, 2·min(P*(δ ≤ 0), P*(δ ≥ 0)))`` with the add-one estimate
    ``P* = (1 + #) / (1 + n_resamples)``, i.e. the smallest level whose percentile interval
    excludes 0. Identical predictions give ``δ = 0`` everywhere and p = 1.

    Args:
        metric: ``metric(probs, labels) -> float`` (e.g. ECE, NLL, accuracy of the argmax).
        labels: True class per item, shape ``[n]``.
        probs_baseline: Baseline class probabilities, shape ``[n, K]``.
        probs_new: New class probabilities on the same items in the same order.
        n_resamples: Number of bootstrap resamples.
        confidence: Coverage of the interval.
        seed: Random seed; the result is deterministic under it.
    """
    y = np.asarray(labels, dtype=np.int64)
    pa = np.asarray(probs_baseline, dtype=np.float64)
    pb = np.asarray(probs_new, dtype=np.float64)
    if pa.shape != pb.shape or pa.ndim != 2 or pa.shape[0] != y.shape[0]:
        raise ValueError(f"shapes disagree: labels {y.shape}, baseline {pa.shape}, new {pb.shape}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    _t_quantile(confidence, 1)  # validates confidence
    delta = metric(pb, y) - metric(pa, y)
    rng = np.random.default_rng(seed)
    deltas = np.empty(n_resamples)
    for i in range(n_resamples):
        idx = rng.integers(0, y.size, size=y.size)
        deltas[i] = metric(pb[idx], y[idx]) - metric(pa[idx], y[idx])
    low, high = np.quantile(deltas, [(1 - confidence) / 2, (1 + confidence) / 2])
    below = (1 + int(np.sum(deltas <= 0))) / (1 + n_resamples)
    above = (1 + int(np.sum(deltas >= 0))) / (1 + n_resamples)
    return TestResult(float(delta), float(low), float(high), min(1.0, 2 * min(below, above)), "bootstrap")


def pair_items(ids_baseline: npt.ArrayLike, ids_new: npt.ArrayLike) -> tuple[npt.NDArray[np.intp],
                                                                           npt.NDArray[np.intp]]:
    """Index arrays that put two prediction sets in a common item order (sorted by id).

    Raises:
        ValueError: If an id repeats or the two sides do not hold the same set of items.
    """
    a, b = np.asarray(ids_baseline), np.asarray(ids_new)
    for name, ids in (("baseline", a), ("new", b)):
        if np.unique(ids).size != ids.size:
            raise ValueError(f"the {name} predictions repeat item ids")
    order_a, order_b = np.argsort(a, kind="stable"), np.argsort(b, kind="stable")
    if a.size != b.size or not np.array_equal(a[order_a], b[order_b]):
        only_a = np.setdiff1d(a, b).size
        only_b = np.setdiff1d(b, a).size
        raise ValueError(f"the two sides were evaluated on different items ({a.size} vs {b.size} items; "
                         f"{only_a} only in the baseline, {only_b} only in the new)")
    return order_a, order_b
