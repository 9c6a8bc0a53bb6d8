"""Compare two result stores cell by cell, with a seed-aware significance test and a CI gate.

A cell is (task, noise, model, method id); see :func:`bench.results.query.cell_of`. Each
side's successful runs of a cell are its seeds. For every metric in ``COMPARED`` the delta is
``mean(new) - mean(baseline)`` over seeds, and its test depends on how many seeds each side has:

- both sides ≥ 2 seeds: Welch's t-test on the seed-level values (no pairing by seed: seeds
  with the same number need not be related across code versions, and Welch needs no common
  seeds);
- one side ≥ 2 seeds, the other 1: a prediction-interval t-test, ``t = (x - mean) /
  (s·√(1 + 1/n))`` with ``df = n - 1`` (is the single run a plausible draw from the other
  side's seed distribution?);
- one seed on each side: the per-item paired test on the stored predictions
  (``<run_id>.preds.npz``): McNemar for accuracy (its interval from the paired bootstrap), the
  paired bootstrap for the other metrics. This ignores seed variance and says so in a warning.

Generation cells (``kind: generation`` tasks) compare their own metrics instead (GSM8K exact
match, MMLU accuracy and ECE, HumanEval pass@k; :mod:`bench.results.compare_generation`), with the same
seed-level tests and, for one seed per side, McNemar on the stored per-item scores. The pooled
all-cells row covers classification cells only.

Prediction variants (``metrics["variants"]``) are left out: their per-item predictions are not
stored, so a single-seed cell could not be tested, and the headline rows are what a gate guards.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.errors import BenchError
from bench.report.generation import is_generation
from bench.results import compare_generation
from bench.results.gate import COMPARED, Threshold, holm_adjust, one_sided, parse_fail
from bench.results.query import Record, cell_of, get_path, label_settings, latest_records, record_value
from bench.results.significance import item_tests, seed_test
from bench.results.stats import TestResult
from bench.results.store import Store
from bench.results.sweep import select_trials, selection_notes

#: Environment fields compared between the sides (``packages.*`` too, except the harness's own
#: version). The git commit and dirty flag are expected to differ and are not compared.
ENV_FIELDS = ("device", "cpu", "gpu.name", "python")
_SKIP_PACKAGES = ("peftbench",)

CellKey = tuple[str, str, str, str]


def cell_key(record: Record) -> CellKey:
    """(task, noise label, model, method id) of a record."""
    task, noise, _, _, model, method = cell_of(record)
    return task, noise, model, method


#: The pooled row's cell: each seed's mean over every cell both sides share.
ALL_CELLS: CellKey = ("all cells", "mean", "", "")


def cell_label(cell: CellKey) -> str:
    """``task · noise · model · method``, or ``all cells · mean`` for the pooled row."""
    return " · ".join(part for part in cell if part)


@dataclass
class Side:
    """The successful runs of one side, by cell and seed."""

    label: str
    path: Path
    runs: dict[CellKey, dict[int, Record]]

    def records(self) -> list[Record]:
        """All runs of this side."""
        return [r for seeds in self.runs.values() for r in seeds.values()]

    def arrays(self, record: Record) -> dict[str, Any] | None:
        """Every per-item array stored beside the run, or None when the side has none for it."""
        rid, suite, method = record["run_id"], get_path(record, "spec.suite"), get_path(record, "spec.method.id")
        name = f"{rid}.preds.npz"
        # the side may be a store root, a suite folder or a method folder
        for path in (self.path / str(suite) / str(method) / name, self.path / str(method) / name,
                     self.path / name):
            if path.is_file():
                with np.load(path) as data:
                    return {k: data[k] for k in data.files}
        return None

    def predictions(self, record: Record) -> dict[str, Any] | None:
        """The run's stored class predictions (ids, labels, probs), or None when the side has none for it."""
        arrays = self.arrays(record)
        if arrays is None or not {"ids", "labels", "probs"} <= set(arrays):
            return None  # none stored, or a generation run's per-item arrays (no class probabilities)
        return {k: arrays[k] for k in ("ids", "labels", "probs")}


