"""Render a :class:`bench.results.compare.Comparison` as aligned text (a terminal) or Markdown (a PR comment).

0–1 metrics (accuracy, macro-F1, ECE) are shown in %, their deltas and intervals in percentage
points; NLL and Brier in their own units. "–" marks a value that does not exist (no test ran).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from bench.results.compare import ALL_CELLS, cell_label

if TYPE_CHECKING:
    from bench.results.compare import Comparison, Row
    from bench.results.gate import Threshold

DASH = "–"
HEADER = ("cell", "metric", "seeds", "baseline", "new", "Δ new − baseline", "95 % CI of Δ", "p", "test", "gate")
_LEFT = ("cell", "metric", "test", "gate")
_ESCAPE = str.maketrans({"|": "\\|"})


def _proportion(metric: str) -> bool:
    from bench.results.gate import is_proportion

    return is_proportion(metric)


def format_value(metric: str, value: float, *, signed: bool = False) -> str:
    """A metric value (``signed``: a delta) in display units: % / pp for 0–1 metrics."""
    if math.isnan(value):
        return DASH
    sign = "+" if signed else ""
    if _proportion(metric):
        return f"{100 * value:{sign}.2f}" + (" pp" if signed else "")
    return f"{value:{sign}.4f}"


def _interval(metric: str, low: float, high: float) -> str:
    if math.isnan(low):
        return DASH
    return f"[{format_value(metric, low, signed=True)}, {format_value(metric, high, signed=True)}]".replace(" pp", "")


def _p(value: float) -> str:
    return DASH if math.isnan(value) else "<0.001" if value < 0.001 else f"{value:.3f}"


def _p_phrase(value: float) -> str:
    return "p < 0.001" if value < 0.001 else f"p = {value:.3f}"


def _gate(row: Row, comparison: Comparison, failed: set[int]) -> str:
    if id(row) in failed:
        return "FAIL"
    return "ok" if any(t.metric == row.metric for t in comparison.thresholds) else ""


def table(comparison: Comparison) -> list[list[str]]:
    """The header and one list of cell texts per row."""
    failed = {id(row) for row, _ in comparison.failures()}
    lines = [list(HEADER)]
    for row in comparison.rows:
        r, m = row.result, row.metric
        unit = " (%)" if _proportion(m) else ""
        lines.append([cell_label(row.cell), m + unit, f"{row.n_baseline}/{row.n_new}",
                      format_value(m, row.baseline), format_value(m, row.new),
                      format_value(m, r.delta, signed=True), _interval(m, r.ci_low, r.ci_high), _p(r.p_value),
                      r.test, _gate(row, comparison, failed)])
    return lines


def _reason(row: Row, threshold: Threshold, comparison: Comparison, p_adjusted: float) -> str:
    r, alpha = row.result, comparison.alpha
    head = (f"{cell_label(row.cell)}: {row.metric} Δ {format_value(row.metric, r.delta, signed=True)} "
            f"is beyond {threshold.text}")
    if math.isnan(p_adjusted):
        return f"{head} but could not be tested"
    p_text = _p_phrase(r.p_value)
    gate_p = _p_phrase(p_adjusted).replace("p ", "", 1)
    adjusted = "Holm-adjusted " if comparison.correction == "holm" and row.cell != ALL_CELLS else ""
    p_text += f", one-sided {adjusted}{gate_p}"
    if p_adjusted < alpha:
        return f"{head} and significant at α = {alpha:g} ({p_text}, {r.test})"
    return f"{head} but not significant at α = {alpha:g} ({p_text}, {r.test}): within noise"


def summary_lines(comparison: Comparison) -> list[str]:
    """Unmatched cells, then the gate's verdict with the reason for each failing cell."""
    lines = []
    for label, cells in (("only in baseline", comparison.only_baseline), ("only in new", comparison.only_new)):
        if cells:
            lines.append(f"{label} (not compared): " + "; ".join(" · ".join(c) for c in cells))
    if not comparison.thresholds:
        return lines
    p = comparison.gated_p_values()
    rules = ", ".join(t.text for t in comparison.thresholds)
    how = f"α = {comparison.alpha:g}, {comparison.gate_description()}"
    failures = comparison.failures()
    if failures:
        lines.append(f"gate FAILED ({rules}; {how}) in {len(failures)} case(s):")
    else:
        lines.append(f"gate passed ({rules}; {how})")
    lines += ["  " + _reason(row, t, comparison, p.get(id(row), math.nan)) for row, t in failures]
    lines += ["  not failing: " + _reason(row, t, comparison, p.get(id(row), math.nan))
              for row, t in comparison.within_noise()]
    return lines


def format_text(comparison: Comparison) -> str:
    """Plain aligned columns for a terminal, then the summary."""
    rows = table(comparison)
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]
    out = []
    for r in rows:
        cells = [t.ljust(w) if h in _LEFT else t.rjust(w) for t, w, h in zip(r, widths, HEADER, strict=True)]
        out.append("  ".join(cells).rstrip())
    if len(rows) == 1:
        out = ["no cell is present on both sides"]
    return "\n".join([f"baseline: {comparison.baseline_path}", f"new:      {comparison.new_path}", "",
                      *out, "", *summary_lines(comparison)]).rstrip() + "\n"


def format_markdown(comparison: Comparison) -> str:
    """A Markdown table with the summary and warnings as lists, for a pull-request comment."""
    rows = table(comparison)
    aligns = [":---" if h in _LEFT else "---:" for h in HEADER]
    lines = ["## bench compare", "", f"baseline `{comparison.baseline_path}` → new `{comparison.new_path}`", ""]
    lines += ["| " + " | ".join(t.translate(_ESCAPE) for t in r) + " |" for r in rows[:1]]
    lines += ["|" + "|".join(aligns) + "|"]
    lines += ["| " + " | ".join(t.translate(_ESCAPE) or " " for t in r) + " |" for r in rows[1:]]
    lines += ["", "Δ is new − baseline over seed means. Test: `welch` (≥2 seeds per side), `prediction` "
              "(one run against the other side's seeds), `mcnemar-*`/`bootstrap` (one seed per side: per item, "
              "ignores seed variance).", ""]
    summary = summary_lines(comparison)
    lines += [f"- {s.strip()}" for s in summary] + ([""] if summary else [])
    if comparison.warnings:
        lines += ["**Warnings**", ""] + [f"- {w}" for w in comparison.warnings] + [""]
    return "\n".join(lines)
