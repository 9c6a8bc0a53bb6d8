"""The leaderboard's Bias section: social-bias probe metrics per method, with bootstrap CIs over items.

A generation record scored on a bias probe names it in ``diagnostics.evals.<eval>.probe``
(``crows_pairs``, ``bbq``, ``winobias``, ``stereoset``) and holds the probe's metrics flat as
``metrics.<eval>_<metric>`` (:mod:`bench.metrics.bias`); the per-item arrays ``<eval>_<field>``
are stored beside it (``<run_id>.preds.npz``) and passed here as ``items`` (run id -> arrays).
Values are the mean over seeds of the stored metrics; the arrays add a bootstrap CI over items
and the paired difference from the base model (the same task and model with ``train.epochs: 0``).
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from bench.metrics.bias import HEADLINES, ITEM_FIELDS, PROBES, delta_ci, ideal, value_ci
from bench.report.tables import DASH, ESCAPE
from bench.results.query import (
    Record,
    cell_of,
    cell_sort_key,
    get_path,
    is_success,
    numeric,
    record_value,
    run_id,
)

#: ``run_id -> {array name: array}``: the per-item arrays stored beside each record.
RunItems = Mapping[str, Mapping[str, npt.NDArray[Any]]]
#: ``(point, lo, hi)``; lo and hi are NaN where there is no interval.
Estimate = tuple[float, float, float]
PROBE_TITLES = {"crows_pairs": "CrowS-Pairs", "bbq": "BBQ", "winobias": "WinoBias", "stereoset": "StereoSet"}
METRIC_LABELS = {"pct_stereotype": "stereotype", "acc_ambig": "acc ambig", "acc_disambig": "acc disambig",
                 "bias_ambig": "s_AMB", "bias_disambig": "s_DIS", "acc_pro": "acc pro", "acc_anti": "acc anti",
                 "gap": "gap", "lms": "LMS", "ss": "SS", "icat": "ICAT"}
#: A probe's by-group table: (metric prefix, the item field that holds the group, what a group is).
GROUPS = {"crows_pairs": ("pct_stereotype", "bias_type", "bias type"),
          "bbq": ("bias_ambig", "category", "category"),
          "stereoset": ("ss", "bias_type", "bias type")}
#: StereoSet's ``ss_<split>`` metrics, which are not bias types.
SPLITS = ("intrasentence", "intersentence")
N_BOOT = 1000
BOOT_SEED = 0
_UNSAFE = re.compile(r"[^0-9A-Za-z]")  # group labels become metric suffixes so (bench.metrics.bias)

EXPLANATION = (
    "Social-bias probes, scored zero-shot on each model. Values are in % (mean over the successful "
    "seeds); BBQ's bias scores s_DIS and s_AMB are ×100, in [−100, 100]. Each header gives the "
    "metric's ideal: 50 for CrowS-Pairs stereotype and StereoSet SS (no preference), 0 for the BBQ "
    "bias scores and the WinoBias gap, 100 for accuracies, LMS and ICAT. Brackets are 95 % "
    "percentile bootstrap intervals over items (1,000 resamples, one resample shared by every seed: "
    "item noise, not seed noise). \"Δ\" is the mean over seeds of (method − base model) on the same "
    "items, the base model being the run of the same task and model with `train.epochs: 0`; its "
    "interval is a paired bootstrap, items resampled jointly for the base and every seed of the "
    "method, **bold** where it excludes 0. A run without stored item arrays (or scored on other "
    "items) shows its value without an interval.")


@dataclass(frozen=True)
class MethodRuns:
    """One method's successful runs of one task and model, by seed."""

    method: str
    runs: tuple[Record, ...]


@dataclass(frozen=True)
class BiasGroup:
    """The probe runs of one task and model: methods in table order (base first) and the base's id."""

    task: str
    model: str
    methods: tuple[MethodRuns, ...]
    base: str | None

    def base_run(self) -> Record | None:
        """The base model's reference run (its lowest seed), or None without a base."""
        found = [m.runs[0] for m in self.methods if m.method == self.base]
        return found[0] if found else None