def load_side(path: str | Path, *, label: str, suite: str | None = None,
              methods: Sequence[str] = ()) -> tuple[Side, list[str]]:
    """Read one side's newest successful run per cell and seed.

    Args:
        path: A store root, a suite folder inside one or a single method folder.
        label: ``"baseline"`` or ``"new"``, for messages.
        suite: Keep only this suite's records.
        methods: Keep only these method ids (all when empty).

    Returns:
        The side (a swept method by its selected trial, :mod:`bench.results.sweep`) and warnings.

    Raises:
        BenchError: If the folder is missing, holds no matching successful record, or holds
            several suites and ``suite`` is not given.
    """
    root = Path(path)
    if not root.is_dir():
        raise BenchError(f"{label} {root}: no such folder")
    records, sweeps = select_trials([r for r in latest_records(Store(root).records())  # a sweep: its selected trial
                                     if (suite is None or get_path(r, "spec.suite") == suite)
                                     and (not methods or get_path(r, "spec.method.id") in methods)])
    records = label_settings([r for r in records if r.get("status") == "success"])  # other settings: not seeds
    if not records:
        wanted = ([f"suite '{suite}'"] if suite else []) + ([f"methods {', '.join(methods)}"] if methods else [])
        raise BenchError(f"{label} {root}: no successful records" + (f" for {' and '.join(wanted)}" if wanted else ""))
    suites = sorted({str(get_path(r, "spec.suite")) for r in records})
    if len(suites) > 1:
        raise BenchError(f"{label} {root} holds several suites ({', '.join(suites)}); choose one with --suite")
    runs: dict[CellKey, dict[int, Record]] = defaultdict(dict)
    warnings = selection_notes(label, sweeps)
    for record in sorted(records, key=lambda r: str(r.get("finished_at"))):
        cell, seed = cell_key(record), int(get_path(record, "spec.seed") or 0)
        if seed in runs[cell]:
            warnings.append(f"{label}: {cell_label(cell)} seed {seed} has several runs "
                            f"({runs[cell][seed]['run_id']}, {record['run_id']}); using the newest")
        runs[cell][seed] = record
    return Side(label, root, dict(runs)), warnings


def _env_values(records: Sequence[Record], key: str) -> set[str]:
    return {str(v) for r in records if (v := get_path(r, f"env.{key}")) is not None}


def env_differences(baseline: Sequence[Record], new: Sequence[Record]) -> list[str]:
    """One line per environment field whose values differ between the sides.

    Compared: ``ENV_FIELDS`` and package versions. Not compared: the git commit and dirty
    flag (they are what a comparison is about), the platform string, thread counts, and
    fields that one side does not record at all.
    """
    packages = {k for r in [*baseline, *new] for k in (get_path(r, "env.packages") or {})}
    keys = [*ENV_FIELDS, *(f"packages.{p}" for p in sorted(packages) if p not in _SKIP_PACKAGES)]
    lines = []
    for key in keys:
        old, now = _env_values(baseline, key), _env_values(new, key)
        if old and now and old != now:
            name = key.removeprefix("packages.")
            lines.append(f"environments differ: {name} {', '.join(sorted(old))} (baseline) "
                         f"vs {', '.join(sorted(now))} (new)")
    return lines


@dataclass(frozen=True)
class Row:
    """One cell × metric line: seed counts, means over seeds and the test of the delta."""

    cell: CellKey
    metric: str
    n_baseline: int
    n_new: int
    baseline: float
    new: float
    result: TestResult


