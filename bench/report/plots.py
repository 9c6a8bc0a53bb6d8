"""Pareto and reliability plots rendered with matplotlib's Agg backend.

Both plot functions return the written path, or None (and write nothing) when
no successful record carries the fields they need.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib import ticker  # noqa: E402

from bench.report.pareto import pareto_front  # noqa: E402
from bench.results.query import (  # noqa: E402
    Record,
    cell_of,
    cell_sort_key,
    get_path,
    is_success,
    numeric,
    record_value,
    run_id,
)

MAX_PANELS = 9
FRACTION_METRICS = ("accuracy", "macro_f1", "ece", "metrics.accuracy", "metrics.macro_f1")


@dataclass(frozen=True)
class _Point:
    x: float
    y: float
    y_std: float


def method_label(record: Record, show_model: bool) -> str:
    """The method id of a record's cell, with its model when several models are shown."""
    _, _, _, _, model, method = cell_of(record)
    return f"{method} ({model})" if show_model else method


def panel_grid(n: int) -> tuple[Any, list[Any]]:
    """A figure of ``n`` panels, at most three a row; the unused axes hidden."""
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.8 * rows), squeeze=False)
    flat = list(axes.ravel())
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


@contextmanager
def closing(fig: Any) -> Iterator[None]:
    """Closes the figure however the block exits (pyplot keeps figures alive otherwise)."""
    try:
        yield
    finally:
        plt.close(fig)


def save_figure(fig: Any, out_path: Path) -> None:
    """Write ``fig`` as a PNG without a software stamp (so reruns give the same bytes)."""
    fig.tight_layout()
    fig.savefig(out_path, dpi=100, metadata={"Software": None})


def _log_x_axis(ax: Any, xs: Sequence[float]) -> None:
    """Log x in engineering notation (76k, 1M); 1-2-5 ticks unless it spans many decades."""
    ax.set_xscale("log")
    decades = math.log10(max(xs) / min(xs))
    subs = (1.0,) if decades > 1.5 else (1.0, 2.0, 5.0) if decades > 0.7 else (1, 1.5, 2, 3, 5, 7)
    ax.xaxis.set_major_locator(ticker.LogLocator(base=10, subs=subs))
    ax.xaxis.set_major_formatter(ticker.EngFormatter(sep=""))
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())


def _pareto_panels(records: Sequence[Record], x: str, y: str) -> dict[str, dict[str, _Point]]:
    ok = [r for r in records if is_success(r)]
    show_model = len({cell_of(r)[4] for r in ok}) > 1
    values: dict[tuple[Any, ...], dict[str, list[tuple[float, float]]]] = defaultdict(
        lambda: defaultdict(list))
    for r in sorted(ok, key=lambda r: (cell_sort_key(cell_of(r)), run_id(r))):
        xv, yv = record_value(r, x), record_value(r, y)
        if xv is not None and yv is not None:
            task, noise, kind, rate, _, _ = cell_of(r)
            values[(task, rate, kind, noise)][method_label(r, show_model)].append((xv, yv))
    panels: dict[str, dict[str, _Point]] = {}
    for key in sorted(values):
        points = {}
        for method in sorted(values[key]):
            arr = np.asarray(values[key][method], dtype=float)
            y_std = float(arr[:, 1].std(ddof=1)) if len(arr) > 1 else 0.0
            points[method] = _Point(float(arr[:, 0].mean()), float(arr[:, 1].mean()), y_std)
        panels[f"{key[0]} · {key[3]}"] = points
    return panels


def _draw_pareto_panel(ax: Any, title: str, points: dict[str, _Point],
                       directions: tuple[str, str], colors: dict[str, Any]) -> None:
    names = list(points)
    front = pareto_front([(points[m].x, points[m].y) for m in names], directions)
    fx = [points[names[i]].x for i in front]
    fy = [points[names[i]].y for i in front]
    ax.step(fx, fy, where="post" if directions[0] == "min" else "pre", color="0.35",
            linestyle="--", linewidth=1.2, zorder=1, label="Pareto front")
    for i, name in enumerate(names):
        p = points[name]
        on_front = i in front
        ax.errorbar(p.x, p.y, yerr=p.y_std or None, fmt="o", color=colors[name],
                    markersize=8 if on_front else 6, markeredgecolor="black" if on_front else
                    colors[name], ecolor=colors[name], capsize=3, zorder=2)
        ax.annotate(name, (p.x, p.y), xytext=(5, 5), textcoords="offset points", fontsize=8)
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.margins(x=0.2, y=0.15)


