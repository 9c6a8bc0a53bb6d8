"""Plots of multi-stage runs: RL-stage curves per step, and per-element importance by layer and module.

Both read only the records: ``curves.rl_*`` (one value per logged RL step, with ``rl_step``)
and ``diagnostics.method.importance_<system>`` (rows with ``layer``, ``module``, ``matrix`` and
``share``: the L2-normalised importance summed over a group), which LoRA-PAR stores.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from bench.report.plots import closing, method_label, panel_grid, save_figure
from bench.results.query import Record, cell_of, get_path, is_success

RL_PLOT = "rl_curves.png"
IMPORTANCE_PLOT = "importance.png"
#: RL curves drawn, in panel order: (curve, title).
RL_PANELS = (("rl_reward", "total reward"), ("rl_reward_correctness", "correctness"),
             ("rl_reward_strict_format", "strict format"), ("rl_reward_soft_format", "soft format"),
             ("rl_reward_tag_count", "tag count"), ("rl_reward_integer", "integer"),
             ("rl_kl", "KL to the base"), ("rl_completion_length", "completion length (tokens)"))


def _series(records: list[Record], curve: str) -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
    out: dict[str, list[tuple[np.ndarray, np.ndarray]]] = defaultdict(list)
    show_model = len({cell_of(r)[4] for r in records}) > 1
    for record in records:
        steps, values = get_path(record, "curves.rl_step"), get_path(record, f"curves.{curve}")
        if steps and values and len(steps) == len(values):
            y = np.asarray([np.nan if v is None else v for v in values], dtype=float)
            out[method_label(record, show_model)].append((np.asarray(steps, dtype=float), y))
    return out


def plot_rl_curves(records: list[Record], out_path: Path) -> Path | None:
    """Each RL curve against the step, one line per run (colour per method); None without RL runs."""
    ok = [r for r in records if is_success(r)]
    panels = [(curve, title, s) for curve, title in RL_PANELS if (s := _series(ok, curve))]
    if not panels:
        return None
    methods = sorted({m for _, _, s in panels for m in s})
    colors = {m: plt.get_cmap("tab10")(i % 10) for i, m in enumerate(methods)}
    fig, axes = panel_grid(len(panels))
    with closing(fig):
        for ax, (_, title, series) in zip(axes, panels, strict=True):
            for method, runs in sorted(series.items()):
                for i, (x, y) in enumerate(runs):
                    ax.plot(x, y, color=colors[method], alpha=0.8, linewidth=1.2, label=method if i == 0 else None)
            ax.set_title(title, fontsize=10)
            ax.set_xlabel("RL step", fontsize=9)
            ax.grid(True, alpha=0.3)
        axes[0].legend(fontsize=8)
        fig.suptitle("RL stage per logged step (one line per run)")
        save_figure(fig, out_path)
    return out_path


def _importance_rows(records: list[Record]) -> dict[str, dict[tuple[int, str], float]]:
    """``{system: {(layer, "<module> <matrix>"): mean share over runs}}``."""
    sums: dict[str, dict[tuple[int, str], list[float]]] = defaultdict(lambda: defaultdict(list))
    for record in records:
        for key, rows in (get_path(record, "diagnostics.method") or {}).items():
            if key.startswith("importance_") and isinstance(rows, list):
                for row in rows:
                    cell = (int(row.get("layer", -1)), f"{row.get('module')} {row.get('matrix')}")
                    sums[key[len("importance_"):]][cell].append(float(row.get("share") or 0.0))
    return {system: {k: float(np.mean(v)) for k, v in groups.items()} for system, groups in sums.items()}


def plot_importance(records: list[Record], out_path: Path) -> Path | None:
    """A heat map per system: importance share by layer (rows) and module × matrix (columns); None without any."""
    by_system = _importance_rows([r for r in records if is_success(r)])
    if not by_system:
        return None
    layers = sorted({layer for groups in by_system.values() for layer, _ in groups})
    columns = sorted({name for groups in by_system.values() for _, name in groups}, key=_column_key)
    top = max(v for groups in by_system.values() for v in groups.values()) or 1.0
    fig, axes = panel_grid(len(by_system))
    fig.set_size_inches(4.2 * len(by_system) + 1.0, max(3.0, 0.18 * len(layers) + 1.5))
    with closing(fig):
        for ax, (system, groups) in zip(axes, sorted(by_system.items()), strict=True):
            grid = np.array([[groups.get((layer, c), np.nan) for c in columns] for layer in layers])
            image = ax.imshow(grid, aspect="auto", cmap="viridis", vmin=0.0, vmax=top)
            ax.set_xticks(range(len(columns)), columns, rotation=90, fontsize=7)
            ax.set_yticks(range(len(layers)), [str(layer) for layer in layers], fontsize=6)
            ax.set_ylabel("layer", fontsize=9)
            ax.set_title(system, fontsize=10)
        fig.colorbar(image, ax=axes, shrink=0.8, label="share of the L2-normalised importance")
        fig.suptitle("LoRA element importance by layer, module and matrix (mean over runs)", fontsize=10)
        fig.savefig(out_path, dpi=100, metadata={"Software": None})
    return out_path


def _column_key(name: str) -> tuple[int, str]:
    order = ("q", "k", "v", "o", "gate", "up", "down")
    module, _, matrix = name.partition(" ")
    return (order.index(module) if module in order else len(order)), matrix


def stage_plots(records: list[Record], out_dir: Path) -> list[Path | None]:
    """The plots of this module that the records have data for."""
    return [plot_rl_curves(records, out_dir / RL_PLOT), plot_importance(records, out_dir / IMPORTANCE_PLOT)]

