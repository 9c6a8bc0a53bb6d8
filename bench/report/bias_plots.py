"""Plots of the bias probes: StereoSet SS against LMS, and CrowS-Pairs by bias type.

Both read the records (values: the mean over seeds of the stored metrics) and, where given, the
runs' per-item arrays (95 % bootstrap intervals over items, as the leaderboard's Bias section).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np

from bench.report.bias import (
    BiasGroup,
    RunItems,
    bias_groups,
    estimates,
    group_counts,
    group_names,
    probe_evals,
    runs_of,
)
from bench.report.plots import closing, panel_grid, save_figure
from bench.results.query import Record, is_success

STEREOSET_PLOT = "bias_stereoset.png"
CROWS_PLOT = "bias_crows_pairs.png"


def _panels(records: list[Record], probe: str) -> list[tuple[BiasGroup, str, str]]:
    """``(group, eval name, title)`` of every evaluation of ``probe``, one panel each."""
    groups = bias_groups([r for r in records if is_success(r)])
    panels = []
    for group in groups:
        runs = [r for m in group.methods for r in m.runs]
        for name, found in probe_evals(runs):
            if found == probe:
                title = f"{name} · {group.task} · {group.model}" if len(groups) > 1 else name
                panels.append((group, name, title))
    return panels


def _errors(point: float, lo: float, hi: float) -> list[list[float]] | None:
    """Matplotlib's asymmetric error bar ``[[below], [above]]`` in %, or None without an interval."""
    if np.isnan(lo):
        return None
    return [[100 * (point - lo)], [100 * (hi - point)]]


def _label_offset(drawn: list[tuple[float, float]], x: float, y: float) -> tuple[int, int]:
    """Text offset (points) of a point's label, stacked above the labels of points near it."""
    near = sum(1 for px, py in drawn if abs(px - x) < 2.0 and abs(py - y) < 2.0)
    return 6, 6 + 10 * near


def _draw_stereoset(ax: Any, group: BiasGroup, name: str, items: RunItems) -> None:
    drawn: list[tuple[float, float]] = []
    for i, method in enumerate(group.methods):
        runs = runs_of(method, name, "stereoset")
        est = estimates(name, "stereoset", runs, items, ("ss", "lms")) if runs else {}
        if not est or np.isnan(est["ss"][0]) or np.isnan(est["lms"][0]):
            continue
        (ss, ss_lo, ss_hi), (lms, lms_lo, lms_hi) = est["ss"], est["lms"]
        color = plt.get_cmap("tab10")(i % 10)
        ax.errorbar(100 * ss, 100 * lms, xerr=_errors(ss, ss_lo, ss_hi), yerr=_errors(lms, lms_lo, lms_hi),
                    fmt="o", color=color, capsize=3, markersize=7, zorder=3, label=method.method)
        ax.annotate(method.method, (100 * ss, 100 * lms), xytext=_label_offset(drawn, 100 * ss, 100 * lms),
                    textcoords="offset points", fontsize=8, color=color)
        drawn.append((100 * ss, 100 * lms))
    ax.axvline(50, color="0.4", linestyle="--", linewidth=1, zorder=1, label="SS = 50 (no preference)")
    ax.plot([50], [100], marker="*", markersize=16, color="gold", markeredgecolor="black",
            linestyle="none", zorder=4, label="ideal (SS 50, LMS 100)")
    ax.set_xlabel("SS: stereotype preferred over anti-stereotype (%)", fontsize=9)
    ax.set_ylabel("LMS: meaningful preferred over unrelated (%)", fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.margins(x=0.25, y=0.15)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))


