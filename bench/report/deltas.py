"""The leaderboard's "Differences between methods": a suite's ``report: deltas`` as Welch tests over seeds.

For each task × noise × model and each (method, reference) pair the suite names, every metric of
``delta_metrics`` gets the seed-mean difference method − reference, the 95 % interval of that
difference and the two-sided p of Welch's t-test (:func:`bench.results.stats.welch_test`), which
needs two or more seeds per side. METHODS.md §5.5 asks for BA-LoRA's deltas vs PiSSA and vs LoRA.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import product

from bench.report.tables import DASH, ESCAPE
from bench.results.query import Record, cell_of, is_success, record_value
from bench.results.stats import welch_test

HEADER = ("setting", "method − reference", "metric", "seeds", "method", "reference", "Δ", "95 % CI of Δ", "p")


def _show(metric: str, value: float, *, signed: bool = False) -> str:
    """0–1 metrics in % (their differences in points), others in their units (as ``bench compare``)."""
    from bench.report.comparison import format_value  # imported here: bench.results.compare imports this package

    return format_value(metric, value, signed=signed).replace(" pp", "")


def _p(value: float) -> str:
    return DASH if math.isnan(value) else "<0.001" if value < 0.001 else f"{value:.3f}"


def _values(records: Sequence[Record], metric: str) -> list[float]:
    return [v for r in records if (v := record_value(r, metric)) is not None and not math.isnan(v)]


@dataclass(frozen=True)
class DeltaRow:
    """One setting × (method, reference) × metric: seed means, their difference and its Welch test."""

    setting: str
    method: str
    reference: str
    metric: str
    n_method: int
    n_reference: int
    method_mean: float
    reference_mean: float
    delta: float
    ci_low: float
    ci_high: float
    p: float
    """NaN (with the interval) where a side has fewer than two seeds."""


def delta_rows(records: Sequence[Record], deltas: Mapping[str, Sequence[str]],
               metrics: Sequence[str]) -> list[DeltaRow]:
    """One row per setting × (method, reference) × metric where both methods have successful runs.

    The setting is ``task · noise``, plus `` · model`` when the records hold several models.
    """
    by_cell: dict[tuple[str, ...], dict[str, list[Record]]] = defaultdict(lambda: defaultdict(list))
    for record in records:
        if is_success(record) and record.get("kind") != "generation":
            task, noise, _, _, model, method = cell_of(record)
            by_cell[(task, noise, model)][method].append(record)
    several_models = len({key[2] for key in by_cell}) > 1
    rows = []
    for (task, noise, model), methods in by_cell.items():
        setting = f"{task} · {noise}" + (f" · {model}" if several_models else "")
        pairs = [(m, ref) for m, refs in deltas.items() for ref in refs if m in methods and ref in methods]
        for (method, reference), metric in product(pairs, metrics):
            new, base = _values(methods[method], metric), _values(methods[reference], metric)
            if not new or not base:
                continue
            mean_new, mean_base = sum(new) / len(new), sum(base) / len(base)
            low = high = p = math.nan
            if len(new) >= 2 and len(base) >= 2:
                test = welch_test(base, new)
                low, high, p = test.ci_low, test.ci_high, test.p_value
            rows.append(DeltaRow(setting, method, reference, metric, len(new), len(base), mean_new, mean_base,
                                 mean_new - mean_base, low, high, p))
    return rows


def deltas_section(records: Sequence[Record], deltas: Mapping[str, Sequence[str]],
                   metrics: Sequence[str]) -> list[str]:
    """Markdown lines of the section; empty when the suite names no deltas or no pair has runs."""
    rows = delta_rows(records, deltas, metrics) if deltas else []
    if not rows:
        return []
    lines = ["## Differences between methods", "",
             "Seed-mean difference method − reference (0–1 metrics in %, their differences in points), "
             "with the 95 % interval of the difference and the two-sided p of Welch's t-test over seeds "
             "(– with fewer than two seeds a side). Not corrected for the number of comparisons: "
             "one p < 0.05 in twenty rows is expected by chance.", "",
             "| " + " | ".join(HEADER) + " |", "|" + "|".join([":---"] * 3 + ["---:"] * 6) + "|"]
    for r in rows:
        m = r.metric
        interval = DASH if math.isnan(r.ci_low) else \
            f"[{_show(m, r.ci_low, signed=True)}, {_show(m, r.ci_high, signed=True)}]"
        cells = [r.setting, f"{r.method} − {r.reference}", m, f"{r.n_method}/{r.n_reference}",
                 _show(m, r.method_mean), _show(m, r.reference_mean), _show(m, r.delta, signed=True),
                 interval, _p(r.p)]
        lines.append("| " + " | ".join(c.translate(ESCAPE) for c in cells) + " |")
    return lines + [""]