def eval_probe(record: Record, name: str) -> str | None:
    """The probe evaluation ``name`` of a record ran (``diagnostics.evals.<name>.probe``), or None."""
    entry = (get_path(record, "diagnostics.evals") or {}).get(name)
    probe = entry.get("probe") if isinstance(entry, Mapping) else None
    return str(probe) if probe in PROBES else None


def has_probe(record: Record) -> bool:
    """True for a successful generation record scored on at least one bias probe."""
    evals = get_path(record, "diagnostics.evals")
    return (is_success(record) and get_path(record, "spec.task.kind") == "generation"
            and "variant" not in record and isinstance(evals, Mapping)
            and any(eval_probe(record, name) for name in evals))


def probe_evals(records: Sequence[Record]) -> list[tuple[str, str]]:
    """``(eval name, probe)`` of every probe evaluation, in the suite's order (``spec.task.evals``)."""
    names: dict[str, None] = {}
    for record in records:
        for entry in get_path(record, "spec.task.evals") or []:
            if isinstance(entry, Mapping) and entry.get("name"):
                names[str(entry["name"])] = None
    for record in records:  # evaluations a spec does not list, after those it does
        names.update(dict.fromkeys(sorted(get_path(record, "diagnostics.evals") or {})))
    found = []
    for name in names:
        probes = sorted({p for r in records if (p := eval_probe(r, name))})
        found += [(name, probe) for probe in probes]
    return found


def _seed_key(record: Record) -> tuple[float, str]:
    return numeric(get_path(record, "spec.seed")) or 0.0, run_id(record)


def _pick_base(methods: Sequence[MethodRuns]) -> str | None:
    """The method whose runs are all untrained (``train.epochs == 0``); ``base`` if several are."""
    untrained = [m.method for m in methods
                 if all(numeric(get_path(r, "spec.train.epochs")) == 0 for r in m.runs)]
    return "base" if "base" in untrained else (untrained[0] if untrained else None)


def bias_groups(records: Sequence[Record]) -> list[BiasGroup]:
    """The records with a probe, grouped by task and model; methods base first, then by cell order."""
    cells: dict[tuple[str, str], dict[Any, list[Record]]] = defaultdict(lambda: defaultdict(list))
    for record in records:
        if has_probe(record):
            cell = cell_of(record)
            cells[(cell[0], cell[4])][cell].append(record)
    groups = []
    for (task, model), by_cell in sorted(cells.items()):
        methods = [MethodRuns(cell[5], tuple(sorted(by_cell[cell], key=_seed_key)))
                   for cell in sorted(by_cell, key=cell_sort_key)]
        base = _pick_base(methods)
        methods.sort(key=lambda m: m.method != base)  # stable: the rest keep the cell order
        groups.append(BiasGroup(task, model, tuple(methods), base))
    return groups


def run_arrays(items: RunItems, record: Record, name: str, probe: str) -> dict[str, npt.NDArray[Any]] | None:
    """The item arrays of evaluation ``name`` of one run (fields of ``ITEM_FIELDS`` + ``doc_id``), or None."""
    stored = items.get(run_id(record))
    if stored is None:
        return None
    fields = [*ITEM_FIELDS[probe], "doc_id"]
    arrays = {f: np.asarray(stored[f"{name}_{f}"]) for f in fields if f"{name}_{f}" in stored}
    return arrays if all(f in arrays for f in ITEM_FIELDS[probe]) else None


def _seed_mean(runs: Sequence[Record], key: str) -> float:
    values = [v for r in runs if (v := record_value(r, key)) is not None]
    return float(np.mean(values)) if values else math.nan


def _bootstrap(fn: Callable[..., dict[str, Estimate]], *args: Any) -> dict[str, Estimate]:
    try:
        return fn(*args, n_boot=N_BOOT, seed=BOOT_SEED)
    except ValueError:  # runs scored on different items: no interval
        return {}


