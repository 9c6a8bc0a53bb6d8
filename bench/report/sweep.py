"""The leaderboard's sweeps: each swept method's selected setting in its rows, and a table of every trial.

The selection itself is :mod:`bench.results.sweep` (validation figures only); this module only
writes it down: :func:`label_selected` names the selected setting beside a swept method's test
figures (``lora (lr 3e-3)``), and :func:`sweep_section` lists every trial's mean validation
accuracy and NLL beside its test accuracy, which is marked as not used for the choice.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence

import pandas as pd

from bench.report.tables import DASH, DIRTY_MARK, ESCAPE, pct
from bench.results.query import cell_sort_key, get_path, numeric, run_id
from bench.results.stats import summarize_seeds
from bench.results.sweep import Sweep, Trial, setting_text

EXPLANATION = (
    "A swept method (a `sweep:` in the suite) appears in the tables above at its selected trial, named with its "
    "setting, e.g. `lora (lr 3e-3)`: of the complete trials (a success for every seed of the sweep), the one with "
    "the highest mean validation accuracy over seeds; a tie goes to the lower mean validation NLL, then to the "
    "trial listed first in the grid. Validation is scored on gold labels (a clean validation set, as in most "
    "noisy-label papers). Test accuracy is listed here for reference only: it never enters the choice. "
    "Cells are mean ± sample std over the trial's successful seeds."
)
HEADER = ("method", "setting", "val accuracy (%) ↑", "val NLL ↓", "test accuracy (%), not used for selection",
          "seeds", "note", "run ids")


def label_selected(frame: pd.DataFrame, sweeps: Sequence[Sweep]) -> pd.DataFrame:
    """``frame`` (of :func:`bench.report.markdown.aggregate`) with each selected trial's rows named with its setting.

    ``lora`` becomes ``lora (lr 3e-3)`` and its variant rows ``lora-dropout (ensemble_n8)``
    become ``lora-dropout (lr 3e-3) (ensemble_n8)``, in the task, noise and model of the sweep.
    """
    settings = {(s.cell[0], s.cell[1], s.cell[4], s.cell[5]): s.setting for s in sweeps if s.selected is not None}
    if frame.empty or not settings:
        return frame

    def label(row: pd.Series) -> str:
        method = str(row["method"])
        base = method.split(" (", 1)[0]  # a method id holds no space: the rest is a variant or setting label
        setting = settings.get((str(row["task"]), str(row["noise"]), str(row["model"]), base))
        return method if setting is None else f"{base} ({setting}){method[len(base):]}"

    out = frame.copy()
    out["method"] = [label(row) for _, row in frame.iterrows()]
    return out


def _mean_std(values: list[float], fmt: Callable[[float], str] = pct) -> str:
    if not values:
        return DASH
    s = summarize_seeds(values)
    return fmt(s.mean) + ("" if s.n < 2 else f" ± {fmt(s.std)}")


def _values(trial: Trial, metric: str) -> list[float]:
    return [v for r in trial.successes if (v := numeric(get_path(r, f"metrics.{metric}"))) is not None]


def _note(sweep: Sweep, trial: Trial) -> str:
    notes = []
    if trial is sweep.selected:
        notes.append("**selected**")
    elif not sweep.complete(trial):
        missing = len(set(sweep.seeds) - trial.seeds)
        notes.append(f"incomplete ({missing} of {len(sweep.seeds)} seeds without a success)" if missing
                     else "no val_accuracy (a run from before it was recorded: rerun with --force)")
    for flag in ("collapsed", "diverged"):
        n = sum(1 for r in trial.successes if get_path(r, f"diagnostics.{flag}"))
        if n:
            notes.append(f"{n} {flag}")
    return "; ".join(notes) or DASH


def _row(sweep: Sweep, trial: Trial, dirty: set[str]) -> list[str]:
    failed = len(trial.records) - len(trial.successes)
    seeds = f"n={len(trial.successes)}" + (f" (+{failed} failed)" if failed else "")
    ids = sorted(run_id(r) + (DIRTY_MARK if run_id(r) in dirty else "") for r in trial.successes)
    return [sweep.cell[5], setting_text(trial.point), _mean_std(_values(trial, "val_accuracy")),
            _mean_std(_values(trial, "val_nll"), "{:.3f}".format), _mean_std(_values(trial, "accuracy")),
            seeds, _note(sweep, trial), ", ".join(ids) or DASH]


def sweep_section(sweeps: Sequence[Sweep], *, dirty: set[str]) -> list[str]:
    """Markdown lines of the "Sweeps" section (one table per task × noise), empty without sweeps."""
    if not sweeps:
        return []
    lines = ["## Sweeps", "", EXPLANATION, ""]
    by_setting: dict[tuple[str, ...], list[Sweep]] = defaultdict(list)
    several_models = len({s.cell[4] for s in sweeps}) > 1
    for sweep in sorted(sweeps, key=lambda s: cell_sort_key(s.cell)):
        by_setting[(sweep.cell[0], sweep.cell[1]) + ((sweep.cell[4],) if several_models else ())].append(sweep)
    for setting, group in by_setting.items():
        lines += [f"### {' · '.join(setting).translate(ESCAPE)}", "",
                  "| " + " | ".join(HEADER) + " |", "|" + "|".join([":---"] * 2 + ["---:"] * 4 + [":---"] * 2) + "|"]
        lines += ["| " + " | ".join(c.translate(ESCAPE) for c in _row(s, t, dirty)) + " |"
                  for s in group for t in s.trials]
        for sweep in group:
            if sweep.outside:
                ids = ", ".join(sorted(run_id(r) for r in sweep.outside))
                lines += ["", f"{sweep.cell[5]}: {len(sweep.outside)} run(s) of this cell with another setting "
                          f"belong to no trial of its sweep and are not shown: {ids}"]
        lines.append("")
    return lines
