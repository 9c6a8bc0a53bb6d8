"""Small-loss selection (Delora's detection baseline; METHODS.md §6.2) on a LoRA classifier.

Warm-up epochs train on every sample. From the end of warm-up, every epoch ends by scoring
each training sample's cross-entropy against its observed label in eval mode and marking the
clean set the next epoch trains on:

- ``selection: gmm`` (default [proposed]): samples whose low-loss posterior under a
  two-component GMM on min-max normalised losses exceeds ``threshold``;
- ``selection: ratio``: the ``1 - noise_rate`` fraction with the smallest losses, where
  ``noise_rate`` is given, or estimated as the GMM's high-loss share when left empty.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from torch import nn

from bench.sdk import (
    FitContext,
    ModelFitted,
    fitted_from,
    gmm_clean_probability,
    load_peft,
    masked_mean,
    new_lora_classifier,
    per_sample_loss,
    register_method,
    smallest_fraction,
    train,
    val_curve_hook,
)


@dataclass(frozen=True)
class SmallLossConfig:
    """LoRA as in ``lora``, plus the selection schedule."""

    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.1
    target_modules: tuple[str, ...] | None = None
    warmup_epochs: int = 2
    """Epochs on every sample before selection starts [proposed]."""
    selection: str = "gmm"
    """``gmm`` (posterior > threshold) or ``ratio`` (the 1 - noise_rate smallest losses)."""
    noise_rate: float | None = None
    """``ratio``: the fraction to drop; None estimates it with the GMM."""
    threshold: float = 0.5
    """``gmm``: the clean-posterior threshold."""

    def __post_init__(self) -> None:
        if self.r < 1:
            raise ValueError(f"Invalid rank: {self.r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"Invalid dropout: {self.dropout}")
        if self.selection not in ("gmm", "ratio"):
            raise ValueError(f"Invalid selection: {self.selection!r}; expected gmm or ratio")
        if self.noise_rate is not None and not 0.0 <= self.noise_rate < 1.0:
            raise ValueError(f"Invalid noise_rate: {self.noise_rate}")
        if self.warmup_epochs < 0:
            raise ValueError(f"Invalid warmup_epochs: {self.warmup_epochs}")

    def check_train(self, train: Any) -> None:
        """Refuse a warm-up that leaves no epoch to train on the selection (it would be plain LoRA)."""
        if self.warmup_epochs >= train.epochs:
            raise ValueError(f"warmup_epochs {self.warmup_epochs} >= train.epochs {train.epochs}: selection "
                             "would start after the last epoch and small-loss would train as plain LoRA; "
                             "lower warmup_epochs or train longer")


def select_small_loss(losses: NDArray[np.float64], config: SmallLossConfig,
                      seed: int) -> tuple[NDArray[np.bool_], float]:
    """The clean mask for one epoch and the noise rate it implies (given or estimated)."""
    posterior = gmm_clean_probability(losses, seed)
    if config.selection == "gmm":
        keep = np.asarray(posterior > config.threshold)
        return keep, float(1.0 - keep.mean())
    rate = config.noise_rate if config.noise_rate is not None else float((posterior <= config.threshold).mean())
    return smallest_fraction(losses, 1.0 - rate), rate


@register_method("small-loss", config=SmallLossConfig, version="2")
class SmallLossAdapter:
    """Train a LoRA classifier on the small-loss samples, reselected every epoch after warm-up."""

    def __init__(self, config: SmallLossConfig) -> None:
        self.config = config

    def fit(self, ctx: FitContext) -> ModelFitted:
        """Warm up, then select and train; the last selection is the method's detection."""
        c = self.config
        model, head = new_lora_classifier(ctx, c)
        keep = torch.ones(len(ctx.train), dtype=torch.bool)
        history: list[dict[str, Any]] = []
        curve = val_curve_hook(ctx, model)
        last_epoch = ctx.train_config.epochs

        def loss(model: nn.Module, inputs: dict[str, torch.Tensor], labels: torch.Tensor,
                 index: NDArray[np.int64]) -> torch.Tensor:
            ce = F.cross_entropy(model(**inputs).logits.float(), labels, reduction="none")
            return masked_mean(ce, keep[torch.from_numpy(index)].to(ce.device))

        def on_epoch_end(epoch: int, train_loss: float) -> None:
            nonlocal keep
            curve(epoch, train_loss)
            if epoch < c.warmup_epochs and epoch < last_epoch:
                return
            losses, logits = per_sample_loss(model, ctx.train, batch_size=ctx.train_config.eval_batch_size,
                                             device=ctx.device, precision=ctx.precision,
                                             pad_id=ctx.tokenizer.pad_token_id)
            mask, rate = select_small_loss(losses, c, ctx.seed)
            keep = torch.from_numpy(mask)
            history.append({"epoch": epoch, "selected_clean": mask, "clean_score": -losses, "loss": losses,
                            "pred_model": logits.argmax(1)})
            ctx.log({"selection_epoch": epoch, "n_selected_clean": int(mask.sum()), "noise_rate_used": rate})

        train(model, ctx, head=head, loss_fn=loss, on_epoch_end=on_epoch_end, with_index=True)
        final = history[-1]
        diagnostics = {"selected_clean": final["selected_clean"], "clean_score": final["clean_score"],
                       "selection_history": history, "n_selected_clean": int(final["selected_clean"].sum())}
        return replace(fitted_from(model, ctx), diagnostics=diagnostics)

    def load(self, ctx: FitContext, directory: Path) -> ModelFitted:
        """Load the saved adapter and head onto a fresh base."""
        return fitted_from(load_peft(ctx.new_model(), directory), ctx)
