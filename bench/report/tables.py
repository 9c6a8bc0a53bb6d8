"""Markdown-table helpers shared by the leaderboard's sections: columns, cell text, best marks."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

DASH = "–"
DIRTY_MARK = "†"
ESCAPE = str.maketrans({"|": "\\|"})  # pipes would split markdown table cells


@dataclass(frozen=True)
class Column:
    """One numeric leaderboard column: metric, header, direction and number format.

    ``interval`` columns show ``[low, high]``, the 95 % interval of the mean, instead of the mean.
    """

    metric: str
    header: str
    higher_better: bool
    fmt: Callable[[float], str]
    show_std: bool = True
    interval: bool = False


def pct(value: float) -> str:
    """A 0–1 value in percent with two decimals."""
    return f"{100 * value:.2f}"


def unfinished_text(row: Mapping[str, Any]) -> str:
    """`` (+1 failed, +2 canceled)`` for a row's runs that did not succeed; empty if none."""
    canceled = int(row.get("n_canceled", 0))
    parts = [f"+{n} {word}" for n, word in ((row["n_failed"] - canceled, "failed"), (canceled, "canceled")) if n]
    return f" ({', '.join(parts)})" if parts else ""


def _cell_text(row: Mapping[str, Any], col: Column) -> str:
    mean, std, n = row[f"{col.metric}_mean"], row[f"{col.metric}_std"], row[f"{col.metric}_n"]
    if n == 0:
        return DASH
    if col.interval:
        low, high = row[f"{col.metric}_ci_low"], row[f"{col.metric}_ci_high"]
        return DASH if math.isnan(low) else f"[{col.fmt(low)}, {col.fmt(high)}]"
    text = col.fmt(mean)
    if col.show_std and not math.isnan(std):
        text += f" ± {col.fmt(std)}"
    return text + (f" (n={n})" if n != row["n"] else "")


def _best_rows(rows: Sequence[Mapping[str, Any]], col: Column) -> set[int]:
    """Indices of rows whose displayed mean is the best (only with two or more values)."""
    shown = {i: float(col.fmt(r[f"{col.metric}_mean"]).replace(",", ""))
             for i, r in enumerate(rows) if r[f"{col.metric}_n"] > 0}
    if len(shown) < 2 or col.interval:
        return set()
    best = max(shown.values()) if col.higher_better else min(shown.values())
    return {i for i, v in shown.items() if v == best}


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[Column], *,
          show_model: bool, dirty: set[str]) -> list[str]:
    """Markdown lines of one table: a row per method, the best mean of each column in bold."""
    header = ["method", *(c.header for c in columns), "seeds", "run ids"]
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join([":---", *["---:"] * len(columns), "---:", ":---"]) + "|"]
    best = [_best_rows(rows, c) for c in columns]
    for i, row in enumerate(rows):
        label = f"{row['method']} ({row['model']})" if show_model else str(row["method"])
        cells = [f"**{t}**" if i in b else t
                 for t, b in ((_cell_text(row, c), b) for c, b in zip(columns, best, strict=True))]
        seeds = f"n={row['n']}" + unfinished_text(row)
        ids = ", ".join(r + (DIRTY_MARK if r in dirty else "") for r in row["run_ids"]) or DASH
        lines.append("| " + " | ".join([label.translate(ESCAPE), *cells, seeds, ids]) + " |")
    return lines
