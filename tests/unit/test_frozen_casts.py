"""Reusing frozen weights' bf16 casts (bench.sdk.casts) changes no number and leaves no trace."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import pytest
import torch
from torch import nn

from bench.models.encoder import base_model
from bench.sdk import loop
from bench.sdk.casts import CACHE_ATTR, frozen_casts
from bench.sdk.loop import train_loop, wrap_lora
from bench.spec.suite import TrainConfig
from tests.helpers import N_CLASSES, TINY, synthetic

CPU = torch.device("cpu")


def _train(monkeypatch: pytest.MonkeyPatch, *, casts: bool, dora: bool = False) -> tuple[list[float], dict[str, Any]]:
    if not casts:
        monkeypatch.setattr(loop, "frozen_casts", lambda *a, **k: nullcontext())
    model = wrap_lora(base_model(TINY, N_CLASSES).new(0), head=["classifier"], r=2, alpha=4, dropout=0.1,
                      target_modules=None, use_dora=dora)
    cfg = TrainConfig(epochs=2, batch_size=8, lr=5e-3, warmup_ratio=0.1, precision="bf16")
    stats = train_loop(model=model, data=synthetic(32), cfg=cfg, seed=1, device=CPU, precision="bf16",
                       head=["classifier"], pad_id=0)
    monkeypatch.undo()
    return stats.epoch_losses, {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("dora", [False, True])
def test_bf16_training_is_bit_identical_with_and_without_reused_casts(monkeypatch: pytest.MonkeyPatch,
                                                                        dora: bool) -> None:
    plain_losses, plain_state = _train(monkeypatch, casts=False, dora=dora)
    cast_losses, cast_state = _train(monkeypatch, casts=True, dora=dora)
    assert cast_losses == plain_losses  # exact: the same bf16 weights reach F.linear
    assert plain_state.keys() == cast_state.keys()
    for key, value in plain_state.items():
        assert torch.equal(value, cast_state[key]), key


def test_only_frozen_float32_linears_are_patched_and_restored() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4), nn.Embedding(3, 4))
    model[1].weight.requires_grad_(False)
    with frozen_casts(model, CPU, "bf16"):
        assert "forward" not in model[0].__dict__  # trainable: autocast's own cache covers it
        assert "forward" in model[1].__dict__
        with torch.autocast("cpu", dtype=torch.bfloat16):
            model[1](torch.ones(2, 4))
        assert CACHE_ATTR in model[1].__dict__
    assert "forward" not in model[1].__dict__ and CACHE_ATTR not in model[1].__dict__
    with frozen_casts(model, CPU, "fp32"):
        assert "forward" not in model[1].__dict__


def test_a_weight_written_in_place_is_cast_again() -> None:
    layer = nn.Linear(4, 3).requires_grad_(False)
    x = torch.randn(2, 4)
    with frozen_casts(layer, CPU, "bf16"), torch.autocast("cpu", dtype=torch.bfloat16):
        layer(x)
        with torch.no_grad():
            layer.weight.mul_(2.0)
        got = layer(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        want = layer(x)  # the class's forward: autocast casts the current weight
    assert torch.equal(got, want)


def test_outside_autocast_the_float32_weight_is_used() -> None:
    layer = nn.Linear(4, 3).requires_grad_(False)
    x = torch.randn(2, 4)
    with frozen_casts(layer, CPU, "bf16"):
        got = layer(x)
    assert got.dtype == torch.float32 and torch.equal(got, nn.functional.linear(x, layer.weight, layer.bias))
