"""Speed of the harness itself, each figure beside a reference measured in the same run.

- ``bench ls`` and a rerun of a fully stored suite (``noisy-text-smoke``, seeds 0-2: 72 cells)
  against a bare interpreter start (``python -c pass``), interleaved round by round;
- one smoke cell's harness overhead: the cell's wall time minus its train and eval phases, from
  its record (``started_at``/``finished_at``, whole seconds, and the ``*_wall_s`` phase figures),
  and the whole command's (``bench run`` wall time, process start and worker spawn included).

The stored suite is the committed baseline (results/baselines/noisy-text-smoke) copied to a
scratch folder; a cell whose run id is not in it (a method config changed since the baseline
was made) gets a stand-in: a copy of the baseline record of the same method, noise and seed
under the new run id, so the rerun skips all 72 and reads as many records as a real store.

Measured (2-core AMD EPYC, shared with other jobs, torch 2.13 CPU; docs/speed.md)::

    python -m benchmarks.harness_speed --rounds 5
    python -m benchmarks.harness_speed --overhead   # also runs one smoke cell (~30 s)
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
BASELINE = REPO / "results" / "baselines" / "noisy-text-smoke"
SUITE = "noisy-text-smoke"
RERUN_SEEDS = "seeds=[0,1,2]"
#: The overhead cell: TREC sym-20 %, lora, seed 0 of noisy-text-smoke (in the baseline).
OVERHEAD_NOISE = {"kind": "symmetric", "rate": 0.2}
OVERHEAD_METHOD = "lora"
#: Record sections that carry a cell's numbers (compared with the baseline's, bit for bit).
NUMBER_SECTIONS = ("metrics", "curves", "noise", "diagnostics")


def bench_argv(*args: str) -> list[str]:
    """``bench ARGS`` as this interpreter runs it (the console script's own entry point)."""
    return [sys.executable, "-c", "import sys; from bench.cli import main; sys.exit(main())", *args]


def run_seconds(argv: Sequence[str], *, env: dict[str, str] | None = None, cwd: Path = REPO) -> float:
    """Wall seconds of one command; raises with its stderr if it fails."""
    start = time.perf_counter()
    done = subprocess.run(list(argv), cwd=cwd, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {done.returncode}: {done.stderr[-2000:]}")
    return seconds


def interleaved(subject: Callable[[], float], reference: Callable[[], float], rounds: int) -> dict[str, Any]:
    """``rounds`` reference/subject pairs, one after the other; medians and their ratio."""
    subj, ref = [], []
    for _ in range(rounds):
        ref.append(reference())
        subj.append(subject())
    med_s, med_r = statistics.median(subj), statistics.median(ref)
    return {"subject_s": subj, "reference_s": ref, "subject_median_s": med_s, "reference_median_s": med_r,
            "ratio": med_s / med_r}


def python_start() -> float:
    """A bare interpreter start and exit: the reference of the command timings."""
    return run_seconds([sys.executable, "-c", "pass"])


def stored_suite(root: Path) -> dict[str, int]:
    """Fill ``root`` with the baseline store plus stand-ins, so every cell of the rerun suite is stored.

    Returns the counts: ``cells`` in the suite, ``stand_ins`` written.
    """
    from bench.data.loaders import resolve_data_dir
    from bench.results.store import Store
    from bench.run.runner import resolve_suite
    from bench.spec.suite import load_suite

    if root.exists():
        shutil.rmtree(root)
    shutil.copytree(BASELINE, root)
    store = Store(root)
    by_cell = {(r["spec"]["method"]["id"], r["spec"]["noise"]["label"], r["spec"]["seed"]): r
               for r in store.records(SUITE) if r.get("status") == "success"}
    cells = resolve_suite(load_suite(SUITE, (RERUN_SEEDS,)), resolve_data_dir(None))
    stand_ins = 0
    for cell in cells:
        if store.succeeded(SUITE, cell.cell.method.id, cell.run_id):
            continue
        model = by_cell[(cell.cell.method.id, cell.spec["noise"]["label"], cell.spec["seed"])]
        record = {**copy.deepcopy(model), "run_id": cell.run_id, "spec": json.loads(json.dumps(cell.spec))}
        store.write(record)
        stand_ins += 1
    return {"cells": len(cells), "stand_ins": stand_ins}


def rerun_seconds(root: Path) -> float:
    """One ``bench run`` of the fully stored suite (every cell skipped)."""
    return run_seconds(bench_argv("run", "--suite", SUITE, "--set", RERUN_SEEDS, "--results-dir", str(root),
                                  "--quiet"))


def ls_seconds() -> float:
    """One ``bench ls``."""
    return run_seconds(bench_argv("ls"))


def overhead_suite(folder: Path) -> Path:
    """A one-cell suite file: the smoke's TREC task and training, sym-20 %, lora, seed 0."""
    raw = yaml.safe_load((REPO / "suites" / f"{SUITE}.yaml").read_text())
    raw.update(include=str(REPO / "suites" / str(raw["include"])), name="speed-overhead",
               noise=[OVERHEAD_NOISE], seeds=[0], methods={OVERHEAD_METHOD: {}})
    path = folder / "speed-overhead.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _seconds_between(record: dict[str, Any]) -> float:
    start, end = (datetime.fromisoformat(record[k].replace("Z", "+00:00")) for k in ("started_at", "finished_at"))
    return (end - start).total_seconds()


def cell_overhead(folder: Path) -> dict[str, Any]:
    """Run the overhead cell in a fresh store (one thread, a worker process as ``bench run`` does).

    Returns the record's phase figures and the overhead shares, and whether its numbers equal the
    committed baseline's record of the same run id (None: no such record, or another CPU).
    """
    results = folder / "results"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command_s = run_seconds(bench_argv("run", "--suite", str(overhead_suite(folder)), "--results-dir",
                                       str(results), "--quiet"), env=env)
    (path,) = [p for p in results.rglob("*.json") if not p.name.startswith(".")]
    record = json.loads(path.read_text())
    eff = record["efficiency"]
    phases = {k: float(eff.get(f"{k}_wall_s") or 0.0) for k in ("setup", "train", "eval", "reload")}
    cell_s = float(eff.get("cell_wall_s") or _seconds_between(record))  # whole seconds before cell_wall_s
    # the final model's validation score (val_accuracy, for sweeps) is evaluation, timed outside the eval phase
    work = phases["train"] + phases["eval"] + float(eff.get("val_eval_wall_s") or 0.0)
    out: dict[str, Any] = {
        "run_id": record["run_id"], "command_s": command_s, "cell_s": cell_s,
        **{f"{k}_s": v for k, v in phases.items()},
        "cell_overhead_pct": 100 * (cell_s - work) / cell_s,
        "phase_overhead_pct": 100 * (phases["setup"] + phases["reload"]) / sum(phases.values()),
        "command_overhead_pct": 100 * (command_s - work) / command_s,
        "same_numbers_as_baseline": None,
    }
    base = next((p for p in BASELINE.rglob(f"{record['run_id']}.json")), None)
    if base is not None:
        old = json.loads(base.read_text())
        if old["env"].get("cpu") == record["env"].get("cpu"):
            out["same_numbers_as_baseline"] = all(
                _common_equal(record[k], old[k]) for k in NUMBER_SECTIONS)
    return out


def _common_equal(new: Any, old: Any) -> bool:
    """Equal where both have a value: keys added since the baseline (new metrics) are not compared."""
    if isinstance(new, dict) and isinstance(old, dict):
        return all(_common_equal(new[k], old[k]) for k in new.keys() & old.keys())
    return bool(new == old)


def main(argv: list[str] | None = None) -> int:
    """Print the figures (and write them as JSON with ``--json``)."""
    p = argparse.ArgumentParser(description="Speed of the harness itself: ls, stored rerun, cell overhead.")
    p.add_argument("--rounds", type=int, default=5, help="interleaved subject/reference pairs")
    p.add_argument("--overhead", action="store_true", help="also run one smoke cell (~30 s) for the overhead")
    p.add_argument("--scratch", type=Path, default=Path("/tmp/peftbench-speed"), help="scratch folder")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    args.scratch.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"loadavg_1m_before": os.getloadavg()[0]}
    result["ls"] = interleaved(ls_seconds, python_start, args.rounds)
    result["store"] = stored_suite(args.scratch / "store")
    result["rerun"] = interleaved(lambda: rerun_seconds(args.scratch / "store"), python_start, args.rounds)
    if args.overhead:
        shutil.rmtree(args.scratch / "cell", ignore_errors=True)
        (args.scratch / "cell").mkdir()
        result["overhead"] = cell_overhead(args.scratch / "cell")
    for key in ("ls", "rerun"):
        r = result[key]
        print(f"{key}: {r['subject_median_s']:.2f} s median vs python -c pass {r['reference_median_s']:.3f} s "
              f"({r['ratio']:.1f}x); rounds {[round(x, 2) for x in r['subject_s']]}")
    if "overhead" in result:
        o = result["overhead"]
        print(f"cell {o['run_id']}: wall {o['cell_s']:.2f} s (record's cell_wall_s), setup {o['setup_s']:.2f}, "
              f"train {o['train_s']:.2f}, eval {o['eval_s']:.2f}, reload {o['reload_s']:.2f}; overhead "
              f"{o['cell_overhead_pct']:.1f} % of the cell, {o['command_overhead_pct']:.1f} % of the command "
              f"({o['command_s']:.1f} s); numbers equal to the baseline's: {o['same_numbers_as_baseline']}")
    print(f"load average (1 min) before: {result['loadavg_1m_before']:.2f}, after: {os.getloadavg()[0]:.2f}")
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