def plot_pareto(records: Sequence[Record], out_path: Path, *, x: str, y: str = "accuracy",
                x_label: str | None = None, y_label: str | None = None, log_x: bool = False,
                x_direction: str = "min", y_direction: str = "max") -> Path | None:
    """Plots y against x with the Pareto front, one panel per task × noise setting.

    Accuracy is only comparable within a task and noise setting, so each setting gets its
    own panel (at most ``MAX_PANELS``, in task/noise order; the title says when some were
    left out) with one point per method: mean x and y over its successful seeds, y std as
    error bar, labelled with the method id; front points have a black edge and a dashed step.

    Args:
        records: Run records; only successful ones with both fields are used.
        out_path: PNG path to write.
        x: Field for the x axis: a dotted path (``"efficiency.trainable_params"``)
            or a key of ``metrics``/``efficiency``.
        y: Field for the y axis, as for ``x``.
        x_label: Axis label (defaults to ``x``).
        y_label: Axis label (defaults to ``y``).
        log_x: Log-scale x (only applied to panels whose x values are all > 0).
        x_direction: ``"min"`` or ``"max"``: which x is better.
        y_direction: ``"min"`` or ``"max"``: which y is better.

    Returns:
        ``out_path``, or None when no record has both fields (nothing written).
    """
    panels = _pareto_panels(records, x, y)
    if not panels:
        return None
    methods = sorted({m for points in panels.values() for m in points})
    colors = {m: plt.get_cmap("tab10")(i % 10) for i, m in enumerate(methods)}
    shown = list(panels.items())[:MAX_PANELS]
    fig, axes = panel_grid(len(shown))
    x_label, y_label = x_label or x, y_label or y
    with closing(fig):
        for ax, (title, points) in zip(axes, shown, strict=True):
            _draw_pareto_panel(ax, title, points, (x_direction, y_direction), colors)
            if log_x and all(p.x > 0 for p in points.values()):
                _log_x_axis(ax, [p.x for p in points.values()])
            if y in FRACTION_METRICS:
                ax.yaxis.set_major_formatter(ticker.PercentFormatter(xmax=1.0))
            ax.set_xlabel(x_label, fontsize=9)
            ax.set_ylabel(y_label, fontsize=9)
        better = ("lower" if x_direction == "min" else "higher") + " x, " + \
            ("lower" if y_direction == "min" else "higher") + " y"
        n = len(panels)
        extra = f"; showing {len(shown)} of {n} settings" if n > len(shown) else ""
        fig.suptitle(f"{y_label} vs {x_label} (mean over seeds; better: {better}{extra})")
        save_figure(fig, out_path)
    return out_path


