"""lora-dropout and ba-lora (NLG form) on a generation task: the method contract on a tiny random Llama,
the causal test-time ensemble, and the NLG objective on hand-computed numbers."""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

from bench.data.sft import SftData
from bench.sdk.causal import CausalFitted, mean_target_loss, reload_check, sft_data, wrap_causal_lora
from bench.sdk.registry import get_method
from bench.spec.config import build
from methods.ba_lora_losses import Objective
from methods.lora_dropout import (
    LoraDropoutConfig,
    attach_causal_ensemble,
    attach_masks,
    member_masks,
    member_seed,
    stacked_members,
)
from tests.causal_helpers import sft_ctx

CASES = {
    "lora-dropout": ("lora-dropout", {"r": 4, "alpha": 8, "p": 0.2, "ensemble": 2}),
    "ba-lora": ("ba-lora", {"r": 4, "alpha": 4}),
}


@pytest.fixture(scope="module", params=list(CASES))
def fitted(request: pytest.FixtureRequest) -> SimpleNamespace:
    name, config = CASES[request.param]
    rows: list[dict[str, Any]] = []
    ctx = sft_ctx(epochs=2, log=rows, lr=2e-2)
    entry = get_method(name)
    method = entry.adapter(build(entry.config, config, name))
    return SimpleNamespace(case=request.param, ctx=ctx, method=method, fitted=method.fit(ctx), rows=rows)


def test_contract_and_reload(fitted: SimpleNamespace) -> None:
    ctx, result = fitted.ctx, fitted.fitted
    assert isinstance(result, CausalFitted) and result.tokenizer is ctx.tokenizer
    assert 0 < result.trainable_parameters() < result.total_parameters()
    fresh = dict(ctx.new_model().named_parameters())
    for name, param in result.model.named_parameters():  # the base weights the adapter sits on are untouched
        bare = name.replace("base_model.model.", "").replace(".base_layer", "")
        if "lora_" not in name:
            assert not param.requires_grad and torch.equal(param, fresh[bare]), name
    figures = reload_check(result, lambda folder: fitted.method.load(ctx, folder), sft_data(ctx, val=True))
    assert figures["reload_max_abs_diff"] <= 1e-5 and figures["adapter_bytes"] > 0


def test_training_lowers_the_answer_loss_and_logs_terms(fitted: SimpleNamespace) -> None:
    ctx, rows = fitted.ctx, fitted.rows
    val = sft_data(ctx, val=True)
    figures = {"batch_size": 8, "device": ctx.device, "precision": "fp32", "pad_id": ctx.tokenizer.pad_token_id}
    before = mean_target_loss(ctx.new_model(), val, **figures)
    # tiny-llama starts near ln(49152) = 10.80 (measured 10.842); two epochs on 24 pairs: 10.754 (lora-dropout),
    # 10.752 (ba-lora)
    assert before == pytest.approx(10.8425, abs=1e-3)
    assert [r["epoch"] for r in rows] == [1, 2]
    assert rows[-1]["val_loss"] < rows[0]["val_loss"] < before - 0.05
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    if fitted.case == "lora-dropout":
        # masks drawn at p = 0.2 zero 2p - p^2 = 36 % of dW's entries
        assert all(0.25 < r["mask_sparsity"] < 0.47 for r in rows)
        assert fitted.fitted.diagnostics["ensemble"] == 2
    else:
        assert {"task_loss", "consistency_raw", "diversity_raw", "svd_raw", "entropy", "topk_share",
                "kl_to_reference", "reference_pass_s"} <= set(rows[-1])
        assert rows[0]["kl_to_reference"] < rows[-1]["kl_to_reference"]  # the model moves off its initial state
        assert fitted.fitted.diagnostics["reference_max_abs_diff"] == 0.0


# --- the causal test-time ensemble -----------------------------------------------------------


def _masked() -> SimpleNamespace:
    """A LoRA-wrapped tiny Llama with random B (so masks matter), mask hooks, and a padded batch."""
    ctx = sft_ctx()
    config = LoraDropoutConfig(r=4, alpha=8, p=0.3, ensemble=3)
    model = wrap_causal_lora(ctx.new_model(), r=4, alpha=8, dropout=0.0, target_modules=None)
    torch.manual_seed(1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    state = attach_masks(model, config)
    rows = [torch.from_numpy(x) for x in ctx.val.input_ids[:3]]
    ids = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True, padding_value=ctx.tokenizer.pad_token_id)
    mask = (torch.arange(ids.shape[1])[None] < torch.tensor([len(r) for r in rows])[:, None]).long()
    return SimpleNamespace(model=model.eval(), state=state, config=config, ids=ids, mask=mask)


