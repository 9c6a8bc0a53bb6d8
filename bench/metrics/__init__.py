"""Pure metric functions on numpy arrays, and a small registry that names them.

Importing ``bench.metrics`` imports the :mod:`~bench.metrics.accuracy`,
:mod:`~bench.metrics.calibration`, :mod:`~bench.metrics.detection` and
:mod:`~bench.metrics.passk` submodules, which
register their metrics here. The metric functions themselves are not re-exported at
package level (the submodule ``accuracy`` and the function ``accuracy`` share a name); use
``get_metric(name).fn`` or import them from their submodule.

Nothing in this package may import torch, transformers or model code: metrics see arrays only.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, TypeVar

_F = TypeVar("_F", bound=Callable[..., Any])

_NAME_RE = re.compile(r"[a-z][a-z0-9]*(?:_[a-z0-9]+)*")

# Record keys that are not metric functions but still have a direction (lower is better).
_FIXED_LOWER_IS_BETTER = ("trainable_params", "total_params")
# Efficiency-key suffixes, checked in order: "_per_s" must win over "_s".
_SUFFIX_DIRECTIONS = (("_per_s", True), ("_s", False), ("_gib", False), ("_bytes", False))


@dataclass(frozen=True)
class MetricInfo:
    """A registered metric.

    Attributes:
        name: Registry name (lowercase snake_case).
        higher_is_better: Whether larger values mean a better model.
        unit: Display unit, empty when the metric is a plain ratio or score.
        fn: The metric function.
    """

    name: str
    higher_is_better: bool
    unit: str
    fn: Callable[..., Any]


_REGISTRY: dict[str, MetricInfo] = {}
_DIRECTIONS: dict[str, bool] = {key: False for key in _FIXED_LOWER_IS_BETTER}

METRIC_DIRECTIONS: Mapping[str, bool] = MappingProxyType(_DIRECTIONS)
"""Read-only live view: metric or record key -> higher_is_better (suffix rules not included)."""


def _did_you_mean(name: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(name, candidates, n=3, cutoff=0.6)
    if close:
        return "did you mean " + " or ".join(repr(c) for c in close) + "?"
    return "known: " + ", ".join(sorted(candidates))


def register_metric(
    name: str, *, higher_is_better: bool, unit: str = ""
) -> Callable[[_F], _F]:
    """Return a decorator that registers a metric function under ``name``.

    Args:
        name: Lowercase snake_case name, unique in the registry.
        higher_is_better: Direction of the metric.
        unit: Display unit ("" for unitless).

    Returns:
        A decorator that registers the function and returns it unchanged.

    Raises:
        ValueError: If ``name`` is not lowercase snake_case or is already registered.
    """
    if not _NAME_RE.fullmatch(name):
        raise ValueError(f"metric name {name!r} must be lowercase snake_case, e.g. 'macro_f1'")
    if name in _REGISTRY:
        raise ValueError(f"metric {name!r} is already registered")

    def decorator(fn: _F) -> _F:
        if name in _REGISTRY:  # registered between the call and the decoration
            raise ValueError(f"metric {name!r} is already registered")
        _REGISTRY[name] = MetricInfo(name, higher_is_better, unit, fn)
        _DIRECTIONS[name] = higher_is_better
        return fn

    return decorator


def get_metric(name: str) -> MetricInfo:
    """Look up a registered metric.

    Raises:
        KeyError: If ``name`` is unknown; the message suggests close names.
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        hint = _did_you_mean(name, list(_REGISTRY))
        raise KeyError(f"unknown metric {name!r}; {hint}") from None


def metric_names() -> list[str]:
    """Return the registered metric names, sorted."""
    return sorted(_REGISTRY)


def higher_is_better(name: str) -> bool:
    """Return whether larger values of a metric or result-record key are better.

    Registered metrics use their own direction. Otherwise ``trainable_params`` and
    ``total_params`` are lower-is-better, and efficiency keys are judged by suffix:
    ``*_per_s`` (throughput) is higher-is-better; ``*_s``, ``*_gib`` and ``*_bytes``
    (time and memory) are lower-is-better.

    Raises:
        KeyError: If the direction of ``name`` is unknown; the message suggests close names.
    """
    if name in _DIRECTIONS:
        return _DIRECTIONS[name]
    for suffix, direction in _SUFFIX_DIRECTIONS:
        if name.endswith(suffix) and len(name) > len(suffix):
            return direction
    hint = _did_you_mean(name, list(_DIRECTIONS))
    raise KeyError(f"no known direction for {name!r}; {hint}")


# The submodules register their metrics with the decorator above, so they are imported last.
from bench.metrics import accuracy, calibration, detection, passk  # noqa: E402

__all__ = [
    "METRIC_DIRECTIONS",
    "MetricInfo",
    "accuracy",
    "calibration",
    "detection",
    "get_metric",
    "higher_is_better",
    "metric_names",
    "passk",
    "register_metric",
]