def plot_stereoset(records: list[Record], out_path: Path, items: RunItems | None = None) -> Path | None:
    """StereoSet SS (x) against LMS (y) per method, the ideal (50, 100) starred; None without StereoSet runs.

    One panel per StereoSet evaluation (per task and model); a point is a method's mean over
    seeds, with its 95 % item-bootstrap interval on both axes where the arrays are given.
    """
    panels = _panels(records, "stereoset")
    if not panels:
        return None
    fig, axes = panel_grid(len(panels))
    cols = min(3, len(panels))
    fig.set_size_inches(6.8 * cols, 4.8 * -(-len(panels) // cols))
    with closing(fig):
        for ax, (group, name, title) in zip(axes, panels, strict=True):
            _draw_stereoset(ax, group, name, items or {})
            ax.set_title(title, fontsize=10)
        fig.suptitle("StereoSet: stereotype score vs language-modeling score\n"
                     "(mean over seeds; bars: 95 % bootstrap CI over items)", fontsize=10)
        save_figure(fig, out_path)
    return out_path


def _draw_crows(ax: Any, group: BiasGroup, name: str, items: RunItems) -> None:
    types = group_names(group, name, "crows_pairs")
    counts = group_counts(group, name, "crows_pairs", items)
    metrics = ["pct_stereotype", *(f"pct_stereotype_{t}" for t in types)]
    methods = [(m.method, runs) for m in group.methods if (runs := runs_of(m, name, "crows_pairs"))]
    width = 0.8 / max(len(methods), 1)
    x = np.arange(len(metrics), dtype=float)
    for i, (method, runs) in enumerate(methods):
        est = estimates(name, "crows_pairs", runs, items, metrics)
        heights = np.array([100 * est[m][0] for m in metrics])
        lo = np.array([100 * est[m][1] for m in metrics])
        hi = np.array([100 * est[m][2] for m in metrics])
        yerr = None if np.isnan(lo).all() else np.nan_to_num(np.stack([heights - lo, hi - heights]))
        ax.bar(x - 0.4 + width * (i + 0.5), np.nan_to_num(heights), width, yerr=yerr,
               label=method, color=plt.get_cmap("tab10")(i % 10),
               error_kw={"elinewidth": 0.7, "capsize": 2, "ecolor": "0.25"})
    ax.axhline(50, color="0.3", linestyle="--", linewidth=1, label="no preference (50 %)")
    labels = ["all"] + [t.replace("_", " ") for t in types]
    sizes = [sum(counts.values())] + [counts.get(t, 0) for t in types]
    if counts:
        labels = [f"{label}\n(n={n})" for label, n in zip(labels, sizes, strict=True)]
    ax.set_xticks(x, labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylim(0, 100)
    ax.set_ylabel("more stereotypical sentence preferred (%)", fontsize=9)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))


def plot_crows_pairs(records: list[Record], out_path: Path, items: RunItems | None = None) -> Path | None:
    """CrowS-Pairs % stereotype overall and per bias type, bars per method; None without CrowS-Pairs runs."""
    panels = _panels(records, "crows_pairs")
    if not panels:
        return None
    n_bars = max(len(group_names(g, name, "crows_pairs")) + 1 for g, name, _ in panels) * \
        max(len(g.methods) for g, _, _ in panels)
    fig, axes = plt.subplots(len(panels), 1, squeeze=False,
                             figsize=(max(7.0, 0.22 * n_bars + 3.5), 4.4 * len(panels)))
    with closing(fig):
        for ax, (group, name, title) in zip(axes[:, 0], panels, strict=True):
            _draw_crows(ax, group, name, items or {})
            ax.set_title(title, fontsize=10)
        fig.suptitle("CrowS-Pairs: pairs where the more stereotypical sentence is more likely "
                     "(mean over seeds; bars: 95 % bootstrap CI over items)", fontsize=10)
        save_figure(fig, out_path)
    return out_path


def bias_plots(records: list[Record], out_dir: Path, items: RunItems | None = None) -> list[Path | None]:
    """The bias plots the records have data for, in ``(STEREOSET_PLOT, CROWS_PLOT)`` order."""
    return [plot_stereoset(records, out_dir / STEREOSET_PLOT, items),
            plot_crows_pairs(records, out_dir / CROWS_PLOT, items)]
