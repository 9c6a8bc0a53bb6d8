"""LoRA Dropout: the mask hooks, the test-time ensemble, sparsity, save/load, config checks."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.models.encoder import head_names
from bench.sdk.loop import collate, wrap_lora
from methods.lora import LoraAdapter, LoraConfig
from methods.lora_dropout import (
    LoraDropoutAdapter,
    LoraDropoutConfig,
    attach_masks,
    lora_layers,
)
from tests.helpers import make_ctx, synthetic


def _wrapped(config: LoraDropoutConfig, seed: int = 0):
    """A tiny-bert LoRA model with random (non-zero) B and the mask hooks attached."""
    base = make_ctx().new_model()
    model = wrap_lora(base, head=head_names(base), r=config.r, alpha=config.alpha, dropout=0.0,
                      target_modules=None)
    torch.manual_seed(seed)
    for layer in lora_layers(model):
        torch.nn.init.normal_(layer.lora_B["default"].weight, std=0.5)
    return model, attach_masks(model, config)


def _logits(model, data) -> torch.Tensor:
    inputs = collate(data, np.arange(len(data)), 0, torch.device("cpu"))
    with torch.no_grad():
        return model(**inputs).logits


def _lora_train_mode(model) -> None:
    """Eval mode (BERT's own dropout off) with only the LoRA A/B modules in train mode."""
    model.eval()
    for layer in lora_layers(model):
        layer.lora_A["default"].train()
        layer.lora_B["default"].train()


@pytest.mark.parametrize("rescale", [True, False])
def test_hooks_equal_the_masked_matrix_formula(rescale: bool) -> None:
    config = LoraDropoutConfig(r=4, alpha=8, p=0.3, rescale=rescale)
    model, state = _wrapped(config)
    model.eval()
    layer = lora_layers(model)[0]
    a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    gen = torch.Generator().manual_seed(1)
    m_a = torch.bernoulli(torch.full((a.shape[1],), 0.7), generator=gen)
    m_b = torch.bernoulli(torch.full((b.shape[0],), 0.7), generator=gen)
    state.fixed = {i: (m_a, m_b) for i in range(len(lora_layers(model)))}
    x = torch.randn(3, 5, a.shape[1])
    with torch.no_grad():
        got = layer(x)
        scale = 1 / 0.7 if rescale else 1.0
        delta = (torch.diag(m_b * scale) @ b) @ (a @ torch.diag(m_a * scale))
        want = layer.base_layer(x) + layer.scaling["default"] * x @ delta.T
    assert torch.allclose(got, want, atol=1e-5)
    state.fixed = None
    with torch.no_grad():  # eval without masks: the unmasked adapter
        want_plain = layer.base_layer(x) + layer.scaling["default"] * x @ (b @ a).T
        assert torch.allclose(layer(x), want_plain, atol=1e-5)


def test_p_zero_forward_equals_plain_lora() -> None:
    model, _ = _wrapped(LoraDropoutConfig(r=4, alpha=8, p=0.0))
    data = synthetic(6, seed=3)
    _lora_train_mode(model)
    with_hooks = _logits(model, data)
    for layer in lora_layers(model):  # remove the hooks: plain peft LoRA
        layer.lora_A["default"]._forward_pre_hooks.clear()
        layer.lora_B["default"]._forward_hooks.clear()
    assert torch.allclose(with_hooks, _logits(model, data), atol=1e-6)


def test_p_zero_fit_equals_lora_fit() -> None:
    ctx = make_ctx(n_train=16, epochs=1)
    ours = LoraDropoutAdapter(LoraDropoutConfig(r=4, alpha=8, p=0.0, ensemble=1)).fit(ctx)
    plain = LoraAdapter(LoraConfig(r=4, alpha=8, dropout=0.0)).fit(ctx)
    assert np.abs(ours.predict_proba(ctx.val) - plain.predict_proba(ctx.val)).max() < 1e-6


@pytest.mark.parametrize("per_example", [False, True])
def test_train_draws_fresh_masks_eval_is_deterministic(per_example: bool) -> None:
    model, _ = _wrapped(LoraDropoutConfig(r=4, alpha=8, p=0.3, per_example=per_example))
    data = synthetic(6, seed=3)
    _lora_train_mode(model)
    first, second = _logits(model, data), _logits(model, data)
    assert not torch.allclose(first, second)
    model.eval()
    det = _logits(model, data)
    assert torch.equal(det, _logits(model, data))
    for layer in lora_layers(model):
        layer.lora_A["default"]._forward_pre_hooks.clear()
        layer.lora_B["default"]._forward_hooks.clear()
    assert torch.allclose(det, _logits(model, data), atol=1e-6)  # = the unmasked adapter


@pytest.mark.parametrize("per_example", [False, True])
def test_realised_sparsity_is_2p_minus_p2(per_example: bool) -> None:
    model, state = _wrapped(LoraDropoutConfig(r=4, alpha=8, p=0.3, per_example=per_example))
    data = synthetic(4, seed=3)
    _lora_train_mode(model)
    for _ in range(25):
        _logits(model, data)
    assert state.pop_sparsity() == pytest.approx(0.51, abs=0.03)
    assert np.isnan(state.pop_sparsity())  # reset


@pytest.fixture(scope="module")
def trained():
    rows: list[dict] = []
    ctx = make_ctx(n_train=24, epochs=2, log=rows.append)
    method = LoraDropoutAdapter(LoraDropoutConfig(r=4, alpha=8, p=0.2, ensemble=4, ensemble_sizes=(1, 2, 4)))
    return method, ctx, method.fit(ctx), rows


def test_sparsity_curve_and_diagnostics(trained) -> None:
    _, _, fitted, rows = trained
    assert [r["epoch"] for r in rows] == [1, 2]
    assert all(0.0 < r["mask_sparsity"] < 1.0 for r in rows)
    assert fitted.diagnostics["mask_sparsity_expected"] == pytest.approx(0.36)
    assert 0.0 < fitted.diagnostics["mask_sparsity_train"] < 1.0


def test_ensemble_is_reproducible_and_variants_are_prefix_means(trained) -> None:
    _, ctx, fitted, _ = trained
    probs = fitted.predict_proba(ctx.val)
    # a copy of the data is a new object: its passes are run again (not the cached ones)
    assert np.array_equal(probs, fitted.predict_proba(dataclasses.replace(ctx.val)))
    members = fitted.members(ctx.val, 4)
    assert not np.allclose(members[0], members[1])
    variants = fitted.predict_variants(ctx.val)
    assert set(variants) == {"ensemble_n1", "ensemble_n2", "ensemble_n4", "masked_n1"}
    assert all(v.shape == probs.shape and np.allclose(v.sum(1), 1.0) for v in variants.values())
    assert np.allclose(variants["ensemble_n2"], np.mean(members[:2], axis=0))
    assert np.allclose(variants["ensemble_n4"], probs)
    assert np.array_equal(variants["masked_n1"], members[0])
    assert np.array_equal(variants["ensemble_n1"], fitted._pass(ctx.val, None))


def test_headline_and_variants_share_member_passes(trained, monkeypatch) -> None:
    _, ctx, fitted, _ = trained
    data = dataclasses.replace(ctx.val)  # fresh object: nothing cached for it yet
    calls: list = []
    original = type(fitted)._pass
    monkeypatch.setattr(type(fitted), "_pass", lambda self, d, m: calls.append(m) or original(self, d, m))
    probs = fitted.predict_proba(data)  # ensemble=4: members 0..3
    variants = fitted.predict_variants(data)  # sizes (1, 2, 4): the deterministic pass only
    assert calls == [0, 1, 2, 3, None]
    assert np.array_equal(variants["ensemble_n4"], probs)


def test_n1_is_the_deterministic_pass(trained) -> None:
    _, ctx, fitted, _ = trained
    single = LoraDropoutAdapter(LoraDropoutConfig(r=4, alpha=8, p=0.2, ensemble=1))
    again = single._fitted(fitted.model, fitted.state, ctx)
    assert np.array_equal(again.predict_proba(ctx.val), fitted._pass(ctx.val, None))
    assert not np.allclose(again.predict_proba(ctx.val), fitted.predict_proba(ctx.val))


def test_save_load_gives_identical_predictions(trained, tmp_path: Path) -> None:
    method, ctx, fitted, _ = trained
    fitted.save(tmp_path)
    again = method.load(ctx, tmp_path)
    assert np.abs(again.predict_proba(ctx.val) - fitted.predict_proba(ctx.val)).max() < 1e-6
    assert np.abs(again._pass(ctx.val, None) - fitted._pass(ctx.val, None)).max() < 1e-6


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"p": 1.0}, "Invalid p"), ({"p": -0.1}, "Invalid p"), ({"r": 0}, "Invalid rank"),
    ({"ensemble": 0}, "Invalid ensemble"), ({"ensemble_sizes": ()}, "Invalid ensemble_sizes"),
    ({"ensemble_sizes": (0, 2)}, "Invalid ensemble_sizes"), ({"ensemble_sizes": (2, 2)}, "Invalid ensemble_sizes"),
])
def test_config_validation(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LoraDropoutConfig(**kwargs)
