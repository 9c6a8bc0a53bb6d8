"""lm-eval plumbing: resolved task YAMLs, an in-process evaluation on a tiny random Llama, ECE from samples."""

from __future__ import annotations

import math
import shutil
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from bench.evaluate.generation import calibration, choice_probabilities, evaluate_model, per_item
from bench.evaluate.lm_tasks import configs_hash, resolve_tasks, subsample, templates_dir
from bench.spec.generation import EvalSpec
from tests.causal_helpers import tiny_data_dir


def test_resolved_yamls_read_absolute_paths_under_the_data_dir(tmp_path: Path) -> None:
    data = tiny_data_dir(tmp_path / "data")
    folder = resolve_tasks(["gsm8k_local", "mmlu_local"], data, out=tmp_path / "tasks")
    config = yaml.safe_load((folder / "mmlu_local.yaml").read_text())
    files = config["dataset_kwargs"]["data_files"]
    mmlu = data.resolve() / "mmlu"
    assert files == {"dev": str(mmlu / "dev.jsonl"), "test": str(mmlu / "test.jsonl")}
    assert Path(config["dataset_kwargs"]["cache_dir"]).is_absolute()  # the json builder's cache, not $HF_HOME
    template = yaml.safe_load((templates_dir() / "mmlu_local.yaml").read_text())
    assert template["dataset_kwargs"]["data_files"]["test"] == "../shared/data/mmlu/test.jsonl"
    assert resolve_tasks(["mmlu_local", "gsm8k_local"], data, out=tmp_path / "tasks") == folder  # reused
    assert [p.name for p in (tmp_path / "tasks").iterdir()] == [folder.name]  # no temporary folder left


def test_configs_hash_follows_the_used_templates_only(tmp_path: Path) -> None:
    folder = tmp_path / "lm_eval"
    shutil.copytree(templates_dir(), folder)
    before = configs_hash(["mmlu_local"], folder)
    assert before == configs_hash(["mmlu_local"], templates_dir())
    gsm = folder / "gsm8k_local.yaml"
    gsm.write_text(gsm.read_text().replace("num_fewshot: 5", "num_fewshot: 8"))
    from bench.evaluate.lm_tasks import _index

    _index.cache_clear()
    assert configs_hash(["mmlu_local"], folder) == before
    assert configs_hash(["gsm8k_local"], folder) != configs_hash(["gsm8k_local"], templates_dir())


def test_subsample_is_seeded_sorted_and_none_for_all() -> None:
    a = subsample(1000, 10)
    assert a is not None and len(a) == 10 and a.tolist() == sorted(a.tolist())
    assert a.tolist() == subsample(1000, 10).tolist()  # type: ignore[union-attr]
    assert subsample(10, 10) is None and subsample(10, None) is None


def _ece_by_hand(probs: np.ndarray, gold: np.ndarray, n_bins: int = 15) -> float:
    conf, pred = probs.max(1), probs.argmax(1)
    total = 0.0
    for b in range(n_bins):
        lo, hi = b / n_bins, (b + 1) / n_bins
        inside = (conf > lo) & (conf <= hi) if b else (conf >= 0) & (conf <= hi)
        if inside.any():
            total += inside.sum() / len(conf) * abs((pred[inside] == gold[inside]).mean() - conf[inside].mean())
    return float(total)


