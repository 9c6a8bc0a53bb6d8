"""Fitted-model helpers that satisfy :class:`bench.sdk.method.Fitted` for common cases."""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from bench.data.tokens import Encoded
from bench.sdk.loop import count_parameters, predict_logits, softmax
from bench.sdk.scratch import scratch_prefix


@dataclass
class ModelFitted:
    """A fitted torch classifier; ``save`` writes a peft adapter or the trainable tensors."""

    model: nn.Module
    device: torch.device
    precision: str
    pad_id: int
    batch_size: int = 128
    diagnostics: dict[str, Any] = field(default_factory=dict)
    trained_parameters: int | None = None
    """What the optimizer trained, when the prediction model differs (a converted adapter)."""

    def predict_proba(self, data: Encoded) -> NDArray[np.float64]:
        """Softmax of the model's logits, in data order."""
        logits = predict_logits(self.model, data, batch_size=self.batch_size, device=self.device,
                                precision=self.precision, pad_id=self.pad_id)
        return softmax(logits)

    def trainable_parameters(self) -> int:
        """Parameters trained: ``trained_parameters`` if set, else those with ``requires_grad``."""
        if self.trained_parameters is not None:
            return self.trained_parameters
        return count_parameters(self.model)[0]

    def total_parameters(self) -> int:
        """All parameters of the prediction model."""
        return count_parameters(self.model)[1]

    def save(self, directory: Path) -> None:
        """Peft models: ``save_pretrained`` (adapter + head); others: trainable tensors."""
        directory.mkdir(parents=True, exist_ok=True)
        if hasattr(self.model, "peft_config"):
            self.model.save_pretrained(str(directory))  # type: ignore[operator]
            return
        from safetensors.torch import save_file

        state = {n: p.detach().cpu().contiguous() for n, p in self.model.named_parameters() if p.requires_grad}
        save_file(state, str(directory / "trainable.safetensors"))


def load_peft(base: nn.Module, directory: Path, adapter_name: str = "default") -> nn.Module:
    """Load a saved peft adapter onto a fresh base model."""
    from peft import PeftModel

    return PeftModel.from_pretrained(base, str(directory), adapter_name=adapter_name)


def load_trainable(model: nn.Module, directory: Path) -> nn.Module:
    """Load tensors written by :meth:`ModelFitted.save` for a non-peft model."""
    from safetensors.torch import load_file

    state = load_file(str(directory / "trainable.safetensors"))
    missing = set(state) - {n for n, _ in model.named_parameters()}
    if missing:
        raise ValueError(f"saved tensors not in model: {sorted(missing)[:3]}")
    model.load_state_dict(state, strict=False)
    return model


def fitted_from(model: nn.Module, ctx: Any, head: Sequence[str] = ()) -> ModelFitted:
    """A :class:`ModelFitted` using the context's device, precision and pad id."""
    return ModelFitted(model=model, device=ctx.device, precision=ctx.precision,
                       pad_id=ctx.tokenizer.pad_token_id, batch_size=ctx.train_config.eval_batch_size)


def val_curve_hook(ctx: Any, model: nn.Module, predict: Any = None) -> Any:
    """An ``on_epoch_end`` hook that logs train loss and validation accuracy/NLL per epoch.

    ``predict(data) -> probs`` replaces the model's own softmax (e.g. an ensemble of networks).
    """
    predict = predict or fitted_from(model, ctx).predict_proba

    def hook(epoch: int, train_loss: float) -> None:
        probs = predict(ctx.val)
        labels = ctx.val.labels
        p_true = np.clip(probs[np.arange(len(labels)), labels], 1e-12, 1.0)
        ctx.log({"epoch": epoch, "train_loss": train_loss,
                 "val_accuracy": float((probs.argmax(1) == labels).mean()),
                 "val_nll": float(-np.log(p_true).mean())})

    return hook


def save_converted(model: Any, initial: str, directory: Path, adapter: str = "default") -> None:
    """Save a PiSSA/OLoRA adapter as a rank-2r LoRA delta for the original (unmutated) base.

    ``initial`` is the folder of the adapter as initialised (saved with
    ``init_lora_weights=True``); peft subtracts it to express the update against W0.

    peft's conversion keeps only ``lora_A``/``lora_B`` tensors (its ``subtract_mutated_init``
    drops ``modules_to_save``), so the classification head is written back into the file.
    """
    from peft import get_peft_model_state_dict
    from safetensors.torch import load_file, save_file

    flags = [(p, p.requires_grad) for p in model.parameters()]
    with warnings.catch_warnings():  # loading the initial adapter beside PiSSA is the point here
        warnings.filterwarnings("ignore", message="PiSSA changes the base weights")
        model.save_pretrained(str(directory), selected_adapters=[adapter],
                              path_initial_model_for_weight_conversion=initial)
    for param, flag in flags:
        param.requires_grad_(flag)
    file = directory / "adapter_model.safetensors"
    state = load_file(str(file))
    for key, value in get_peft_model_state_dict(model, adapter_name=adapter).items():
        if key not in state and "lora_" not in key:
            state[key] = value.detach().cpu().contiguous()
    save_file(state, str(file), metadata={"format": "pt"})


def save_initial(model: Any, adapter: str = "default") -> tempfile.TemporaryDirectory[str]:
    """Save a PiSSA/OLoRA adapter as initialised, for :func:`load_converted` after training.

    It is saved with ``init_lora_weights=True`` (peft's recipe) so that loading it back does
    not run the SVD/QR init again on the already rewritten base.
    """
    folder = tempfile.TemporaryDirectory(prefix=scratch_prefix("init"))
    config = model.peft_config[adapter]
    init, config.init_lora_weights = config.init_lora_weights, True
    try:
        model.save_pretrained(os.path.join(folder.name, "initial"), selected_adapters=[adapter])
    finally:
        config.init_lora_weights = init
    return folder


def load_converted(model: Any, initial: tempfile.TemporaryDirectory[str], new_model: Any,
                   adapter: str = "default") -> nn.Module:
    """Convert a PiSSA/OLoRA-trained adapter to a delta for W0 and load it onto ``new_model()``.

    ``initial`` comes from :func:`save_initial`. The evaluated model is then exactly the
    exported one: under bf16 autocast, W_res + s B A and W0 + delta round differently (1e-2 in
    probabilities on MiniLM).
    """
    with tempfile.TemporaryDirectory(prefix=scratch_prefix("convert")) as tmp:
        save_converted(model, os.path.join(initial.name, "initial"), Path(tmp), adapter)
        return load_peft(new_model(), Path(tmp))