def _ratio(total: np.ndarray, weight: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(weight > 0, total / weight, np.nan)


@dataclass
class _Bins:
    lower: np.ndarray
    upper: np.ndarray
    count: np.ndarray
    acc_sum: np.ndarray
    acc_weight: np.ndarray
    conf_sum: np.ndarray
    conf_weight: np.ndarray
    runs: int = 1

    def rates(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-bin count-weighted accuracy and confidence (NaN for empty bins)."""
        return _ratio(self.acc_sum, self.acc_weight), _ratio(self.conf_sum, self.conf_weight)

    def ece(self) -> float:
        """Count-weighted mean |accuracy - confidence| over bins that have both."""
        acc, conf = self.rates()
        valid = np.isfinite(acc) & np.isfinite(conf) & (self.count > 0)
        total = float(self.count[valid].sum())
        if total == 0:
            return math.nan
        return float((self.count[valid] * np.abs(acc[valid] - conf[valid])).sum() / total)


def _array(values: Any, size: int) -> np.ndarray | None:
    if not isinstance(values, list):
        return None if values is not None else np.full(size, np.nan)
    if len(values) != size:
        return None
    return np.asarray([numeric(v) if numeric(v) is not None else np.nan for v in values], float)


def _parse_bins(reliability: Any) -> _Bins | None:
    if not isinstance(reliability, dict) or not isinstance(reliability.get("count"), list):
        return None
    size = len(reliability["count"])
    lower, upper, count, acc, conf = (_array(reliability.get(k), size) for k in
                                      ("lower", "upper", "count", "accuracy", "confidence"))
    if size == 0 or lower is None or upper is None or count is None or acc is None \
            or conf is None or not np.isfinite(lower).all() or not np.isfinite(upper).all() \
            or not np.isfinite(acc).any():
        return None
    count = np.nan_to_num(count)
    acc_ok, conf_ok = np.isfinite(acc), np.isfinite(conf)
    return _Bins(lower, upper, count, np.where(acc_ok, acc * count, 0.0),
                 np.where(acc_ok, count, 0.0), np.where(conf_ok, conf * count, 0.0),
                 np.where(conf_ok, count, 0.0))


def _pool_reliability(records: Sequence[Record]) -> dict[str, _Bins]:
    ok = sorted((r for r in records if is_success(r)), key=run_id)
    show_model = len({cell_of(r)[4] for r in ok}) > 1
    pooled: dict[str, _Bins] = {}
    for r in ok:
        bins = _parse_bins(get_path(r, "metrics.reliability"))
        if bins is None:
            continue
        name = method_label(r, show_model)
        acc = pooled.get(name)
        if acc is None:
            pooled[name] = bins
        elif acc.lower.shape == bins.lower.shape and np.allclose(acc.lower, bins.lower) \
                and np.allclose(acc.upper, bins.upper):
            for field in ("count", "acc_sum", "acc_weight", "conf_sum", "conf_weight"):
                setattr(acc, field, getattr(acc, field) + getattr(bins, field))
            acc.runs += 1
    return {name: pooled[name] for name in sorted(pooled)}


def _draw_reliability(ax: Any, name: str, bins: _Bins) -> None:
    width = bins.upper - bins.lower
    acc, conf = bins.rates()
    mids = bins.lower + width / 2
    ax.bar(bins.lower, np.nan_to_num(acc), width=width, align="edge", color="C0", alpha=0.75,
           edgecolor="black", linewidth=0.5, label="accuracy")
    ax.plot(mids, conf, "o", color="C3", markersize=3, label="mean confidence")
    ax.plot([0, 1], [0, 1], "--", color="0.4", linewidth=1, label="perfect calibration")
    ece = bins.ece()
    ece_text = "ECE –" if math.isnan(ece) else f"ECE {100 * ece:.2f}%"
    runs = f"{bins.runs} run" + ("s" if bins.runs != 1 else "")
    ax.set_title(f"{name}\n{ece_text} · {runs} · {int(bins.count.sum()):,} samples", fontsize=9)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence", fontsize=9)
    ax.set_ylabel("accuracy", fontsize=9)


def plot_reliability(records: Sequence[Record], out_path: Path) -> Path | None:
    """Draws reliability diagrams, one panel per method.

    Bins from ``metrics.reliability`` are pooled over the method's successful
    runs (all tasks and noise settings): counts are summed, accuracy and
    confidence are count-weighted means. Runs whose bin edges differ from the
    method's first run (by run id) are left out. The ECE in each title is
    computed from the pooled bins.

    Args:
        records: Run records.
        out_path: PNG path to write.

    Returns:
        ``out_path``, or None when no record has reliability bins (nothing written).
    """
    pooled = _pool_reliability(records)
    if not pooled:
        return None
    fig, axes = panel_grid(len(pooled))
    with closing(fig):
        for ax, (name, bins) in zip(axes, pooled.items(), strict=True):
            _draw_reliability(ax, name, bins)
        axes[0].legend(loc="upper left", fontsize=7)
        fig.suptitle("Reliability diagrams (bins pooled over runs)")
        save_figure(fig, out_path)
    return out_path
