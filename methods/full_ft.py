"""Full fine-tuning: every weight trains. The upper-cost reference for PEFT methods."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bench.sdk.fitted import ModelFitted, fitted_from, load_trainable, val_curve_hook
from bench.sdk.method import FitContext
from bench.models.encoder import head_names
from bench.sdk.registry import register_method
from bench.sdk.train import train_loop


@dataclass(frozen=True)
class FullFtConfig:
    """Full fine-tuning (Devlin et al. 2019, arXiv 1810.04805) of all weights.

    Set a lower learning rate for it in the suite (BERT's recipe uses 2e-5 to 5e-5).
    """

    freeze_embeddings: bool = False
    """Keep the token/position embeddings frozen (saves optimizer memory)."""


@register_method("full-ft", config=FullFtConfig, version="1")
class FullFtAdapter:
    """Train all parameters with cross-entropy."""

    def __init__(self, config: FullFtConfig) -> None:
        self.config = config

    def fit(self, ctx: FitContext) -> ModelFitted:
        """Train the whole model with the shared loop."""
        model = ctx.new_model()
        head = head_names(model)
        for name, param in model.named_parameters():
            param.requires_grad = not (self.config.freeze_embeddings and "embeddings" in name)
        train_loop(model=model, data=ctx.train, cfg=ctx.train_config, seed=ctx.seed, device=ctx.device,
                   precision=ctx.precision, head=head, pad_id=ctx.tokenizer.pad_token_id,
                   on_epoch_end=val_curve_hook(ctx, model), progress=ctx.progress)
        return fitted_from(model, ctx)

    def load(self, ctx: FitContext, directory: Path) -> ModelFitted:
        """Load the saved tensors onto a fresh base."""
        return fitted_from(load_trainable(ctx.new_model(), directory), ctx)
