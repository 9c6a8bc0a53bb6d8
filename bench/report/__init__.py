"""Reports built from stored run records: markdown leaderboard, Pareto, reliability and bias plots.

Everything here works on already-loaded records (dicts from the store's JSON) and, for the bias
probes' intervals, their per-item arrays; nothing reads the store or touches models.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from bench.report.bias import RunItems, probe_evals
from bench.report.bias_plots import CROWS_PLOT, STEREOSET_PLOT, bias_plots
from bench.report.markdown import aggregate, leaderboard_markdown, memory_metric
from bench.report.pareto import pareto_front
from bench.report.plots import plot_pareto, plot_reliability
from bench.report.stages import IMPORTANCE_PLOT, RL_PLOT, stage_plots
from bench.results.query import Record

if TYPE_CHECKING:
    from bench.results.sweep import Sweep
    from bench.spec.suite import ReportSpec

__all__ = [
    "LEADERBOARD",
    "PLOT_FILES",
    "aggregate",
    "leaderboard_markdown",
    "pareto_front",
    "plot_pareto",
    "plot_reliability",
    "write_report",
]

LEADERBOARD = "leaderboard.md"
PARAMS_PLOT = "pareto_accuracy_vs_trainable_params.png"
MEMORY_PLOT = "pareto_accuracy_vs_peak_memory.png"
THROUGHPUT_PLOT = "pareto_accuracy_vs_train_throughput.png"
RELIABILITY_PLOT = "reliability.png"
GENERATION_PLOT = "pareto_generation_vs_trainable_params.png"
PLOT_FILES = (PARAMS_PLOT, MEMORY_PLOT, THROUGHPUT_PLOT, RELIABILITY_PLOT, GENERATION_PLOT, RL_PLOT, IMPORTANCE_PLOT,
              STEREOSET_PLOT, CROWS_PLOT)
#: Generation metrics a generation Pareto plot may show, the first one present wins.
GENERATION_Y = ("exact_match_strict_match", "pass_at_1", "acc")


def _generation_pareto(records: Sequence[Record], out_dir: Path) -> Path | None:
    """Headline score vs trainable (for LoRA-PAR: active) parameters of the generation runs."""
    probes = tuple(f"{name}_" for name, _ in probe_evals(records))
    for suffix in GENERATION_Y:  # bias probes have their own plots
        keys = sorted({k for r in records if r.get("kind") == "generation"
                       for k in (r.get("metrics") or {}) if k.endswith(suffix) and not k.startswith(probes)})
        if keys:
            return plot_pareto([r for r in records if r.get("kind") == "generation"], out_dir / GENERATION_PLOT,
                               x="efficiency.trainable_params", y=f"metrics.{keys[-1]}",
                               x_label="trainable (active) parameters (log)", y_label=keys[-1], log_x=True)
    return None


def _plots(records: Sequence[Record], out_dir: Path) -> list[Path | None]:
    memory = memory_metric(records)
    memory_label = ("peak GPU allocated (GiB)" if memory == "peak_gpu_allocated_gib"
                    else "peak CPU RSS (GiB)")
    return [
        plot_pareto(records, out_dir / PARAMS_PLOT, x="efficiency.trainable_params",
                    x_label="trainable parameters (log)", y_label="accuracy", log_x=True),
        plot_pareto(records, out_dir / MEMORY_PLOT, x=f"efficiency.{memory}",
                    x_label=memory_label, y_label="accuracy"),
        plot_pareto(records, out_dir / THROUGHPUT_PLOT, x="efficiency.train_samples_per_s",
                    x_label="train samples/s", y_label="accuracy", x_direction="max"),
        plot_reliability(records, out_dir / RELIABILITY_PLOT),
        _generation_pareto(records, out_dir),
        *stage_plots(list(records), out_dir),
    ]


def write_report(records: Sequence[Record], out_dir: Path, *, suite: str, items: RunItems | None = None,
                 report: ReportSpec | None = None, sweeps: Sequence[Sweep] = ()) -> list[Path]:
    """Writes the leaderboard and all plots for one suite.

    Plots whose fields no record has are skipped; a stale file of the same name
    left by an earlier report is removed so the directory matches the records.

    Args:
        records: All run records of the suite (any status).
        out_dir: Directory to write into (created if missing), e.g. ``reports/<suite>``.
        suite: Suite name for the leaderboard title.
        items: Run id -> the run's stored per-item arrays (``<run_id>.preds.npz``); the bias
            section and plots draw their bootstrap intervals from them (none without).
        report: The suite's ``report:`` options (``deltas``), if its file is known.
        sweeps: The sweeps of :func:`bench.results.sweep.select_trials`, whose selected trials
            alone are in ``records`` (and so on the plots); the leaderboard lists every trial.

    Returns:
        The written paths: the leaderboard first, then the plots in ``PLOT_FILES`` order.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    records = list(records)
    items = items or {}
    # prediction variants (e.g. ensemble sizes) are leaderboard rows; on plots they only crowd
    plotted = [r for r in records if "variant" not in r]
    plots = [p for p in [*_plots(plotted, out_dir), *bias_plots(plotted, out_dir, items)] if p is not None]
    for name in PLOT_FILES:
        stale = out_dir / name
        if stale not in plots and stale.exists():
            stale.unlink()
    leaderboard = out_dir / LEADERBOARD
    text = leaderboard_markdown(records, suite=suite, figures=[p.name for p in plots], items=items, report=report,
                                sweeps=sweeps)
    leaderboard.write_text(text, encoding="utf-8")
    return [leaderboard, *plots]