@dataclass
class Comparison:
    """The outcome of :func:`compare`: rows, unmatched cells, gate rules and warnings."""

    baseline_path: Path
    new_path: Path
    rows: list[Row]
    only_baseline: list[CellKey]
    only_new: list[CellKey]
    thresholds: list[Threshold]
    alpha: float
    warnings: list[str] = field(default_factory=list)
    correction: str = "holm"
    """``holm`` (Holm–Bonferroni over the gated tests, the default) or ``none``."""

    def gated_p_values(self) -> dict[int, float]:
        """The p-value each gated row is judged by, keyed by ``id(row)``.

        The gate asks one-sided questions (is the change a significant step in the bad
        direction?), so each two-sided p is halved when the delta points the bad way, and is
        1 − p/2 otherwise. Two families are gated: the cells (every row whose metric has a
        ``--fail`` rule and that got a test) and the pooled all-cells rows. A gate over 24 cells
        at α = 0.05 without correction would fire on an unchanged tree about once in two runs;
        Holm's step-down adjustment over the cells keeps that chance at most α (if the
        seed-to-seed spread is roughly normal). When both families are present each gets α/2
        (the p-values are doubled), so the chance of any false alarm stays at most α.
        """
        bad_down = {t.metric: math.copysign(1.0, t.limit) < 0 for t in reversed(self.thresholds)}
        gated = [row for row in self.rows if row.metric in bad_down and math.isfinite(row.result.p_value)]
        out: dict[int, float] = {}
        families = [[r for r in gated if r.cell != ALL_CELLS], [r for r in gated if r.cell == ALL_CELLS]]
        split = 2.0 if all(families) else 1.0
        for family in families:
            p = [one_sided(row.result.p_value, row.result.delta, bad_down=bad_down[row.metric]) for row in family]
            if self.correction == "holm":
                p = holm_adjust(p)
            out.update({id(row): min(1.0, split * q) for row, q in zip(family, p, strict=True)})
        return out

    def gate_description(self) -> str:
        """How the gated p-values were formed, for the verdict line."""
        p = self.gated_p_values()
        pooled = sum(1 for row in self.rows if id(row) in p and row.cell == ALL_CELLS)
        cells = len(p) - pooled
        how = "one-sided"
        if self.correction == "holm":
            how += f", Holm-adjusted over {cells} gated cell test(s)"
        if pooled and cells:
            how += f"; the {pooled} all-cells test(s) apart, α split in halves between the two"
        return how

    def _judged(self, significant: bool) -> list[tuple[Row, Threshold]]:
        p = self.gated_p_values()
        return [(row, t) for row in self.rows for t in self.thresholds
                if t.metric == row.metric and t.breached(row.result.delta)
                and (p.get(id(row), math.nan) < self.alpha) == significant]

    def failures(self) -> list[tuple[Row, Threshold]]:
        """Rows whose delta is beyond a threshold in its bad direction and significant at alpha (adjusted)."""
        return self._judged(True)

    def within_noise(self) -> list[tuple[Row, Threshold]]:
        """Rows beyond a threshold whose difference is not significant (they do not fail)."""
        return self._judged(False)


def _item_results(base: Side, new: Side, cell: CellKey, *, seed: int,
                  n_resamples: int) -> tuple[dict[str, TestResult], list[str]]:
    """Per-item tests of a cell with one run on each side (empty without stored predictions)."""
    (b,), (n,) = base.runs[cell].values(), new.runs[cell].values()
    if is_generation(b):
        ab, an = base.arrays(b), new.arrays(n)
        metrics = compare_generation.metrics_of([b, n])
        try:
            tests = compare_generation.item_tests(ab or {}, an or {}, metrics, where=cell_label(cell), seed=seed,
                                                  n_resamples=n_resamples)
        except ValueError as err:
            raise BenchError(str(err)) from None
        untested = [m for m in metrics if m not in tests]
        note = [f"{cell_label(cell)}: one seed per side and no per-item scores for {', '.join(untested)}; "
                "not tested"] if untested else []
        return tests, note
    pb, pn = base.predictions(b), new.predictions(n)
    if pb is None or pn is None:
        missing = " and ".join(s.label for s, p in ((base, pb), (new, pn)) if p is None)
        return {}, [f"{cell_label(cell)}: one seed per side and no stored predictions ({missing}); not tested"]
    return item_tests(pb, pn, where=cell_label(cell), seed=seed, n_resamples=n_resamples), []