def test_ece_from_choice_loglikelihoods_by_hand() -> None:
    # softmax is shift-invariant, so loglik = log(p) - 3 gives back p exactly
    samples = [
        {"filtered_resps": [(math.log(p) - 3, False) for p in (0.7, 0.2, 0.1, 1e-9)], "target": 0},
        {"filtered_resps": [(math.log(p) - 3, False) for p in (0.1, 0.6, 0.3, 1e-9)], "target": 2},
    ]
    probs, gold = choice_probabilities(samples)
    assert np.allclose(probs[:, :3], [[0.7, 0.2, 0.1], [0.1, 0.6, 0.3]], atol=1e-8)
    # sample 1: confidence 0.7, correct; sample 2: confidence 0.6, wrong (predicts 1, gold 2); bins
    # (0.667, 0.733] and (0.533, 0.6]: ECE = (1/2)|1 - 0.7| + (1/2)|0 - 0.6| = 0.15 + 0.30 = 0.45
    metrics = calibration(samples)
    assert metrics["ece"] == pytest.approx(0.45, abs=1e-8)
    assert metrics["acc_choice_probs"] == 0.5
    assert metrics["nll"] == pytest.approx(-(math.log(0.7) + math.log(0.3)) / 2, abs=1e-8)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One evaluation pass of a LoRA-wrapped tiny random Llama over a handful of GSM8K and MMLU items."""
    from bench.models.causal import causal_base, load_causal_tokenizer
    from bench.sdk.causal import wrap_causal_lora

    data = tiny_data_dir(tmp_path_factory.mktemp("data"))
    model = wrap_causal_lora(causal_base("random:tiny-llama", "fp32").new(), r=2, alpha=4, dropout=0.0,
                             target_modules=None)
    evals = [EvalSpec(task="gsm8k_local", name="gsm8k", num_fewshot=1, max_items=2, max_gen_toks=4, batch_size=2),
             EvalSpec(task="mmlu_local", name="mmlu_0shot", num_fewshot=0, max_items=6, batch_size=4),
             EvalSpec(task="mmlu_local", name="mmlu_2shot", num_fewshot=2, batch_size=4)]
    out = evaluate_model(model, load_causal_tokenizer("random:tiny-llama"), evals, data, quiet=True)
    return {"out": out, "evals": evals, "data": data}


def test_in_process_evaluation_reports_metrics_and_provenance(tiny_run: dict[str, Any]) -> None:
    out, data = tiny_run["out"], tiny_run["data"]
    gsm, mmlu0, mmlu2 = (out["evals"][n] for n in ("gsm8k", "mmlu_0shot", "mmlu_2shot"))
    assert set(gsm) >= {"exact_match_strict_match", "exact_match_flexible_extract"}
    assert gsm["n_items"] == 2 and gsm["num_fewshot"] == 1
    assert set(mmlu0) >= {"acc", "ece", "brier", "nll"} and mmlu0["n_items"] == 6 and mmlu0["num_fewshot"] == 0
    assert mmlu2["n_items"] == 8 and mmlu2["num_fewshot"] == 2  # no max_items: every test item
    assert mmlu0["acc"] == mmlu0["acc_choice_probs"]  # lm-eval's argmax and ours agree
    assert out["lm_eval"]["version"] == version("lm-eval")
    assert out["lm_eval"]["tasks_hash"] == configs_hash(["gsm8k_local", "mmlu_local"])
    resolved = yaml.safe_load((Path(out["lm_eval"]["tasks_dir"]) / "gsm8k_local.yaml").read_text())
    assert resolved["dataset_kwargs"]["data_files"]["test"] == str(data.resolve() / "gsm8k" / "test.jsonl")
    eff = out["efficiency"]
    assert {"eval_gsm8k_wall_s", "eval_mmlu_0shot_wall_s", "eval_mmlu_2shot_wall_s"} <= set(eff)
    assert 0 < eff["gen_tokens"] <= 2 * 4 and eff["gen_tokens_per_s"] > 0


def test_ece_equals_a_hand_computation_from_lm_evals_logged_loglikelihoods(tiny_run: dict[str, Any]) -> None:
    result = tiny_run["out"]["results"]["mmlu_0shot"]
    samples = result["samples"]["mmlu_local"]
    lls = np.array([[float(r[0]) for r in s["filtered_resps"]] for s in samples])
    gold = np.array([s["target"] for s in samples])
    probs = np.exp(lls) / np.exp(lls).sum(1, keepdims=True)
    assert tiny_run["out"]["evals"]["mmlu_0shot"]["ece"] == pytest.approx(_ece_by_hand(probs, gold), abs=1e-12)
    items = per_item(result, tiny_run["evals"][1])
    assert items["mmlu_0shot_doc_id"].tolist() == sorted(s["doc_id"] for s in samples)
    assert items["mmlu_0shot_probs"].shape == (6, 4)
