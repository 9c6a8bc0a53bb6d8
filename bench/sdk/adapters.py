"""Several named peft LoRA adapters on one frozen base: select which ones a forward pass uses.

peft's ``set_adapter`` also flips ``requires_grad`` (it freezes the adapters it deactivates),
which is wrong for methods that train two adapters in the same step with different passes
(Delora's clean/noisy LoRAs, Co-Teaching's two networks). :func:`selected` only switches
what each layer computes; which parameters train is decided once with :func:`train_adapters`.
A list of LoRA adapters is summed (``W0 + ΔW_a + ΔW_b``), as peft does for several active
adapters; a classification head kept per adapter (``modules_to_save``) takes the first name.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from torch import nn


def _wrappers(model: nn.Module) -> tuple[list[Any], list[Any]]:
    from peft.tuners.tuners_utils import BaseTunerLayer
    from peft.utils.other import ModulesToSaveWrapper

    layers, heads = [], []
    for module in model.modules():
        if isinstance(module, ModulesToSaveWrapper):
            heads.append(module)
        elif isinstance(module, BaseTunerLayer):
            layers.append(module)
    return layers, heads


@contextmanager
def selected(model: nn.Module, names: Sequence[str]) -> Iterator[None]:
    """Within the block, LoRA layers use the adapters ``names`` (summed); heads use ``names[0]``."""
    layers, heads = _wrappers(model)
    before = [m._active_adapter for m in layers], [m._active_adapter for m in heads]
    for layer in layers:
        layer._active_adapter = list(names)
    for head in heads:
        head._active_adapter = names[0]
    try:
        yield
    finally:
        for layer, old in zip(layers, before[0], strict=True):
            layer._active_adapter = old
        for head, old in zip(heads, before[1], strict=True):
            head._active_adapter = old


def adapter_parameters(model: nn.Module, name: str) -> list[nn.Parameter]:
    """The LoRA (and per-adapter head) parameters of adapter ``name``."""
    return [p for n, p in model.named_parameters() if f".{name}." in n and ("lora_" in n or "modules_to_save" in n)]


def train_adapters(model: nn.Module, names: Sequence[str], extra: Sequence[str] = ()) -> None:
    """Make exactly the adapters ``names`` and the modules named ``extra`` trainable.

    ``extra`` names modules as :func:`bench.models.encoder.head_names` does: a whole component of
    a parameter's dotted name, at any depth (``pooler`` is ``bert.pooler``), as peft's
    ``modules_to_save`` matches them. Matching only at the start of the name left BERT's pooler
    frozen in Delora's detector while every other method trained it.
    """
    for param in model.parameters():
        param.requires_grad_(False)
    for name in names:
        for param in adapter_parameters(model, name):
            param.requires_grad_(True)
    for name, param in model.named_parameters():
        modules = name.split(".")[:-1]
        if any(e in modules for e in extra):
            param.requires_grad_(True)
