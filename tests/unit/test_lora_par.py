"""lora-par end to end on a tiny random Llama: split, importance, partition, masked SFT, GRPO (TRL), reload."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from bench.errors import BenchError
from bench.sdk.causal import reload_check, sft_data
from bench.sdk.registry import get_method
from bench.spec.config import build
from methods.lora_par_partition import lora_parameters
from tests.causal_helpers import sft_ctx

MODEL = "random:tiny-llama"


def gsm_ctx(n: int = 16, *, log: list[dict[str, Any]] | None = None) -> Any:
    """A generation FitContext of GSM8K-shaped pairs: one-step answers (System 1) and three-step ones (System 2)."""
    questions, answers = [], []
    for i in range(n):
        questions.append(f"Tom has {i} apples and buys {i + 2} more. How many apples does he have?")
        if i % 2:  # two calculator annotations: System 2 under the heuristic
            answers.append(f"He buys {i + 2}.\nHe has {i} + {i + 2} = <<{i}+{i + 2}={2 * i + 2}>>{2 * i + 2}.\n"
                           f"Doubled: <<{2 * i + 2}*2={4 * i + 4}>>{4 * i + 4}.\n#### {2 * i + 2}")
        else:
            answers.append(f"He has {2 * i + 2} apples.\n#### {2 * i + 2}")
    return sft_ctx(MODEL, epochs=1, log=log, prompts=questions, responses=answers, n_val=2, max_length=96,
                   batch_size=4)


SMALL = {"importance_samples": 4, "rl_max_prompts": 2, "num_generations": 2, "rl_batch_size": 2,
         "rl_grad_accum": 1, "max_completion_length": 8, "rl_lr": 1e-3, "theta": 0.9, "beta": 0.04}


def fit(config: dict[str, Any]) -> SimpleNamespace:
    rows: list[dict[str, Any]] = []
    ctx = gsm_ctx(log=rows)
    entry = get_method("lora-par")
    method = entry.adapter(build(entry.config, {**SMALL, **config}, "lora-par"))
    initial: dict[str, torch.Tensor] = {}
    real_model = method._model

    def spy(c: Any) -> torch.nn.Module:  # keep the initial LoRA to check which elements moved
        model = real_model(c)
        initial.update({k: v.detach().clone() for k, v in lora_parameters(model).items()})
        return model

    method._model = spy  # type: ignore[method-assign]
    return SimpleNamespace(ctx=ctx, method=method, fitted=method.fit(ctx), rows=rows, initial=initial)


@pytest.fixture(scope="module")
def par() -> SimpleNamespace:
    return fit({})


def test_partition_statistics_and_activity(par: SimpleNamespace) -> None:
    d = par.fitted.diagnostics
    assert d["systems"]["source"] == "heuristic(steps>=3, operations>=2)"
    assert d["systems"]["balance"]["System1"] == 8 and d["systems"]["balance"]["System2"] == 8
    p = d["partition"]
    assert p["s1only"] + p["shared"] == p["s1"] and p["s2only"] + p["shared"] == p["s2"]
    assert 0 < p["stage1_active"] < p["total"] and 0 < p["stage2_active"] < p["total"]
    assert p["jaccard"] == pytest.approx(p["shared"] / (p["s1"] + p["s2"] - p["shared"]))
    assert d["sft_items"] == 8  # the System-1 items
    assert d["rl"]["trl_version"] == "1.16.0" and d["rl"]["beta"] == 0.04 and d["rl"]["n_prompts"] == 2
    assert "sft" in par.fitted.checkpoints
    # elements trained in either stage, each counted once
    assert par.fitted.trainable_parameters() == p["trained"] == p["s1only"] + p["s2only"] + p["shared"]
    assert p["s1only_of_union"] + p["s2only_of_union"] + p["jaccard"] == pytest.approx(1.0)


def test_elements_outside_both_stages_never_move(par: SimpleNamespace) -> None:
    from peft import get_peft_model_state_dict

    d = par.fitted.diagnostics
    assert d["frozen_unchanged_sft"] and d["rl"]["frozen_unchanged_rl"]
    # the elements of neither stage are bit-identical to their initial values after SFT and GRPO
    found = par.method.last_partition
    final = lora_parameters(par.fitted.model)
    moved = 0
    for name, mask1, mask2 in zip(found.names, found.masks(1).values(), found.masks(2).values(),
                                  strict=True):
        frozen = ~(mask1 | mask2)
        assert torch.equal(final[name].detach()[frozen], par.initial[name][frozen]), name
        moved += int((final[name].detach() != par.initial[name]).sum())
    assert moved > 0  # and training did move the trainable ones
    sft = par.fitted.checkpoints["sft"]
    assert set(sft) == set(get_peft_model_state_dict(par.fitted.model))


def test_grpo_logs_reward_terms_per_step(par: SimpleNamespace) -> None:
    steps = [r for r in par.rows if "rl_step" in r]
    assert [r["rl_step"] for r in steps] == [1, 2]  # 2 prompts, one prompt's 2 completions per step
    for key in ("rl_reward", "rl_kl", "rl_completion_length", "rl_reward_correctness", "rl_reward_tag_count"):
        assert key in steps[0], key
    assert [r["epoch"] for r in par.rows if "epoch" in r] == [1]  # the SFT stage's curve row


def test_reload_check_of_the_final_adapter(par: SimpleNamespace) -> None:
    figures = reload_check(par.fitted, lambda folder: par.method.load(par.ctx, folder), sft_data(par.ctx, val=True))
    assert figures["reload_max_abs_diff"] <= 1e-5


def test_bad_settings_are_one_line_errors() -> None:
    entry = get_method("lora-par")
    for bad, message in (({"theta": 0.0}, "Invalid theta"), ({"theta": 1.5}, "Invalid theta"),
                         ({"shared_alpha": -0.1}, "Invalid shared_alpha"), ({"shared_beta": 2}, "Invalid shared_beta"),
                         ({"classifier": "oracle"}, "Invalid classifier"),
                         ({"init": "default"}, "zero importance"),
                         ({"classifier": "precomputed"}, "needs classifier_file")):
        with pytest.raises(BenchError, match=message):
            build(entry.config, bad, "lora-par")


def test_precomputed_file_missing_questions_fails_the_cell(tmp_path: Path) -> None:
    path = tmp_path / "labels.jsonl"
    path.write_text('{"question": "unrelated", "_result": "System1"}\n')
    with pytest.raises(BenchError, match="missing"):
        fit({"classifier": "precomputed", "classifier_file": str(path), "rl": False})


def test_kl_coefficient_defaults_to_the_pinned_trl_default(tmp_path: Path) -> None:
    from methods.lora_par import LoraParConfig
    from methods.lora_par_rl import grpo_config

    config = grpo_config(LoraParConfig().rl_settings(), gsm_ctx(), str(tmp_path))
    assert config.beta == 0.0 and config.loss_type == "dapo"  # TRL 1.16: no KL term unless beta is set
    assert config.learning_rate == 5e-6 and config.weight_decay == 0.1 and config.max_grad_norm == 0.1


def test_pissa_init_partitions_trains_and_reloads_as_a_converted_adapter() -> None:
    from peft import get_peft_model_state_dict

    run = fit({"init": "pissa"})
    d = run.fitted.diagnostics
    assert d["partition"]["init"] == "pissa" and d["frozen_unchanged_sft"] and d["rl"]["frozen_unchanged_rl"]
    assert 0 < d["partition"]["stage1_active"] < d["partition"]["total"]
    # the evaluated model is the converted rank-2r delta on the original base; the SFT checkpoint too
    final = get_peft_model_state_dict(run.fitted.model)
    assert {k: v.shape for k, v in run.fitted.checkpoints["sft"].items()} == {k: v.shape for k, v in final.items()}
    fresh = dict(run.ctx.new_model().named_parameters())
    for name, param in run.fitted.model.named_parameters():
        if "lora_" not in name:  # the base under the converted adapter is the original one
            assert torch.equal(param, fresh[name.replace("base_model.model.", "").replace(".base_layer", "")]), name
    figures = reload_check(run.fitted, lambda folder: run.method.load(run.ctx, folder), sft_data(run.ctx, val=True))
    assert figures["reload_max_abs_diff"] <= 1e-5
