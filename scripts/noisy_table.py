"""Per dataset × noise × method: test accuracy and detection AUROC, mean ± sd over seeds, from the store.

Swept methods are shown at the trial their sweep selected on validation accuracy (as the
leaderboard does, bench/results/sweep.py), with the selected setting; the figures Delora's paper
reports (METHODS.md §2.4) are put beside where there are any. Reads only the store.

    python scripts/noisy_table.py --suite noisy-text-medium [--results results] [--suite ...]
"""

from __future__ import annotations

import argparse
import statistics
from collections import defaultdict
from typing import Any

from bench.results.query import get_path, is_success, latest_records
from bench.results.store import Store
from bench.results.sweep import select_trials

#: METHODS.md §2.4 (Llama-3.1-8B-Instruct, test accuracy %): (dataset, noise label) -> {method: figure}.
PAPER = {
    ("trec", "sym-20%"): {"lora": "95.20", "delora-nld": "98.46"},
    ("trec", "asym-40%"): {"lora": "87.40", "delora-nld": "97.40"},
    ("sst5", "sym-20%"): {"lora": "54.08", "delora-nld": "57.39"},
    ("sst2", "sym-20%"): {"delora-nld": "96.5 [3rd]"},
    ("agnews", "sym-20%"): {"delora-nld": "95.64 [3rd]"},
}
PAPER_DETECTION = {("trec", "sym-20%"): {"small-loss": "P 81.15", "delora-nld": "P 99.47"}}


def _stats(values: list[float], scale: float = 100.0, digits: int = 1) -> str:
    if not values:
        return "–"
    mean = statistics.mean(values) * scale
    if len(values) == 1:
        return f"{mean:.{digits}f}"  # one seed: no spread to show
    return f"{mean:.{digits}f} ± {statistics.stdev(values) * scale:.{digits}f}"


def rows(records: list[dict[str, Any]]) -> list[list[str]]:
    """One table row per (task, noise, method): accuracy, AUROC, seeds, selected setting, paper."""
    chosen, sweeps = select_trials(latest_records([r for r in records if is_success(r)]))
    setting = {(s.cell[0], s.cell[1], s.cell[5]): s.setting for s in sweeps if s.selected}
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for record in chosen:
        key = (str(get_path(record, "spec.task.name")), str(get_path(record, "spec.noise.label")),
               str(get_path(record, "spec.method.id")))
        groups[key].append(record)
    out = []
    for (task, noise, method), group in sorted(groups.items()):
        acc = [float(r["metrics"]["accuracy"]) for r in group]
        auroc = [float(r["metrics"]["auroc"]) for r in group if r["metrics"].get("auroc") is not None]
        paper = PAPER.get((task, noise), {}).get(method, "")
        det = PAPER_DETECTION.get((task, noise), {}).get(method, "")
        out.append([task, noise, method, setting.get((task, noise, method), ""), _stats(acc),
                    _stats(auroc, 1.0, 3) if auroc else "–", str(len(group)), " / ".join(x for x in (paper, det) if x)])
    return out


def main(argv: list[str] | None = None) -> int:
    """Print the Markdown table of each ``--suite``."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--suite", action="append", required=True)
    p.add_argument("--results", default="results")
    args = p.parse_args(argv)
    store = Store(args.results)
    header = ["dataset", "noise", "method", "selected", "accuracy % (mean ± sd)", "AUROC", "seeds", "paper (8B)"]
    for suite in args.suite:
        print(f"\n{suite}\n")
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for row in rows(store.records(suite)):
            print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
