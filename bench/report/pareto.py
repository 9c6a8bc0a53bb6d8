"""Pareto front of two-objective points (pure, no plotting)."""

from __future__ import annotations

import math
from collections.abc import Sequence

_SIGNS = {"max": 1.0, "min": -1.0}


def _dominates(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """True when ``a`` is at least as good as ``b`` on both axes and better on one (maximising)."""
    return a[0] >= b[0] and a[1] >= b[1] and (a[0] > b[0] or a[1] > b[1])


def pareto_front(points: Sequence[Sequence[float]], directions: tuple[str, str]) -> list[int]:
    """Returns the indices of the non-dominated points.

    A point is dominated when another point is at least as good on both
    coordinates and strictly better on one. Of several points equal on both
    coordinates only the first (lowest index) is kept. Points with a NaN
    coordinate are never on the front and never dominate. The check is
    quadratic in the number of points, which is fine for leaderboard sizes.

    Args:
        points: (x, y) pairs.
        directions: For x and y, ``"max"`` (higher is better) or ``"min"``.

    Returns:
        Indices into ``points`` of the front, sorted by the first coordinate
        (ascending), ties by index.

    Raises:
        ValueError: On an unknown direction or a point that is not a pair.
    """
    if len(directions) != 2 or any(d not in _SIGNS for d in directions):
        raise ValueError(f"directions must be two of 'max'/'min', got {directions!r}")
    sx, sy = _SIGNS[directions[0]], _SIGNS[directions[1]]
    candidates: list[tuple[int, tuple[float, float]]] = []
    for index, point in enumerate(points):
        if len(point) != 2:
            raise ValueError(f"point {index} is not an (x, y) pair: {point!r}")
        x, y = float(point[0]), float(point[1])
        if not (math.isnan(x) or math.isnan(y)):
            candidates.append((index, (sx * x, sy * y)))
    front = [
        i for i, a in candidates
        if not any(_dominates(b, a) or (b == a and j < i) for j, b in candidates)
    ]
    return sorted(front, key=lambda i: (float(points[i][0]), i))
