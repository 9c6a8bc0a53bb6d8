"""The training loop's CPU dropout (bench/sdk/dropout.py): its masks, arithmetic, gradient and patching."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bench.sdk.dropout import cpu_dropout, fast_dropout, keep_mask


def test_mask_is_the_generators_16_bit_numbers_against_the_threshold() -> None:
    # p = 0.1: threshold round(0.1 * 65536) - 32768 = 6554 - 32768 = -26214; kept when v >= -26214
    torch.manual_seed(7)
    words = torch.empty(3, dtype=torch.int64).random_(-(2**63), None)  # 3 words = 12 numbers, 10 used
    expected = (words.view(torch.int16)[:10] >= -26214).float()
    torch.manual_seed(7)
    assert torch.equal(keep_mask((2, 5), 0.1, torch.float32), expected.view(2, 5))


def test_drop_rate_is_p_quantised_to_a_65536th() -> None:
    torch.manual_seed(0)
    n = 4_000_000
    dropped = float(1.0 - keep_mask((n,), 0.1, torch.float32).mean())
    # expected 6554 / 65536 = 0.1000061; sd sqrt(p(1-p)/n) = 0.00015, so 4 sd = 0.0006
    assert abs(dropped - 6554 / 65536) < 6e-4
    torch.manual_seed(0)
    half = keep_mask((n,), 0.5, torch.float32)
    assert abs(float(half.mean()) - 0.5) < 1e-3


def test_output_and_gradient_are_native_dropouts_arithmetic() -> None:
    x = torch.randn(4, 6, 8, requires_grad=True)
    torch.manual_seed(3)
    out = cpu_dropout(x, 0.25)
    torch.manual_seed(3)
    mask = keep_mask(x.shape, 0.25, torch.float32)
    assert torch.equal(out, x.detach() * mask * (1 / 0.75))  # ATen: input.mul(mask).mul_(scale)
    out.sum().backward()
    assert torch.equal(x.grad, mask * (1 / 0.75))


def test_bf16_keeps_its_dtype_and_scales_in_float() -> None:
    # The scale must be applied as the float 1/0.9 = 1.1111 (as nn.Dropout does), not as bf16(1/0.9) = 1.109375
    x = torch.randn(64, 64).to(torch.bfloat16)
    torch.manual_seed(5)
    out = cpu_dropout(x, 0.1)
    torch.manual_seed(5)
    mask = keep_mask(x.shape, 0.1, torch.float32)
    assert out.dtype == torch.bfloat16
    assert torch.equal(out, (x.float() * mask * (1 / 0.9)).to(torch.bfloat16))
    bf16_scale = x * mask.to(torch.bfloat16) * torch.tensor(1 / 0.9, dtype=torch.bfloat16)
    assert not torch.equal(out, bf16_scale)  # the check above can tell the two apart


def test_p_zero_and_one() -> None:
    x = torch.randn(5, 5)
    assert cpu_dropout(x, 0.0) is x
    assert torch.equal(cpu_dropout(x, 1.0), torch.zeros_like(x))


def test_patch_applies_in_training_only_and_is_removed() -> None:
    model = nn.Sequential(nn.Linear(8, 8), nn.Dropout(0.5))
    x = torch.randn(16, 8)
    with fast_dropout(model, torch.device("cpu")):
        assert "forward" in model[1].__dict__
        torch.manual_seed(1)
        trained = model(x)
        torch.manual_seed(1)
        hidden = model[0](x)
        assert torch.equal(trained, cpu_dropout(hidden, 0.5))
        model.eval()
        assert torch.equal(model(x), model[0](x))  # eval: no dropout
        model.train()
    assert "forward" not in model[1].__dict__
    torch.manual_seed(1)
    native = model(x)
    torch.manual_seed(1)
    assert torch.equal(native, F.dropout(model[0](x), 0.5, True))


def test_other_devices_and_subclasses_are_left_alone() -> None:
    class MyDropout(nn.Dropout):
        pass

    model = nn.Sequential(nn.Dropout(0.1), MyDropout(0.1))
    with fast_dropout(model, torch.device("meta")):
        assert "forward" not in model[0].__dict__
    with fast_dropout(model, torch.device("cpu")):
        assert "forward" in model[0].__dict__ and "forward" not in model[1].__dict__