def held_out(base_runs: dict[int, Record], new_runs: dict[int, Record]) -> dict[int, Record]:
    """The baseline seeds a single new run is tested against: all but the new run's own seed.

    A prediction test asks whether the new run is a plausible further draw from the baseline's
    seeds. If the baseline holds the same seed (on an unchanged tree, the very same run), it
    is not an independent draw and would pull the test towards "no change"; it is left out
    when at least two other seeds remain.
    """
    if len(new_runs) != 1:
        return base_runs
    (seed,) = new_runs
    if seed not in base_runs or len(base_runs) < 3:
        return base_runs
    return {s: r for s, r in base_runs.items() if s != seed}


def compare_cell(base: Side, new: Side, cell: CellKey, *, seed: int = 0,
                 n_resamples: int = 1000) -> tuple[list[Row], list[str]]:
    """Rows (one per metric both sides report) and warnings for one cell present on both sides."""
    items: dict[str, TestResult] = {}
    warnings: list[str] = []
    if len(base.runs[cell]) == 1 == len(new.runs[cell]):
        items, warnings = _item_results(base, new, cell, seed=seed, n_resamples=n_resamples)
    base_runs = held_out(base.runs[cell], new.runs[cell])
    runs = [*base_runs.values(), *new.runs[cell].values()]
    metrics = compare_generation.metrics_of(runs) if _generation_cell(base, cell) else COMPARED
    rows = []
    for metric in metrics:
        bv = [v for r in base_runs.values() if (v := record_value(r, metric)) is not None]
        nv = [v for r in new.runs[cell].values() if (v := record_value(r, metric)) is not None]
        if not bv or not nv:
            continue
        delta = float(np.mean(nv) - np.mean(bv))
        result = seed_test(bv, nv) or items.get(metric) or TestResult(delta, math.nan, math.nan, math.nan, "none")
        # the delta shown is of the recorded metrics; an item test's own delta (float32 predictions) may differ
        result = TestResult(delta, result.ci_low, result.ci_high, result.p_value, result.test)
        rows.append(Row(cell, metric, len(bv), len(nv), float(np.mean(bv)), float(np.mean(nv)), result))
    return rows, warnings


def _seed_means(runs: dict[CellKey, dict[int, Record]], cells: Sequence[CellKey], metric: str,
                skip: int | None = None) -> list[float]:
    """Each seed's mean of ``metric`` over ``cells``, for the seeds that have all of them."""
    seeds = set.intersection(*(set(runs[cell]) for cell in cells)) - {skip}
    means = []
    for seed in sorted(s for s in seeds if s is not None):
        values = [record_value(runs[cell][seed], metric) for cell in cells]
        if all(v is not None for v in values):
            means.append(float(np.mean([float(v) for v in values if v is not None])))
    return means


def pooled_rows(base: Side, new: Side, cells: Sequence[CellKey]) -> list[Row]:
    """One row per metric for ``ALL_CELLS``: each seed's mean over the shared cells, then the seed test.

    A change that hurts every cell a little is invisible cell by cell (each is within its
    seed noise) but moves the mean over cells, whose seed-to-seed spread is far smaller.
    The baseline leaves out the new run's seed, as :func:`held_out` does per cell.
    """
    if len(cells) < 2:
        return []
    new_seeds = set.intersection(*(set(new.runs[cell]) for cell in cells))
    base_seeds = set.intersection(*(set(base.runs[cell]) for cell in cells))
    skip = next(iter(new_seeds)) if len(new_seeds) == 1 and len(base_seeds - new_seeds) >= 2 else None
    rows = []
    for metric in COMPARED:
        bv, nv = _seed_means(base.runs, cells, metric, skip), _seed_means(new.runs, cells, metric)
        result = seed_test(bv, nv) if bv and nv else None
        if result is None:
            continue
        rows.append(Row(ALL_CELLS, metric, len(bv), len(nv), float(np.mean(bv)), float(np.mean(nv)), result))
    return rows