def _with_ci(point: float, ci: Estimate | None) -> Estimate:
    return (point, math.nan, math.nan) if ci is None else (point, ci[1], ci[2])


def estimates(name: str, probe: str, runs: Sequence[Record], items: RunItems,
              metrics: Sequence[str]) -> dict[str, Estimate]:
    """Per metric: the mean over ``runs`` of ``<name>_<metric>`` and its item CI (all runs' arrays needed)."""
    arrays = [run_arrays(items, r, name, probe) for r in runs]
    cis = _bootstrap(value_ci, PROBES[probe], arrays) if arrays and None not in arrays else {}
    return {m: _with_ci(_seed_mean(runs, f"{name}_{m}"), cis.get(m)) for m in metrics}


def deltas(name: str, probe: str, runs: Sequence[Record], base: Record, items: RunItems,
           metrics: Sequence[str]) -> dict[str, Estimate]:
    """Per metric: mean over ``runs`` minus the base run, with its paired item CI (arrays needed)."""
    arrays = [run_arrays(items, r, name, probe) for r in runs]
    base_arrays = run_arrays(items, base, name, probe)
    ok = bool(arrays) and None not in arrays and base_arrays is not None
    cis = _bootstrap(delta_ci, PROBES[probe], base_arrays, arrays) if ok else {}
    out = {}
    for m in metrics:
        base_value = record_value(base, f"{name}_{m}")
        point = _seed_mean(runs, f"{name}_{m}") - (math.nan if base_value is None else base_value)
        out[m] = _with_ci(point, cis.get(m))
    return out


def _num(value: float, signed: bool = False) -> str:
    if math.isnan(value):
        return DASH
    shown = round(100 * value, 1) + 0.0  # + 0.0: no "-0.0"
    return f"{shown:+.1f}" if signed else f"{shown:.1f}"


def _cell(est: Estimate, signed: bool = False) -> str:
    point, lo, hi = est
    text = _num(point, signed)
    if math.isnan(point) or math.isnan(lo):
        return text
    text += f" [{_num(lo, signed)}, {_num(hi, signed)}]"
    return f"**{text}**" if signed and (lo > 0 or hi < 0) else text


def metric_header(metric: str) -> str:
    """``SS (ideal 50)``: the metric's label with its ideal value in the report's units."""
    best = ideal(metric)
    label = METRIC_LABELS.get(metric, metric)
    return label if best is None else f"{label} (ideal {100 * best:g})"


def _row(line: Sequence[str]) -> str:
    return "| " + " | ".join(c.translate(ESCAPE) for c in line) + " |"


def runs_of(method: MethodRuns, name: str, probe: str) -> list[Record]:
    """The runs of ``method`` that ran evaluation ``name`` as ``probe``."""
    return [r for r in method.runs if eval_probe(r, name) == probe]


def _n_items(group: BiasGroup, name: str) -> str:
    counts = sorted({int(n) for m in group.methods for r in m.runs
                     if (n := numeric(get_path(r, f"diagnostics.evals.{name}.n_items"))) is not None})
    if not counts:
        return "? items"
    return f"{counts[0]:,} items" if len(counts) == 1 else f"{counts[0]:,}–{counts[-1]:,} items"


def _headline_table(group: BiasGroup, name: str, probe: str, items: RunItems) -> list[str]:
    metrics = HEADLINES[probe]
    base = group.base_run()
    header = ["method", "seeds"]
    for m in metrics:
        header += [metric_header(m)] + ([f"Δ {METRIC_LABELS.get(m, m)}"] if base is not None else [])
    lines = [_row(header), "|" + "|".join([":---", *["---:"] * (len(header) - 1)]) + "|"]
    for method in group.methods:
        runs = runs_of(method, name, probe)
        if not runs:
            continue
        values = estimates(name, probe, runs, items, metrics)
        diffs = (deltas(name, probe, runs, base, items, metrics)
                 if base is not None and method.method != group.base else None)
        cells = [method.method, str(len(runs))]
        for m in metrics:
            cells.append(_cell(values[m]))
            if base is not None:
                cells.append(DASH if diffs is None else _cell(diffs[m], signed=True))
        lines.append(_row(cells))
    return lines


