"""Sweeps in the store: the trials of a swept method, and the one selected on validation accuracy.

A trial is a cell of a ``sweep:`` grid (:mod:`bench.spec.sweep`); its spec holds
``sweep: {grid, trial}``. Records are grouped by suite × task × noise × model × method id
(:func:`bench.results.query.cell_of`); in a group with trials, the newest trial's grid defines
the sweep, and every record of the group that differs from that trial only in the seed and the
swept values, with values on the grid, is a trial's run. That includes a run stored before the
sweep existed (a trial has the run id of a plain cell with those values, so the runner reuses it).
Any other record of the group (another setting) is set aside: it is neither a candidate nor shown.

Selection, per sweep, reads validation figures only (``metrics.val_accuracy`` and
``metrics.val_nll``, the final model on the validation split, whose labels are gold):

1. only complete trials compete: a success with ``val_accuracy`` for every seed that any of the
   sweep's records names (a trial with a failed, canceled or missing seed is out);
2. the highest mean ``val_accuracy`` over seeds wins (means of ``math.fsum``, rounded to 9 decimals,
   so that equal seed sets tie whatever their order);
3. a tie goes to the lower mean ``val_nll``, then to the trial listed first in the grid.

Test metrics are never read here.
"""

from __future__ import annotations

import copy
import json
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from bench.results.query import Cell, Record, cell_of, get_path, is_success, numeric
from bench.spec.identity import canonical_json
from bench.spec.sweep import spec_value

Point = tuple[tuple[str, Any], ...]
R = TypeVar("R", bound=Mapping[str, Any])
#: Decimals that seed means are compared at (a tie is a tie whatever the order of the seeds).
TIE_DECIMALS = 9


@dataclass(frozen=True)
class Trial:
    """One point of a sweep and its runs (the newest attempt per run id)."""

    point: Point
    index: tuple[int, ...]
    """The point's position in the grid, key by key (the last tie-break)."""
    records: tuple[Record, ...]

    @property
    def successes(self) -> list[Record]:
        """The trial's successful runs."""
        return [r for r in self.records if is_success(r)]

    @property
    def seeds(self) -> set[int]:
        """Seeds with a successful run."""
        return {int(get_path(r, "spec.seed") or 0) for r in self.successes}

    def mean(self, metric: str) -> float | None:
        """Mean of ``metrics.<metric>`` over the successful runs; None when there are none or one lacks it."""
        values = [numeric(get_path(r, f"metrics.{metric}")) for r in self.successes]
        if not values or any(v is None for v in values):
            return None
        return round(math.fsum(v for v in values if v is not None) / len(values), TIE_DECIMALS)


@dataclass(frozen=True)
class Sweep:
    """The trials of one swept method in one cell (suite, task, noise, model, method id), and the selected one."""

    suite: str
    cell: Cell
    keys: tuple[str, ...]
    seeds: tuple[int, ...]
    """Every seed any of the sweep's records names: a complete trial has a success for each."""
    trials: tuple[Trial, ...]
    """In grid order."""
    selected: Trial | None
    """None when no trial is complete."""
    outside: tuple[Record, ...] = ()
    """Records of the cell that belong to no trial (another setting), set aside."""

    def complete(self, trial: Trial) -> bool:
        """Whether ``trial`` competes: a success with ``val_accuracy`` for every seed of the sweep."""
        return trial.seeds >= set(self.seeds) and trial.mean("val_accuracy") is not None

    @property
    def setting(self) -> str:
        """The selected trial's setting as the leaderboard writes it (``lr 3e-3``); empty without one."""
        return setting_text(self.selected.point) if self.selected is not None else ""


def value_text(value: Any) -> str:
    """A swept value, short: ``3e-3`` for 0.003 (as learning rates are written), ``0.5``, ``16``, ``pissa``."""
    if isinstance(value, float) and value != 0 and abs(value) < 0.1:
        mantissa, _, exponent = f"{value:.6e}".partition("e")
        return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
    if isinstance(value, float):
        return f"{value:g}"
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def setting_text(point: Point) -> str:
    """``lr 3e-3, r 16``: each key by its field name (the whole key where two share one)."""
    names = [key.partition(".")[2] for key, _ in point]
    return ", ".join(f"{name if names.count(name) == 1 else key} {value_text(value)}"
                     for name, (key, value) in zip(names, point, strict=True))


