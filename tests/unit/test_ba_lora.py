"""BA-LoRA: hand-computed regularisers, the initial-model reference, ablations, PiSSA save/load."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

from bench.errors import CellError
from bench.sdk.loop import collate, cross_entropy_loss, predict_logits, softmax
from methods import ba_lora
from methods.ba_lora import REFERENCE, BaLoraAdapter, BaLoraConfig
from methods.ba_lora_losses import (
    Objective,
    consistency_loss,
    diversity_loss,
    entropy_diversity,
    kl_consistency,
    nlg_mask,
    singular_values_gram,
    svd_loss,
    svd_share_batched,
)
from tests.helpers import make_ctx

CPU = torch.device("cpu")


def _batch(ctx: Any, n: int = 8) -> dict[str, torch.Tensor]:
    return collate(ctx.val, np.arange(n), ctx.tokenizer.pad_token_id, CPU)


@torch.no_grad()
def _eval_logits(model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    model.eval()
    return model(**inputs).logits.float()


# --- NLU regularisers on hand-computable inputs --------------------------------------------


def test_consistency_loss_hand_computed() -> None:
    z = torch.tensor([[3.0, 4.0], [0.0, 2.0]])
    z0 = torch.tensor([[4.0, 3.0], [0.0, 5.0]])
    # rows / L2 norm: z -> [.6, .8], [0, 1]; z0 -> [.8, .6], [0, 1]
    # squared differences: .04, .04, 0, 0 -> mean over 4 entries = .02
    assert consistency_loss(z, z0).item() == pytest.approx(0.02)
    assert consistency_loss(z, 7 * z).item() == pytest.approx(0.0)  # scale-invariant per row


def test_diversity_loss_hand_computed() -> None:
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0]])
    # mean [1, 1]; Zc = [[0, -1], [-1, 0], [1, 1]]; Zc^T Zc = [[2, 1], [1, 2]]
    # Cov = / (B - 1 = 2) = [[1, .5], [.5, 1]]; off-diagonal squares .25 + .25 = .5; / C = 2 -> .25
    assert diversity_loss(z).item() == pytest.approx(0.25)
    # one row: no unbiased covariance -> 0 (not NaN)
    assert diversity_loss(z[:1]).item() == 0.0
    # uncorrelated columns: Zc = [[-1, -1], [1, -1], [-1, 1], [1, 1]] -> Zc^T Zc off-diagonal 0
    assert diversity_loss(torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0], [2.0, 2.0]])).item() == 0.0


def test_svd_loss_hand_computed() -> None:
    z = torch.tensor([[3.0, 0.0], [0.0, 4.0], [0.0, 0.0]])  # singular values 4, 3
    assert svd_loss(z, 1).item() == pytest.approx(-4 / 7)  # 4 / (4 + 3)
    assert svd_loss(z, 2).item() == pytest.approx(-1.0)  # k >= rank: share 1
    assert svd_loss(z, 3).item() == pytest.approx(-1.0)  # k beyond min(B, C): still 1, no crash
    # gradient exists and is finite (svdvals, float32)
    w = z.clone().requires_grad_(True)
    svd_loss(w, 1).backward()
    assert w.grad is not None and torch.isfinite(w.grad).all()


def test_regularisers_compute_in_float32_under_bf16_autocast() -> None:
    z = torch.randn(4, 3, dtype=torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        for value in (consistency_loss(z, z), diversity_loss(z), svd_loss(z, 1)):
            assert value.dtype == torch.float32


# --- NLG forms -------------------------------------------------------------------------------


def test_nlg_mask_shifts_labels_and_all_covers_everything() -> None:
    labels = torch.tensor([[-100, -100, 5, 6, -100]])  # prompt, prompt, response, response, pad
    # logits at t predict token t + 1: positions 1 and 2 predict the response tokens 5 and 6
    assert nlg_mask(labels).tolist() == [[False, True, True, False, False]]
    assert nlg_mask(labels, "all").all()
    with pytest.raises(ValueError, match="reg_mask"):
        nlg_mask(labels, "prompt")


def test_kl_consistency() -> None:
    logits = torch.randn(2, 3, 5)
    mask = torch.ones(2, 3, dtype=torch.bool)
    assert kl_consistency(logits, logits, mask).item() == pytest.approx(0.0, abs=1e-6)
    # V = 2: P0 = [.5, .5], P = softmax([0, ln 3]) = [.25, .75]
    # KL(P0 || P) = .5 ln(.5/.25) + .5 ln(.5/.75) = .5 ln(4/3) per position
    ref = torch.zeros(2, 2, 2)
    cur = torch.tensor([0.0, math.log(3.0)]).expand(2, 2, 2)
    one = 0.5 * math.log(4 / 3)
    assert kl_consistency(cur, ref, torch.ones(2, 2, dtype=torch.bool)).item() == pytest.approx(4 * one / 2)
    # masked positions are excluded; the sum is still divided by the batch size (batchmean)
    mask = torch.tensor([[True, False], [False, False]])
    assert kl_consistency(cur, ref, mask).item() == pytest.approx(one / 2)


def test_entropy_diversity() -> None:
    vocab = 7
    uniform = torch.zeros(2, 3, vocab)
    mask = torch.ones(2, 3, dtype=torch.bool)
    assert entropy_diversity(uniform, mask).item() == pytest.approx(-math.log(vocab), rel=1e-6)
    peaked = uniform.clone()
    peaked[0, 0, 0] = 50.0  # an almost one-hot position (entropy ~0)
    assert entropy_diversity(peaked, mask).item() > -math.log(vocab) + 0.1
    mask[0, 0] = False  # ... leaves the mean once masked out
    assert entropy_diversity(peaked, mask).item() == pytest.approx(-math.log(vocab), rel=1e-6)


def test_svd_via_eigvalsh_equals_svdvals() -> None:
    gen = torch.Generator().manual_seed(0)
    matrix = torch.randn(5, 40, generator=gen)
    assert torch.allclose(singular_values_gram(matrix), torch.linalg.svdvals(matrix), rtol=1e-4, atol=1e-4)
    logits = torch.randn(3, 6, 40, generator=gen)
    mask = torch.zeros(3, 6, dtype=torch.bool)
    mask[0, 1:4] = True  # 3 response positions
    mask[1, :] = True  # all 6
    # example 2 has no response position: left out of the mean
    shares = [torch.linalg.svdvals(logits[b][mask[b]]) for b in (0, 1)]
    expected = -sum(float(s[:2].sum() / s.sum()) for s in shares) / 2
    assert svd_share_batched(logits, mask, 2).item() == pytest.approx(expected, rel=1e-4)
    assert svd_share_batched(logits, torch.zeros_like(mask), 2).item() == 0.0
    # gradients stay finite with a rank-deficient example (a zero eigenvalue)
    flat = torch.zeros(1, 3, 40)
    flat[0, 0, 0] = 1.0
    flat.requires_grad_(True)
    svd_share_batched(flat, torch.ones(1, 3, dtype=torch.bool), 1).backward()
    assert flat.grad is not None and torch.isfinite(flat.grad).all()


# --- config ------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [{"r": 0}, {"alpha": 0.0}, {"init": "olora"}, {"lambda_svd": -1.0},
                                 {"lambda_diversity": float("nan")}, {"top_k": 0}, {"dropout": 1.0}])
def test_config_validation(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        BaLoraConfig(**bad)


def test_weights_follow_switches() -> None:
    config = BaLoraConfig(use_consistency=False, lambda_svd=0.5)
    assert config.weights() == {"diversity": 3e-4, "svd": 0.5}


# --- the reference model ------------------------------------------------------------------


@pytest.mark.parametrize("init", ["pissa", "default"])
def test_reference_equals_trainable_and_original_at_init(init: str) -> None:
    ctx = make_ctx(n_train=16)
    run = BaLoraAdapter(BaLoraConfig(r=4, alpha=4, init=init)).prepare(ctx)
    assert run.diagnostics["init_max_abs_diff"] < 1e-5
    assert run.diagnostics["reference_max_abs_diff"] < 1e-5
    inputs = _batch(ctx)
    reference, original = run.objective.reference(inputs), _eval_logits(ctx.new_model(), inputs)
    assert (reference - original).abs().max() < 1e-5  # the reference is W0 and the initial head
    assert (reference - _eval_logits(run.model, inputs)).abs().max() < 1e-5
    if init == "pissa":
        assert REFERENCE in run.model.peft_config
        with run.model.disable_adapter():  # METHODS.md defect 3: that would be W_res, not W0
            residual = _eval_logits(run.model, inputs)
            assert (residual - original).abs().max() > 1e-3 * original.abs().max()
    else:
        assert REFERENCE not in run.model.peft_config  # B = 0: disable_adapter(), no copy at all


def test_step0_check_catches_a_residual_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    def residual_reference(model: Any) -> None:  # the released code's reference: W_res, not W0
        config = copy.deepcopy(model.peft_config["default"])
        config.init_lora_weights, config.inference_mode = True, True  # B = 0: adds nothing to W_res
        model.add_adapter(REFERENCE, config)

    monkeypatch.setattr(ba_lora, "add_reference_adapter", residual_reference)
    with pytest.raises(CellError, match="reference check failed"):
        BaLoraAdapter(BaLoraConfig(r=4, alpha=4)).prepare(make_ctx(n_train=16))


# --- a PiSSA run, trained once for the tests below ------------------------------------------


@pytest.fixture(scope="module")
def pissa(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    rows: list[dict[str, Any]] = []
    ctx = make_ctx(n_train=24, epochs=2, lr=1e-2, log=rows.append)
    method = BaLoraAdapter(BaLoraConfig(r=4, alpha=4, lambda_consistency=1.0, lambda_diversity=1.0,
                                        lambda_svd=1.0, top_k=1))
    run = method.prepare(ctx)
    named = dict(run.model.named_parameters())
    before = {n: p.detach().clone() for n, p in named.items()}
    held = {id(p) for g in run.params for p in g["params"]}
    method.train(ctx, run)
    after = {n: (p.detach().clone(), p.requires_grad) for n, p in run.model.named_parameters()}
    trained_probs = softmax(predict_logits(run.model, ctx.val, batch_size=16, device=CPU, precision="fp32",
                                           pad_id=ctx.tokenizer.pad_token_id))
    fitted = method.finish(ctx, run)
    folder = tmp_path_factory.mktemp("ba-lora")
    fitted.save(folder)
    again = method.load(ctx, folder)
    return SimpleNamespace(ctx=ctx, rows=rows, named=named, before=before, held=held, after=after,
                           trained_probs=trained_probs, fitted=fitted, folder=folder, again=again)


def test_reference_frozen_and_unchanged_while_default_trained(pissa: SimpleNamespace) -> None:
    reference = [n for n in pissa.after if f".{REFERENCE}." in n]
    default = [n for n in pissa.after if ".default." in n]
    assert reference and default
    for name in reference:
        value, requires_grad = pissa.after[name]
        assert not requires_grad, name
        assert torch.equal(value, pissa.before[name]), name
        assert id(pissa.named[name]) not in pissa.held  # never in the optimizer
    changed = [n for n in default if not torch.equal(pissa.after[n][0], pissa.before[n])]
    assert all(pissa.after[n][1] for n in default)  # still trainable after every adapter switch
    assert changed == default  # every lora_A, lora_B and head tensor of the default adapter moved
    trainable = {id(pissa.named[n]) for n in default}
    assert pissa.held == trainable  # the optimizer holds exactly the default adapter and head


def test_pissa_save_load_on_a_fresh_base_reproduces_predictions(pissa: SimpleNamespace) -> None:
    # the trained model (residual base + PiSSA adapter) vs the saved delta on a fresh W0 base
    assert np.abs(pissa.again.predict_proba(pissa.ctx.val) - pissa.trained_probs).max() < 1e-5
    assert np.abs(pissa.fitted.predict_proba(pissa.ctx.val) - pissa.trained_probs).max() < 1e-5
    config = json.loads((Path(pissa.folder) / "adapter_config.json").read_text())
    assert config["r"] == 8 and config["init_lora_weights"] is True  # rank 2r, plain LoRA
    # the fitted model's frozen base is the original W0, and only the default adapter was saved
    fresh = dict(pissa.ctx.new_model().named_parameters())
    for name, param in pissa.fitted.model.named_parameters():
        key = name.replace("base_model.model.", "").replace(".base_layer", "")
        if key in fresh:
            assert torch.equal(param, fresh[key]), name
    assert list(pissa.fitted.model.peft_config) == ["default"]
    assert not (Path(pissa.folder) / REFERENCE).exists()
    assert pissa.fitted.trainable_parameters() == sum(p.numel() for p in pissa.named.values()
                                                      if id(p) in pissa.held)
    assert pissa.fitted.diagnostics["conversion_max_abs_diff"] < 1e-4


def test_epoch_rows_carry_every_term(pissa: SimpleNamespace) -> None:
    assert [r["epoch"] for r in pissa.rows] == [1, 2]
    for row in pissa.rows:
        for key in ("val_accuracy", "task_loss", "topk_share", "entropy", "kl_to_reference", "reference_pass_s"):
            assert math.isfinite(row[key]), key
        for term in ("consistency", "diversity", "svd"):
            assert row[f"{term}_weighted"] == pytest.approx(row[f"{term}_raw"])  # lambda = 1
            assert row[f"{term}_ratio"] == pytest.approx(row[f"{term}_weighted"] / row["task_loss"])
        assert row["svd_raw"] == pytest.approx(-row["topk_share"])
        assert 0 < row["topk_share"] <= 1 and row["reference_pass_s"] > 0


# --- ablations --------------------------------------------------------------------------------


def test_all_switches_off_is_exactly_cross_entropy() -> None:
    ctx = make_ctx(n_train=16)
    config = BaLoraConfig(r=4, alpha=4, use_consistency=False, use_diversity=False, use_svd=False)
    run = BaLoraAdapter(config).prepare(ctx)
    assert run.objective.reference is None and REFERENCE not in run.model.peft_config
    inputs, labels = _batch(ctx), torch.from_numpy(ctx.val.labels[:8])
    run.model.eval()
    assert torch.equal(run.objective(run.model, inputs, labels), cross_entropy_loss(run.model, inputs, labels))
    row = run.objective.epoch_row()
    assert not any(k.startswith(("consistency", "diversity", "svd")) for k in row)
    assert "topk_share" in row and "reference_pass_s" not in row


def test_each_switch_adds_its_term() -> None:
    torch.manual_seed(0)
    z = torch.randn(6, 3, requires_grad=True)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])

    class Head(torch.nn.Module):
        def forward(self, **_: Any) -> Any:
            return SimpleNamespace(logits=z)

    ce = torch.nn.functional.cross_entropy(z, labels)
    reference = torch.randn(6, 3)
    terms = {"consistency": consistency_loss(z, reference), "diversity": diversity_loss(z), "svd": svd_loss(z, 1)}
    for name, value in terms.items():
        objective = Objective({name: 0.5}, 1, lambda _: reference)
        assert objective(Head(), {}, labels).item() == pytest.approx((ce + 0.5 * value).item(), rel=1e-6)
    with pytest.raises(ValueError, match="reference"):
        Objective({"consistency": 1.0}, 1, None)
