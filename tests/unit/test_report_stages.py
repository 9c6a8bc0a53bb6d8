"""The leaderboard and plots of multi-stage generation runs: scores after each stage, active share, RL curves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.report import write_report


def gen_record(run_id: str, method: str, *, em: float, em_sft: float | None, active: float | None,
               rl: bool) -> dict[str, Any]:
    metrics: dict[str, Any] = {"gsm8k_exact_match_strict_match": em}
    if em_sft is not None:
        metrics["stages"] = {"sft": {"gsm8k_exact_match_strict_match": em_sft}}
    diagnostics: dict[str, Any] = {}
    if active is not None:  # a generation record keeps the method's own diagnostics under "method"
        diagnostics["partition"] = {"stage1_fraction": active, "stage2_fraction": active / 2,
                                    "jaccard": 0.5}
        diagnostics["importance_system1"] = [{"layer": 0, "module": "q", "matrix": "A", "share": 0.75},
                                             {"layer": 1, "module": "v", "matrix": "B", "share": 0.25}]
    curves = {"rl_step": [1, 2, 3], "rl_reward": [0.1, 0.4, 0.9], "rl_kl": [0.0, 0.01, 0.02]} if rl else {}
    return {
        "schema_version": 2, "run_id": run_id, "kind": "generation", "status": "success", "error": None,
        "spec": {"task": {"name": "gsm8k", "kind": "generation", "evals": [{"name": "gsm8k", "task": "gsm8k_local"}]},
                 "noise": {"kind": "none", "rate": 0.0, "label": "clean"}, "model": {"name": "smollm2"},
                 "method": {"id": method}, "seed": 0},
        "env": {"device": "cpu", "git_commit": "abc", "git_dirty": False, "packages": {}},
        "metrics": metrics, "efficiency": {"trainable_params": 1000 if active is None else 1000 * active},
        "curves": curves, "diagnostics": {"method": diagnostics},
    }


def test_stage_columns_active_share_and_plots(tmp_path: Path) -> None:
    records = [gen_record("a1", "lora", em=0.10, em_sft=None, active=None, rl=False),
               gen_record("b2", "lora-par", em=0.25, em_sft=0.15, active=0.4, rl=True)]
    paths = write_report(records, tmp_path, suite="s")
    names = {p.name for p in paths}
    assert {"rl_curves.png", "importance.png", "pareto_generation_vs_trainable_params.png"} <= names
    text = (tmp_path / "leaderboard.md").read_text()
    header = next(line for line in text.splitlines() if line.startswith("| method") and "after sft" in line)
    cols = [c.strip() for c in header.strip("|").split("|")]
    row = next(line for line in text.splitlines() if line.startswith("| lora-par "))
    cells = dict(zip(cols, [c.strip() for c in row.strip("|").split("|")], strict=True))
    assert cells["gsm8k EM strict after sft (%) ↑"].strip("*") == "15.00"
    assert cells["gsm8k EM strict (%) ↑"].strip("*") == "25.00"
    assert cells["stage-1 active (%) ↓"].strip("*") == "40.00" and cells["stage-2 active (%) ↓"].strip("*") == "20.00"
    lora = next(line for line in text.splitlines() if line.startswith("| lora "))
    assert dict(zip(cols, [c.strip() for c in lora.strip("|").split("|")], strict=True))[
        "gsm8k EM strict after sft (%) ↑"] == "–"  # a one-stage run has no "after sft" score


def test_no_stage_plots_without_stage_data(tmp_path: Path) -> None:
    paths = write_report([gen_record("a1", "lora", em=0.1, em_sft=None, active=None, rl=False)], tmp_path, suite="s")
    assert not {"rl_curves.png", "importance.png"} & {p.name for p in paths}
