"""How the regression gate behaves on a multi-seed store: false alarms and the smallest drop it catches.

    .venv/bin/python scripts/gate_evidence.py results/baselines/noisy-text-smoke [--fail accuracy:-1pp]

False alarms: each seed in turn plays an unchanged tree's CI run (one new seed) against the
other seeds as the baseline; the gate is run exactly as CI runs it (one-sided, Holm over all
gated cells, the pooled all-cells test beside them) and the script counts how often it fires.
Smallest drop: for each cell, the accuracy drop a single new run needs before the gate fails,
when it is the only changed cell (the first step of Holm's procedure at half of α: one-sided
p < α / 2m), given the baseline seeds CI compares against (all but seed 0); then the smallest
drop shared by every cell that the pooled test catches (one-sided p < α / 2), computed and
checked end to end: seed 0's records with every cell lowered by d points, through the gate.
"""

from __future__ import annotations

import argparse
import math
import shutil
import tempfile
from collections import defaultdict
from pathlib import Path

from scipy import stats

from bench import api
from bench.results.compare import ALL_CELLS, cell_key, cell_label
from bench.results.gate import parse_fail
from bench.results.query import latest_records, record_value
from bench.results.store import Store


def _copy_side(records: list[dict], root: Path, src: Path) -> None:
    store = Store(root)
    for r in records:
        store.write(r)
        suite, method, rid = r["spec"]["suite"], r["spec"]["method"]["id"], r["run_id"]
        preds = src / suite / method / f"{rid}.preds.npz"
        if preds.exists():
            shutil.copy(preds, root / suite / method / preds.name)


def main() -> None:
    """Print the false-alarm count and the per-cell smallest detectable drop."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("store", type=Path)
    parser.add_argument("--fail", default="accuracy:-1pp")
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--ci-seed", type=int, default=0, help="the seed CI runs (held out of the baseline)")
    args = parser.parse_args()
    rule = parse_fail(args.fail)
    records = [r for r in latest_records(Store(args.store).records()) if r.get("status") == "success"]
    seeds = sorted({int(r["spec"]["seed"]) for r in records})
    print(f"{len(records)} runs, seeds {seeds}, rule {rule.text}, α = {args.alpha}\n")

    print("False alarms (each seed as an unchanged tree's run against the other seeds):")
    alarms = 0
    for seed in seeds:
        with tempfile.TemporaryDirectory() as tmp:
            base, new = Path(tmp) / "base", Path(tmp) / "new"
            _copy_side([r for r in records if r["spec"]["seed"] != seed], base, args.store)
            _copy_side([r for r in records if r["spec"]["seed"] == seed], new, args.store)
            result = api.compare(base, new, fail=(args.fail,), alpha=args.alpha)
            failures = result.failures()
            smallest = min(result.gated_p_values().values())
            alarms += bool(failures)
            cells = "; ".join(cell_label(row.cell) for row, _ in failures) or "none"
            print(f"  seed {seed} as new: gate {'FIRES' if failures else 'passes'} "
                  f"(smallest adjusted p {smallest:.3f}); failing cells: {cells}")
    print(f"  fired in {alarms} of {len(seeds)} reseeded reruns\n")

    by_cell: dict[tuple[str, ...], list[float]] = defaultdict(list)
    for r in records:
        if r["spec"]["seed"] != args.ci_seed and (v := record_value(r, rule.metric)) is not None:
            by_cell[cell_key(r)].append(v)
    m = len(by_cell)
    print(f"Smallest {rule.metric} drop that fails the gate, per cell (baseline: seeds other than "
          f"{args.ci_seed}; one-sided p < α/(2·{m}); and beyond {rule.text}):")
    drops = []
    for cell in sorted(by_cell):
        values = by_cell[cell]
        n = len(values)
        mean, s = sum(values) / n, stats.tstd(values) if n > 1 else math.nan
        t_crit = stats.t.ppf(1 - args.alpha / (2 * m), n - 1)
        drop = max(t_crit * s * math.sqrt(1 + 1 / n), abs(rule.limit))
        drops.append(drop)
        print(f"  {cell_label(cell):55s} mean {100 * mean:6.2f}  sd {100 * s:5.2f} pp  → drop ≥ {100 * drop:5.1f} pp")
    drops.sort()
    print(f"  median {100 * drops[len(drops) // 2]:.1f} pp, smallest {100 * drops[0]:.1f} pp, "
          f"largest {100 * drops[-1]:.1f} pp\n")
    _uniform_drop(records, args, rule, sorted(by_cell))


def _uniform_drop(records: list[dict], args: argparse.Namespace, rule, cells: list) -> None:
    """The pooled test's smallest detectable drop in every cell, computed, then checked through the gate."""
    by_seed: dict[int, list[float]] = defaultdict(list)
    for r in records:
        if r["spec"]["seed"] != args.ci_seed and (v := record_value(r, rule.metric)) is not None:
            by_seed[int(r["spec"]["seed"])].append(v)
    means = [sum(v) / len(v) for s, v in sorted(by_seed.items()) if len(v) == len(cells)]
    n = len(means)
    s = stats.tstd(means)
    drop = max(stats.t.ppf(1 - args.alpha / 2, n - 1) * s * math.sqrt(1 + 1 / n), abs(rule.limit))
    print(f"The pooled test (each seed's mean over the {len(cells)} cells): mean {100 * sum(means) / n:.2f}, "
          f"sd {100 * s:.2f} pp over {n} seeds → a new run whose mean over the cells lies ≥ {100 * drop:.1f} pp "
          "below that mean fails the gate")
    print(f"Checked through the gate: seed {args.ci_seed}'s runs with every cell lowered by d points")
    for d in range(0, 11):
        with tempfile.TemporaryDirectory() as tmp:
            base, new = Path(tmp) / "base", Path(tmp) / "new"
            _copy_side([r for r in records if r["spec"]["seed"] != args.ci_seed], base, args.store)
            lowered = []
            for r in records:
                if r["spec"]["seed"] == args.ci_seed:
                    r = {**r, "metrics": {**r["metrics"], rule.metric: r["metrics"][rule.metric] - d / 100}}
                    lowered.append(r)
            _copy_side(lowered, new, args.store)
            result = api.compare(base, new, fail=(args.fail,), alpha=args.alpha)
            failing = [cell_label(row.cell) for row, _ in result.failures()]
            pooled = [row for row in result.rows if row.cell == ALL_CELLS and row.metric == rule.metric]
            p = result.gated_p_values().get(id(pooled[0]), math.nan) if pooled else math.nan
            print(f"  d = {d:2d} pp: gate {'FIRES' if failing else 'passes'} (pooled adjusted p {p:.4f}); "
                  f"failing: {', '.join(failing) or 'none'}")
            if failing and ALL_CELLS in [row.cell for row, _ in result.failures()]:
                break


if __name__ == "__main__":
    main()
