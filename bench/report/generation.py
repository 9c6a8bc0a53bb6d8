"""The leaderboard's generation section: lm-eval scores of causal-LM runs, one table per task.

A generation record's metrics are flat, ``<eval name>_<metric>``; the evaluations of a task
come from its spec (``spec.task.evals``), so the columns follow the suite: GSM8K exact match
(strict and flexible extraction), MMLU accuracy and ECE per n-shot setting, HumanEval pass@k for
every k stored, then cost.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from bench.report.bias import probe_evals
from bench.report.tables import Column, pct, table
from bench.results.query import (
    Record,
    cell_of,
    cell_sort_key,
    count_canceled,
    get_path,
    is_success,
    record_value,
    run_id,
)
from bench.results.stats import summarize_seeds

#: Headline metrics of an evaluation, in column order: (metric suffix, header, higher is better).
HEADLINE = (("exact_match_strict_match", "EM strict", True), ("exact_match_flexible_extract", "EM flexible", True),
            ("acc", "acc", True), ("ece", "ECE", False))
#: A method's partition of its trainable elements (LoRA-PAR), where its records have one.
PARTITION = [
    Column("diagnostics.method.partition.stage1_fraction", "stage-1 active (%) ↓", False, pct),
    Column("diagnostics.method.partition.stage2_fraction", "stage-2 active (%) ↓", False, pct),
    Column("diagnostics.method.partition.jaccard", "S1/S2 Jaccard", False, "{:.3f}".format, True),
]
COST = [
    Column("trainable_params", "trainable params ↓", False, "{:,.0f}".format, False),
    Column("train_tokens_per_s", "train tokens/s ↑", True, "{:,.1f}".format),
    Column("gen_tokens_per_s", "gen tokens/s ↑", True, "{:,.1f}".format),
    Column("eval_wall_s", "eval wall (s) ↓", False, "{:,.0f}".format),
]


def is_generation(record: Record) -> bool:
    """True for a record of a generation task."""
    return bool(get_path(record, "spec.task.kind") == "generation")


def _eval_names(records: Sequence[Record]) -> list[str]:
    """The task's evaluations, less the bias probes (the Bias section shows those)."""
    names: dict[str, None] = {}
    for record in records:
        for entry in get_path(record, "spec.task.evals") or []:
            if isinstance(entry, dict) and entry.get("name"):
                names[str(entry["name"])] = None
    probes = {name for name, _ in probe_evals(records)}
    return [n for n in names if n not in probes]


def _pass_at_ks(records: Sequence[Record], name: str) -> list[tuple[str, str, bool]]:
    """``(pass_at_<k>, pass@<k>, True)`` for every k stored for evaluation ``name``, by k."""
    prefix = f"{name}_pass_at_"
    ks = {int(key[len(prefix):]) for r in records for key in (r.get("metrics") or {})
          if key.startswith(prefix) and key[len(prefix):].isdigit()}
    return [(f"pass_at_{k}", f"pass@{k}", True) for k in sorted(ks)]


def _stages(records: Sequence[Record]) -> list[str]:
    """Names of the earlier stages some record was also scored at (``metrics.stages``), in order."""
    names: dict[str, None] = {}
    for record in records:
        names.update(dict.fromkeys(get_path(record, "metrics.stages") or {}))
    return list(names)


def _columns(records: Sequence[Record]) -> list[Column]:
    ok = [r for r in records if is_success(r)]
    columns = []
    for name in _eval_names(records):
        for suffix, header, higher in (*HEADLINE, *_pass_at_ks(ok, name)):
            arrow = "↑" if higher else "↓"
            for stage in _stages(ok):  # e.g. after SFT, before the RL stage of the same run
                metric = f"metrics.stages.{stage}.{name}_{suffix}"
                if any(record_value(r, metric) is not None for r in ok):
                    columns.append(Column(metric, f"{name} {header} after {stage} (%) {arrow}", higher, pct))
            metric = f"{name}_{suffix}"
            if any(record_value(r, metric) is not None for r in ok):
                columns.append(Column(metric, f"{name} {header} (%) {arrow}", higher, pct))
    partition = [c for c in PARTITION if any(record_value(r, c.metric) is not None for r in ok)]
    return columns + partition + COST


def _row(cell: tuple[Any, ...], records: Sequence[Record], columns: Sequence[Column]) -> dict[str, Any]:
    ok = sorted((r for r in records if is_success(r)), key=run_id)
    row: dict[str, Any] = {"task": cell[0], "model": cell[4], "method": cell[5], "n": len(ok),
                           "n_failed": len(records) - len(ok), "n_canceled": count_canceled(records),
                           "run_ids": tuple(run_id(r) for r in ok)}
    for col in columns:
        values = [v for r in ok if (v := record_value(r, col.metric)) is not None]
        s = summarize_seeds(values)
        row.update({f"{col.metric}_mean": s.mean, f"{col.metric}_std": s.std, f"{col.metric}_n": len(values),
                    f"{col.metric}_ci_low": s.ci_low, f"{col.metric}_ci_high": s.ci_high})
    return row


def generation_section(records: Sequence[Record], *, dirty: set[str]) -> list[str]:
    """Markdown lines: ``## Generation`` with one table per task (mean ± std over seeds)."""
    by_task: dict[str, dict[tuple[Any, ...], list[Record]]] = defaultdict(lambda: defaultdict(list))
    for record in records:
        cell = cell_of(record)
        by_task[cell[0]][cell].append(record)
    lines = ["## Generation", "",
             "lm-eval scores of the fine-tuned causal LMs (exact match and accuracy in %, ECE with 15 "
             "equal-width bins over the softmax of the choice loglikelihoods); HumanEval pass@k in % "
             "(unbiased estimator over the stored samples, programs run in the sandbox). \"after sft\" "
             "scores a multi-stage method's adapter at the end of its SFT stage; \"active\" is the share "
             "of its LoRA elements a stage trains.", ""]
    for task in sorted(by_task):
        cells = by_task[task]
        columns = _columns([r for group in cells.values() for r in group])
        rows = [_row(cell, cells[cell], columns) for cell in sorted(cells, key=cell_sort_key)]
        show_model = len({r["model"] for r in rows}) > 1
        lines += [f"### {task}", "", *table(rows, columns, show_model=show_model, dirty=dirty), ""]
    return lines
