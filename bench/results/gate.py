"""The ``bench compare`` gate: ``--fail`` rules and the one-sided, multiplicity-adjusted p-values they use.

A rule ``metric:[+|-]number[pp]`` (:func:`parse_fail`) fails a cell when its delta lies beyond the
limit in the bad direction and the one-sided test of that direction (:func:`one_sided`) is
significant after Holm's adjustment over the gated tests (:func:`holm_adjust`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from bench.errors import BenchError, did_you_mean
from bench.metrics import higher_is_better
from bench.results import compare_generation

COMPARED = ("accuracy", "macro_f1", "ece", "nll", "brier")
#: Metrics on a 0–1 scale: shown in %, deltas in percentage points, ``pp`` thresholds allowed.
PROPORTIONS = ("accuracy", "macro_f1", "ece")
_EPS = 1e-12  # a delta computed as 0.90 - 0.91 must not count as beyond a -1 pp threshold


def is_proportion(metric: str) -> bool:
    """True for metrics on a 0–1 scale (shown in %, ``pp`` thresholds allowed); every generation metric is."""
    return metric in PROPORTIONS or compare_generation.direction(metric) is not None


@dataclass(frozen=True)
class Threshold:
    """A ``--fail`` rule: a delta beyond ``limit`` (in the metric's units) in the bad direction.

    Attributes:
        metric: Metric name, one of ``COMPARED`` or a generation metric (``mmlu_0shot_acc``).
        limit: Signed limit; negative means a decrease is bad (``accuracy:-1pp`` is -0.01).
        text: The spec as written.
    """

    metric: str
    limit: float
    text: str

    def breached(self, delta: float) -> bool:
        """True when ``delta`` lies strictly beyond the limit in its direction."""
        if math.isnan(delta):
            return False
        return delta < self.limit - _EPS if self.limit < 0 else delta > self.limit + _EPS


_SPEC = re.compile(r"(?P<metric>[a-z0-9_]+):(?P<sign>[+-]?)(?P<number>\d+(?:\.\d*)?|\.\d+)(?P<unit>pp)?")


def parse_fail(spec: str) -> Threshold:
    """Parse ``metric:[+|-]number[pp]`` (e.g. ``accuracy:-1pp``, ``ece:+0.01``, ``nll:+0.05``).

    ``pp`` (percentage points) is for 0–1 metrics and is divided by 100. The sign gives the
    bad direction; without one the metric's own bad direction is used (down for accuracy).

    Raises:
        BenchError: On a malformed spec, an unknown metric or ``pp`` on a metric not in 0–1.
    """
    match = _SPEC.fullmatch(spec.strip())
    if match is None:
        hint = "; write 'pp' for percentage points" if "%" in spec else ""
        raise BenchError(f"malformed --fail {spec!r}: expected METRIC:[+|-]NUMBER[pp], "
                         f"e.g. accuracy:-1pp or nll:+0.05{hint}")
    metric, sign, number, unit = match.group("metric", "sign", "number", "unit")
    generation = compare_generation.direction(metric)
    if metric not in COMPARED and generation is None:
        raise BenchError(f"--fail {spec!r}: unknown metric '{metric}'{did_you_mean(metric, COMPARED)} "
                         "(generation metrics: <eval>_acc, <eval>_ece, <eval>_exact_match_strict_match, "
                         "<eval>_pass_at_<k>, ...)")
    if unit and not is_proportion(metric):
        raise BenchError(f"--fail {spec!r}: 'pp' is for 0–1 metrics ({', '.join(PROPORTIONS)}); "
                         f"give {metric} in its own units")
    value = float(number) / (100 if unit else 1)
    higher = generation if generation is not None else higher_is_better(metric)
    bad_is_down = sign == "-" if sign else higher
    return Threshold(metric, -value if bad_is_down else value, spec)


def one_sided(p_two_sided: float, delta: float, *, bad_down: bool) -> float:
    """The one-sided p-value, in the bad direction, of a symmetric two-sided test."""
    towards_bad = delta < 0 if bad_down else delta > 0
    return p_two_sided / 2 if towards_bad else 1 - p_two_sided / 2


def holm_adjust(p_values: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values, in the input order.

    Sorted ascending, the i-th smallest (0-based) of m gets ``max_{j<=i} min(1, (m - j) p_(j))``;
    rejecting where the adjusted p < α controls the family-wise error rate at α.
    """
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted
