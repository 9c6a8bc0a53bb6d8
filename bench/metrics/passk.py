"""pass@k for code generation: the unbiased estimator of Chen et al. (2021).

From "Evaluating Large Language Models Trained on Code", arXiv:2107.03374, section 2.1. With n
samples for a problem of which c pass, pass@k is the chance that at least one of k samples
drawn without replacement from the n passes:

    pass@k = 1 - C(n - c, k) / C(n, k)

The binomials overflow for realistic n, so (as in the paper's numpy snippet) the ratio is
computed as a product:

    C(n - c, k) / C(n, k) = prod_{i = n - c + 1}^{n} (1 - k / i)
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from bench.metrics import register_metric


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one problem with ``n`` samples of which ``c`` pass.

    Raises:
        ValueError: Unless ``0 <= c <= n`` and ``1 <= k <= n``; with fewer than k samples
            pass@k cannot be estimated.
    """
    if n < 1 or not 0 <= c <= n:
        raise ValueError(f"need n >= 1 and 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"pass@{k} needs 1 <= k <= n, got k={k} with n={n} samples")
    if n - c < k:
        # Fewer than k failing samples: every draw of k holds a passing one.
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def mean_pass_at_k(num_samples: npt.ArrayLike, num_correct: npt.ArrayLike, k: int) -> float:
    """Mean over problems of :func:`pass_at_k`.

    Args:
        num_samples: Samples per problem, shape ``[problems]``.
        num_correct: Passing samples per problem, same shape.
        k: Draws per problem.

    Returns:
        The mean pass@k in [0, 1]; nan for no problems.

    Raises:
        ValueError: On mismatched shapes or an invalid (n, c, k) for any problem.
    """
    n = np.asarray(num_samples, dtype=np.int64).reshape(-1)
    c = np.asarray(num_correct, dtype=np.int64).reshape(-1)
    if n.shape != c.shape:
        raise ValueError(f"num_samples and num_correct must have the same length, got {n.size} and {c.size}")
    if n.size == 0:
        # No problems: the mean is undefined; nan keeps it out of later averages.
        return float("nan")
    return float(np.mean([pass_at_k(int(ni), int(ci), k) for ni, ci in zip(n, c, strict=True)]))


@register_metric("pass_at_1", higher_is_better=True)
def pass_at_1(num_samples: npt.ArrayLike, num_correct: npt.ArrayLike) -> float:
    """Mean pass@1: the expected fraction of problems solved by one sample."""
    return mean_pass_at_k(num_samples, num_correct, 1)


@register_metric("pass_at_10", higher_is_better=True)
def pass_at_10(num_samples: npt.ArrayLike, num_correct: npt.ArrayLike) -> float:
    """Mean pass@10: the expected fraction of problems solved by at least one of ten samples."""
    return mean_pass_at_k(num_samples, num_correct, 10)