@torch.no_grad()
def test_ensemble_equals_the_mean_of_masked_forwards() -> None:
    masked = _masked()
    model, state, ids, mask = masked.model, masked.state, masked.ids, masked.mask
    plain = model(input_ids=ids, attention_mask=mask).logits.float()
    members = []
    for k in range(3):  # member k's masks, one forward each
        state.fixed = member_masks(model, 0.3, member_seed(7, k))
        members.append(torch.softmax(model(input_ids=ids, attention_mask=mask).logits.float(), -1))
    state.fixed = None
    manual = torch.log(torch.stack(members).mean(0))
    # the members differ (tiny-llama's probabilities are all near 1/49152: compare log-probabilities)
    assert (members[0].log() - members[1].log()).abs().max() > 1e-2
    attach_causal_ensemble(model, state, stacked_members(model, 0.3, 7, 3, torch.device("cpu")))
    ensemble = model(input_ids=ids, attention_mask=mask).logits
    assert ensemble.shape == plain.shape and ensemble.dtype == torch.float32
    assert (ensemble - manual).abs().max() < 1e-5
    assert (torch.log_softmax(ensemble, -1) - torch.log_softmax(plain, -1)).abs().max() > 1e-2
    # greedy generate (KV cache of 3 x 3 member rows) = argmax of the ensemble, recomputed each step
    out = model.generate(input_ids=ids[:, :8], attention_mask=mask[:, :8], max_new_tokens=5, do_sample=False,
                         pad_token_id=0)
    seq, att = ids[:, :8], mask[:, :8]
    for _ in range(5):
        step = model(input_ids=seq, attention_mask=att).logits[:, -1].argmax(-1, keepdim=True)
        seq, att = torch.cat([seq, step], 1), torch.cat([att, torch.ones_like(step)], 1)
    assert torch.equal(out, seq)
    model.train()  # train mode: the hooks stand aside, masks are drawn fresh per forward
    assert model(input_ids=ids, attention_mask=mask).logits.shape == plain.shape


# --- the NLG objective on hand-computed numbers ----------------------------------------------

H = math.log(3) / 2
#: Logits [1, 4, 2]. Positions 1, 2 predict the response tokens (labels -100, -100, 2, 3):
#: row 1 = [1, 1] -> P = [.5, .5]; row 2 = [H, -H] -> P = [.75, .25] (softmax of [ln 3, 0]).
#: Rows 0 and 3 are [0, 0] (P = [.5, .5]) in both models: they only enter with reg_mask=all.
Z = torch.tensor([[[0.0, 0.0], [1.0, 1.0], [H, -H], [0.0, 0.0]]])
#: Reference: row 1 -> P0 = [.75, .25], row 2 -> P0 = [.5, .5].
Z0 = torch.tensor([[[0.0, 0.0], [H, -H], [1.0, 1.0], [0.0, 0.0]]])


class _Model:
    def __init__(self) -> None:
        self.labels: torch.Tensor | None = None

    def __call__(self, *, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor) -> Any:
        self.labels = labels
        return SimpleNamespace(loss=torch.tensor(0.5), logits=Z.clone().requires_grad_(True))


@pytest.mark.parametrize("reg_mask", ["response", "all"])
def test_nlg_objective_hand_computed(reg_mask: str) -> None:
    sft = SftData([np.arange(4)], [np.array([False, False, True, True])], np.zeros(1, np.int64))
    objective = Objective({"consistency": 1.0, "diversity": 1.0, "svd": 1.0}, 1, lambda inputs: Z0,
                          sft=sft, reg_mask=reg_mask)
    model = _Model()
    inputs = {"input_ids": torch.arange(4)[None], "attention_mask": torch.ones(1, 4, dtype=torch.long)}
    total = objective(model, inputs, torch.zeros(1), np.array([0])).detach()  # type: ignore[arg-type]
    assert model.labels is not None and model.labels.tolist() == [[-100, -100, 2, 3]]
    # KL(P0 || P): row 1 .75 ln(.75/.5) + .25 ln(.25/.5) = .130812; row 2 .5 ln(.5/.75) + .5 ln(.5/.25) = .143841;
    # sum over positions / batch 1 = .274653 (rows 0 and 3 agree: 0 under either mask)
    kl = 0.274653
    # entropies: ln 2 = .693147 (rows 0, 1, 3), .75 ln(4/3) + .25 ln 4 = .562335 (row 2);
    # response mean (.693147 + .562335) / 2 = .627741; all (3 * .693147 + .562335) / 4 = .660444
    entropy = 0.627741 if reg_mask == "response" else 0.660444
    # SVD of the example's rows: [1, 1] and [H, -H] are orthogonal, so sigma = their norms sqrt 2 = 1.414214
    # and ln 3 / sqrt 2 = .776836 (zero rows 0, 3 add nothing); top-1 share 1.414214 / 2.191050 = .645450
    share = 0.645450
    assert float(total) == pytest.approx(0.5 + kl - entropy - share, abs=1e-5)
    row = objective.epoch_row()
    assert row["task_loss"] == pytest.approx(0.5)
    assert row["consistency_raw"] == pytest.approx(kl, abs=1e-6) == pytest.approx(row["kl_to_reference"])
    assert row["diversity_raw"] == pytest.approx(-entropy, abs=1e-6)
    assert row["entropy"] == pytest.approx(entropy, abs=1e-6)
    # (sigma = sqrt(eigvalsh(L L^T)) in float32: ~1e-6 off the exact share)
    assert row["svd_raw"] == pytest.approx(-share, abs=5e-6)
    assert row["topk_share"] == pytest.approx(share, abs=5e-6)


def test_nlg_objective_needs_the_batch_index() -> None:
    sft = SftData([np.arange(4)], [np.ones(4, bool)], np.zeros(1, np.int64))
    objective = Objective({"diversity": 1.0}, 1, None, sft=sft)
    with pytest.raises(ValueError, match="batch index"):
        objective(_Model(), {"input_ids": torch.arange(4)[None]}, torch.zeros(1))  # type: ignore[arg-type]
