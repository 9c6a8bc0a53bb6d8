"""Full fine-tuning: every weight trains. The upper-cost reference for PEFT methods."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import nn

from bench.sdk import (
    FitContext,
    ModelFitted,
    fitted_from,
    head_names,
    load_trainable,
    register_method,
    train,
    val_curve_hook,
)


@dataclass(frozen=True)
class FullFtConfig:
    """Full fine-tuning (Devlin et al. 2019, arXiv 1810.04805) of all weights.

    Set a lower learning rate for it in the suite (BERT's recipe uses 2e-5 to 5e-5).
    """

    freeze_embeddings: bool = False
    """Keep the token/position embeddings frozen (saves optimizer memory): the ``embeddings``
    modules of an encoder, the input embedding (``embed_tokens``) of a causal LM."""


@register_method("full-ft", config=FullFtConfig, version="1")
class FullFtAdapter:
    """Train all parameters with cross-entropy."""

    def __init__(self, config: FullFtConfig) -> None:
        self.config = config

    def fit(self, ctx: FitContext) -> ModelFitted:
        """Train the whole model with the shared loop.

        The weights train in fp32 (a causal base on CUDA comes with bf16 weights; AdamW's small
        updates would round away in bf16); bf16 autocast still does the matmuls where on.
        """
        model = ctx.new_model().float()
        head = head_names(model)
        embedding = getattr(model, "get_input_embeddings", lambda: None)()
        frozen = {id(p) for p in embedding.parameters()} if isinstance(embedding, nn.Module) else set()
        for name, param in model.named_parameters():
            in_embeddings = "embeddings" in name or id(param) in frozen
            param.requires_grad = not (self.config.freeze_embeddings and in_embeddings)
        train(model, ctx, head=head, on_epoch_end=val_curve_hook(ctx, model))
        return fitted_from(model, ctx)

    def load(self, ctx: FitContext, directory: Path) -> ModelFitted:
        """Load the saved tensors onto a fresh base (in fp32, as trained)."""
        return fitted_from(load_trainable(ctx.new_model().float(), directory), ctx)
