"""LoRA through peft: the baseline every other method is compared with."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from bench.fitted import ModelFitted, fitted_from, load_peft, val_curve_hook
from bench.method import FitContext
from bench.models import head_names
from bench.registry import register_method
from bench.train import train_loop, wrap_lora


@dataclass(frozen=True)
class LoraConfig:
    """LoRA (Hu et al. 2021, arXiv 2106.09685) on peft's ``LoraConfig``.

    Defaults: rank 8 with alpha 16 (scale 2) on the attention query/value projections, as in
    the paper's GLUE runs (which used r=8 on W_q, W_v); peft's dropout on the adapter input.
    """

    r: int = 8
    """Rank of A and B."""
    alpha: float = 16.0
    """Scale numerator: the update is (alpha / r) * B A."""
    dropout: float = 0.1
    """peft's ``lora_dropout``: dropout on the adapter's *input* activations."""
    target_modules: tuple[str, ...] | None = None
    """Module names to adapt; None takes peft's default for the architecture."""

    def __post_init__(self) -> None:
        if self.r < 1:
            raise ValueError(f"Invalid rank: {self.r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"Invalid dropout: {self.dropout}")


@register_method("lora", config=LoraConfig, version="1")
class LoraAdapter:
    """Fine-tune a peft LoRA adapter and the classification head with cross-entropy."""

    def __init__(self, config: LoraConfig) -> None:
        self.config = config

    def fit(self, ctx: FitContext) -> ModelFitted:
        """Wrap, train with the shared loop, return the fitted model."""
        base = ctx.new_model()
        head = head_names(base)
        cfg = asdict(self.config)
        model = wrap_lora(base, head=head, r=cfg.pop("r"), alpha=cfg.pop("alpha"),
                          dropout=cfg.pop("dropout"), target_modules=cfg.pop("target_modules"))
        train_loop(model=model, data=ctx.train, cfg=ctx.train_config, seed=ctx.seed, device=ctx.device,
                   precision=ctx.precision, head=head, pad_id=ctx.tokenizer.pad_token_id,
                   on_epoch_end=val_curve_hook(ctx, model), progress=ctx.progress)
        return fitted_from(model, ctx)

    def load(self, ctx: FitContext, directory: Path) -> ModelFitted:
        """Load the saved adapter and head onto a fresh base."""
        return fitted_from(load_peft(ctx.new_model(), directory), ctx)
