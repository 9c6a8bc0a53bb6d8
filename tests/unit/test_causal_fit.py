"""LoRA and its peft variants on a generation task: the method contract on a tiny random Llama."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from bench.errors import BenchError
from bench.sdk.causal import CausalFitted, mean_target_loss, reload_check, sft_data
from bench.sdk.method import FitContext
from bench.sdk.registry import get_method
from bench.spec.config import build
from tests.causal_helpers import sft_ctx

MODEL = "random:tiny-llama"
#: (config overrides) for each LoRA variant a suite can list as a generation method.
GENERATION_CASES = [{}, {"variant": "pissa"}, {"variant": "olora"}, {"variant": "dora"}, {"variant": "rslora"}]


def _ctx(epochs: int = 2, log: list[dict] | None = None) -> FitContext:
    return sft_ctx(MODEL, epochs=epochs, log=log)


@pytest.mark.parametrize("config", GENERATION_CASES, ids=lambda c: c.get("variant", "lora"))
def test_lora_variants_on_a_generation_task(config: dict, tmp_path: Path) -> None:
    entry = get_method("lora")
    method = entry.adapter(build(entry.config, {"r": 4, "alpha": 8, "dropout": 0.0, **config}, "lora"))
    ctx = _ctx()
    fitted = method.fit(ctx)
    assert isinstance(fitted, CausalFitted) and fitted.tokenizer is ctx.tokenizer
    assert 0 < fitted.trainable_parameters() < fitted.total_parameters()
    fresh = dict(ctx.new_model().named_parameters())
    for name, param in fitted.model.named_parameters():  # the base weights the adapter sits on are untouched
        bare = name.replace("base_model.model.", "").replace(".base_layer", "")
        if "lora_" not in name and bare in fresh:
            assert torch.equal(param, fresh[bare]), name
    figures = reload_check(fitted, lambda folder: method.load(ctx, folder), sft_data(ctx, val=True))
    assert figures["reload_max_abs_diff"] <= 1e-5 and figures["adapter_bytes"] > 0
    with pytest.raises(BenchError, match="lm-eval"):
        fitted.predict_proba(ctx.val)


def test_answer_loss_falls_and_is_logged_per_epoch() -> None:
    rows: list[dict] = []
    ctx = _ctx(epochs=3, log=rows)
    figures = {"batch_size": 8, "device": ctx.device, "precision": "fp32", "pad_id": ctx.tokenizer.pad_token_id}
    before = mean_target_loss(ctx.new_model(), sft_data(ctx, val=True), **figures)
    entry = get_method("lora")
    fitted = entry.adapter(build(entry.config, {"r": 8, "alpha": 16, "dropout": 0.0}, "lora")).fit(ctx)
    after = mean_target_loss(fitted.model, sft_data(ctx, val=True), **figures)
    assert [r["epoch"] for r in rows] == [1, 2, 3] and rows[-1]["val_loss"] == pytest.approx(after, rel=1e-5)
    assert after < before
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]


def test_sft_loss_counts_only_answer_tokens() -> None:
    ctx = _ctx()
    data = sft_data(ctx, val=True)
    model = ctx.new_model().eval()
    pad = ctx.tokenizer.pad_token_id
    got = mean_target_loss(model, data, batch_size=2, device=ctx.device, precision="fp32", pad_id=pad)
    total, count = 0.0, 0
    with torch.no_grad():  # one item at a time, no padding: mean NLL of each answer token given its prefix
        for ids, mask in zip(data.input_ids, data.target_masks, strict=True):
            logp = torch.log_softmax(model(torch.from_numpy(ids)[None]).logits[0].float(), -1)
            for t in np.flatnonzero(mask):
                total, count = total - float(logp[t - 1, ids[t]]), count + 1
    assert got == pytest.approx(total / count, rel=1e-5)
