"""Frozen ``nn.Linear`` weights cast to bf16 once per epoch instead of once per forward pass.

Under bf16 autocast every ``nn.Linear`` casts its float32 weight to bf16 on each call. torch's
autocast cache keeps such casts only for leaf tensors that require grad, so a LoRA model's
frozen base weights (all of MiniLM's 10.6M linear parameters) are cast again on every forward.
Reusing them took ``aten::copy_`` from 5.1 to 3.8 % of a bf16 training step on CPU and raised
the loop's throughput 1.5-2.5 % (docs/speed.md). The cast is a pure function of the weight, so
reusing it changes no number: ``F.linear`` under autocast receives the same bf16 tensor either way.

Only plain ``nn.Linear`` modules whose float32 weight does not require grad are touched, on the
CPU (on a GPU the cast is cheap and the copies would cost memory), for the duration of
:func:`frozen_casts`. A weight written in place during that time (``_version``) or replaced
(``data_ptr``) is cast again; code reading ``module.weight`` itself (DoRA's weight norm, a
method's own statistics) still sees the float32 original.
"""

from __future__ import annotations

import types
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

#: Instance attribute holding ``(key, bf16 weight)`` on a patched module.
CACHE_ATTR = "_peftbench_bf16_weight"


def _cast_linear_forward(self: nn.Linear, input: torch.Tensor) -> torch.Tensor:
    """``nn.Linear.forward`` with the weight's bf16 cast reused while the weight is unchanged."""
    weight = self.weight
    if weight.requires_grad or torch.is_inference_mode_enabled() or not torch.is_autocast_enabled("cpu") \
            or torch.get_autocast_dtype("cpu") != torch.bfloat16:  # an inference-mode copy cannot serve training
        return F.linear(input, weight, self.bias)
    try:
        key = (weight.data_ptr(), weight._version, weight.shape)
    except RuntimeError:  # a tensor without storage (functorch transforms): nothing to reuse
        return F.linear(input, weight, self.bias)
    cached = self.__dict__.get(CACHE_ATTR)
    if cached is None or cached[0] != key:
        cached = (key, weight.detach().to(torch.bfloat16))
        self.__dict__[CACHE_ATTR] = cached
    return F.linear(input, cached[1], self.bias)


def _eligible(module: nn.Module) -> bool:
    weight = getattr(module, "weight", None)
    return (type(module) is nn.Linear and isinstance(weight, torch.Tensor) and not weight.requires_grad
            and weight.dtype == torch.float32 and weight.device.type == "cpu")


@contextmanager
def frozen_casts(model: nn.Module, device: torch.device, precision: str) -> Iterator[None]:
    """Reuse frozen ``nn.Linear`` weights' bf16 casts inside the block (CPU, ``precision == "bf16"``).

    Outside bf16 autocast (an fp32 pass inside the block) the patched modules compute as before.
    On exit the modules get their class's ``forward`` back and the copies are dropped.
    """
    if precision != "bf16" or device.type != "cpu":
        yield
        return
    patched: list[nn.Module] = []
    for module in model.modules():
        if _eligible(module) and "forward" not in module.__dict__:
            module.forward = types.MethodType(_cast_linear_forward, module)
            patched.append(module)
    try:
        yield
    finally:
        for module in patched:
            state: dict[str, Any] = module.__dict__
            state.pop("forward", None)
            state.pop(CACHE_ATTR, None)