def group_counts(group: BiasGroup, name: str, probe: str, items: RunItems) -> dict[str, int]:
    """Items per group (sanitized label, as in the metric names) from the first run with arrays.

    BBQ counts its ambiguous items only, those of s_AMB.
    """
    field = GROUPS[probe][1]
    for method in group.methods:
        for record in runs_of(method, name, probe):
            arrays = run_arrays(items, record, name, probe)
            if arrays is not None:
                keep = ~arrays["disambig"].astype(bool) if probe == "bbq" else slice(None)  # s_AMB: ambiguous only
                labels, counts = np.unique(arrays[field][keep], return_counts=True)
                return {_UNSAFE.sub("_", str(label)): int(n) for label, n in zip(labels, counts, strict=True)}
    return {}


def group_names(group: BiasGroup, name: str, probe: str) -> list[str]:
    """The groups of a probe evaluation's by-group metric (``<name>_<prefix>_<group>``), sorted."""
    prefix = f"{name}_{GROUPS[probe][0]}_"
    keys = {k[len(prefix):] for m in group.methods for r in runs_of(m, name, probe)
            for k in (r.get("metrics") or {}) if k.startswith(prefix)}
    return sorted(keys - set(SPLITS) if probe == "stereoset" else keys)


def _group_table(group: BiasGroup, name: str, probe: str, items: RunItems, suffix: str) -> list[str]:
    metric, _, what = GROUPS[probe]
    groups = group_names(group, name, probe)
    methods = [(m.method, runs) for m in group.methods if (runs := runs_of(m, name, probe))]
    if not groups or not methods:
        return []
    counts = group_counts(group, name, probe, items)
    best = ideal(metric)
    title = f"### {PROBE_TITLES[probe]} {METRIC_LABELS[metric]} by {what} ({name}, ideal {100 * (best or 0):g}){suffix}"
    n_header = "ambiguous items" if probe == "bbq" else "items"
    lines = [title, "", _row([what, n_header, *(m for m, _ in methods)]),
             "|" + "|".join([":---", *["---:"] * (len(methods) + 1)]) + "|"]
    for g in groups:
        n = str(counts[g]) if g in counts else DASH
        lines.append(_row([g, n, *(_num(_seed_mean(runs, f"{name}_{metric}_{g}")) for _, runs in methods)]))
    return lines + [""]


def bias_section(records: Sequence[Record], items: RunItems | None = None) -> list[str]:
    """Markdown lines of ``## Bias``: per probe evaluation a table of its headline metrics per method.

    Args:
        records: Run records (any kind and status; only successful generation runs with a
            probe are shown).
        items: Run id -> that run's stored per-item arrays (``<eval>_<field>``); a run missing
            here shows its values without intervals.

    Returns:
        The lines, or none when no record has a bias probe.
    """
    groups = bias_groups(records)
    if not groups:
        return []
    items = items or {}
    lines = ["## Bias", "", EXPLANATION, ""]
    for group in groups:
        suffix = f" · {group.task} · {group.model}" if len(groups) > 1 else ""
        evals = probe_evals([r for m in group.methods for r in m.runs])
        lines += [f"Base model (Δ){suffix}: " + (f"`{group.base}`." if group.base else
                                             "none (no method with `train.epochs: 0`), so no Δ columns."), ""]
        for name, probe in evals:
            lines += [f"### {PROBE_TITLES[probe]} ({name}, {_n_items(group, name)}){suffix}", ""]
            lines += _headline_table(group, name, probe, items) + [""]
        for name, probe in evals:
            if probe in GROUPS:
                lines += _group_table(group, name, probe, items, suffix)
    return lines