def _generation_cell(side: Side, cell: CellKey) -> bool:
    return any(is_generation(r) for r in side.runs[cell].values())


def compare(baseline: str | Path, new: str | Path, *, suite: str | None = None, methods: Sequence[str] = (),
            fail: Sequence[str] = (), alpha: float = 0.05, seed: int = 0, n_resamples: int = 1000,
            correction: str = "holm") -> Comparison:
    """Compare two stores (or suite or method folders) cell by cell.

    Args:
        baseline: The reference side.
        new: The side under test; deltas are ``new - baseline``.
        suite: Compare only this suite (required when a side holds several).
        methods: Compare only these method ids (all when empty).
        fail: Gate rules such as ``accuracy:-1pp`` (see :func:`parse_fail`).
        alpha: Significance level of the gate.
        seed: Random seed of the paired bootstrap.
        n_resamples: Resamples of the paired bootstrap.
        correction: ``holm`` adjusts the gated p-values for the number of gated tests; ``none``
            judges each on its own (a many-cell gate then fires on seed noise alone).

    Raises:
        BenchError: On a malformed rule, a bad alpha, a missing or empty side, or gate rules with no
            cell on both sides.
    """
    thresholds = [parse_fail(spec) for spec in fail]
    if not 0 < alpha < 1:
        raise BenchError(f"--alpha must lie in (0, 1), got {alpha}")
    if correction not in ("holm", "none"):
        raise BenchError(f"--correction must be holm or none, got {correction!r}")
    if n_resamples < 1:
        raise BenchError(f"--resamples must be >= 1, got {n_resamples}")
    base_side, base_warnings = load_side(baseline, label="baseline", suite=suite, methods=methods)
    new_side, new_warnings = load_side(new, label="new", suite=suite, methods=methods)
    warnings = [*env_differences(base_side.records(), new_side.records()), *base_warnings, *new_warnings]
    common = sorted(set(base_side.runs) & set(new_side.runs))
    if thresholds and not common:  # a gate pointed at the wrong folder must not pass
        raise BenchError(f"--fail: no cell is present on both sides ({len(base_side.runs)} baseline cell(s), "
                         f"{len(new_side.runs)} new); nothing can be gated")
    rows: list[Row] = []
    single = overlap = 0
    for cell in common:
        cell_rows, cell_warnings = compare_cell(base_side, new_side, cell, seed=seed, n_resamples=n_resamples)
        rows += cell_rows
        warnings += cell_warnings
        single += len(base_side.runs[cell]) == 1 == len(new_side.runs[cell])
        overlap += held_out(base_side.runs[cell], new_side.runs[cell]) is not base_side.runs[cell]
    rows += pooled_rows(base_side, new_side, [c for c in common if not _generation_cell(base_side, c)])
    if overlap:
        warnings.append(f"{overlap} cell(s): the new run's seed is also a baseline seed; it was left out of the "
                        "baseline's seeds, so that the new run is not tested against itself")
    if single:
        warnings.append(f"{single} cell(s) have one seed per side and were tested per item (McNemar for accuracy, "
                        "paired bootstrap otherwise): this ignores seed variance, since per-item stderr is not "
                        "seed variance; run two or more seeds per side for a seed-aware test")
    if not common:
        warnings.append("no cell is present on both sides")
    return Comparison(Path(baseline), Path(new), rows, sorted(set(base_side.runs) - set(new_side.runs)),
                      sorted(set(new_side.runs) - set(base_side.runs)), thresholds, alpha, warnings, correction)