def _marker(record: Record) -> dict[str, Any] | None:
    block = get_path(record, "spec.sweep")
    ok = isinstance(block, dict) and isinstance(block.get("grid"), dict) and block["grid"]
    return block if ok else None


def _base(record: Record, keys: Sequence[str]) -> str:
    """The record's spec without its seed, sweep block and swept values: equal for the runs of one sweep."""
    spec = copy.deepcopy(dict(record.get("spec") or {}))
    spec.pop("seed", None)
    spec.pop("sweep", None)
    for key in keys:
        section, _, field = key.partition(".")
        block = spec.get("train") if section == "train" else (spec.get("method") or {}).get("config")
        if isinstance(block, dict):
            block.pop(field, None)
    return canonical_json(spec)


def _sweep(suite: str, cell: Cell, records: list[Record]) -> Sweep:
    newest = max((r for r in records if _marker(r)), key=lambda r: str(r.get("finished_at")))
    grid: dict[str, list[Any]] = newest["spec"]["sweep"]["grid"]
    keys, reference = tuple(grid), _base(newest, tuple(grid))
    runs: dict[tuple[int, ...], list[Record]] = defaultdict(list)
    points: dict[tuple[int, ...], Point] = {}
    outside = []
    for record in records:
        point = tuple((key, spec_value(record.get("spec") or {}, key)) for key in keys)
        if _base(record, keys) != reference or any(value not in grid[key] for key, value in point):
            outside.append(record)
            continue
        index = tuple(grid[key].index(value) for key, value in point)
        runs[index].append(record)
        points[index] = point
    trials = tuple(Trial(points[i], i, tuple(runs[i])) for i in sorted(runs))
    seeds = tuple(sorted({int(get_path(r, "spec.seed") or 0) for t in trials for r in t.records}))
    sweep = Sweep(suite, cell, keys, seeds, trials, None, tuple(outside))
    complete = [t for t in trials if sweep.complete(t)]
    if not complete:
        return sweep

    def rank(trial: Trial) -> tuple[float, float, tuple[int, ...]]:
        nll = trial.mean("val_nll")
        return -(trial.mean("val_accuracy") or 0.0), math.inf if nll is None else nll, trial.index

    return Sweep(suite, cell, keys, seeds, trials, min(complete, key=rank), tuple(outside))


def find_sweeps(records: Sequence[Record]) -> list[Sweep]:
    """Every sweep in ``records`` (one record per run id, as :func:`bench.results.query.latest_records` gives)."""
    groups: dict[tuple[str, Cell], list[Record]] = defaultdict(list)
    for record in records:
        groups[(str(get_path(record, "spec.suite")), cell_of(record))].append(record)
    return [_sweep(suite, cell, group) for (suite, cell), group in groups.items() if any(_marker(r) for r in group)]


def select_trials(records: Sequence[R]) -> tuple[list[R], list[Sweep]]:
    """``records`` with each sweep reduced to its selected trial's runs, and the sweeps.

    A sweep without a complete trial keeps no record here (its trials are in its :class:`Sweep`).
    Records of no sweep pass unchanged, in their order.
    """
    sweeps = find_sweeps(records)
    dropped = {id(r) for s in sweeps for t in s.trials if t is not s.selected for r in t.records}
    dropped |= {id(r) for s in sweeps for r in s.outside}
    return [r for r in records if id(r) not in dropped], sweeps


def hidden_records(sweeps: Sequence[Sweep]) -> list[Record]:
    """The records :func:`select_trials` left out: unselected trials' runs and those set aside."""
    return [r for s in sweeps for t in s.trials if t is not s.selected for r in t.records] + \
        [r for s in sweeps for r in s.outside]


def selection_notes(label: str, sweeps: Sequence[Sweep]) -> list[str]:
    """One line saying which trial of each sweep a side is represented by (for ``bench compare``)."""
    if not sweeps:
        return []
    parts = [f"{' · '.join((s.cell[0], s.cell[1], s.cell[5]))} " + (f"at {s.setting}" if s.selected else
                                                                     "left out (no complete trial)")
             for s in sorted(sweeps, key=lambda s: (s.cell[0], s.cell[1], s.cell[5]))]
    return [f"{label}: swept methods are compared at the trial their sweep selected on validation accuracy: "
            + "; ".join(parts)]
