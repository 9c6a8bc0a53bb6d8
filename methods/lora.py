"""LoRA through peft, and the peft variants a user compares with: PiSSA, OLoRA, DoRA, rsLoRA.

A variant changes only initialisation or the forward (STYLE.md point 4), so it is a
``variant`` field of the LoRA config; suites list each variant as its own grid entry
(``pissa: {method: lora, config: {variant: pissa}}``) and the leaderboard shows it as a row.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bench.sdk import (
    CausalFitted,
    FitContext,
    ModelFitted,
    count_parameters,
    fit_causal_lora,
    fitted_from,
    head_names,
    load_causal,
    load_converted,
    load_peft,
    register_method,
    save_initial,
    train,
    val_curve_hook,
    wrap_lora,
)

#: variant -> extra ``peft.LoraConfig`` arguments.
VARIANTS: dict[str, dict[str, Any]] = {
    "lora": {},  # Hu et al. 2021: Kaiming-uniform A, B = 0
    "gaussian": {"init_lora_weights": "gaussian"},
    "pissa": {"init_lora_weights": "pissa"},  # Meng et al. 2024, arXiv 2404.02948: top-r SVD of W0
    "olora": {"init_lora_weights": "olora"},  # Büyükakyüz 2024, arXiv 2406.01775: QR of W0
    "dora": {"use_dora": True},  # Liu et al. 2024, arXiv 2402.09353: magnitude/direction split
    "rslora": {"use_rslora": True},  # Kalajdzievski 2023, arXiv 2312.03732: scale alpha/sqrt(r)
}
#: Variants whose init rewrites the base weights (W0 -> W0 - sBA); their saved adapter is
#: converted with peft into a plain LoRA delta for the original base.
REWRITES_BASE = ("pissa", "olora")


@dataclass(frozen=True)
class LoraConfig:
    """LoRA (Hu et al. 2021, arXiv 2106.09685) on peft's ``LoraConfig``, and its variants.

    Defaults: rank 8 with alpha 16 (scale 2) on the attention query/value projections, as in
    the paper's GLUE runs (r=8 on W_q, W_v); peft's dropout 0.1 on the adapter input.
    """

    r: int = 8
    """Rank of A and B."""
    alpha: float = 16.0
    """Scale numerator: the update is (alpha / r) * B A (alpha / sqrt(r) for rslora)."""
    dropout: float = 0.1
    """peft's ``lora_dropout``: dropout on the adapter's *input* activations."""
    target_modules: tuple[str, ...] | None = None
    """Module names to adapt; None takes peft's default for the architecture."""
    variant: str = "lora"
    """lora | gaussian | pissa | olora | dora | rslora (see ``VARIANTS``)."""
    peft_options: dict[str, Any] = field(default_factory=dict)
    """Further ``peft.LoraConfig`` arguments, e.g. ``{"init_lora_weights": "pissa_niter_4"}``."""

    def __post_init__(self) -> None:
        if self.r < 1:
            raise ValueError(f"Invalid rank: {self.r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"Invalid dropout: {self.dropout}")
        if self.variant not in VARIANTS:
            raise ValueError(f"Invalid variant: {self.variant!r}; expected one of {', '.join(VARIANTS)}")


def _convert(model: Any, initial: tempfile.TemporaryDirectory[str], ctx: FitContext) -> ModelFitted:
    """The trained PiSSA/OLoRA adapter as a delta on a fresh original base; counts the rank-r training."""
    with initial:
        converted = load_converted(model, initial, ctx.new_model)
    return replace(fitted_from(converted, ctx), trained_parameters=count_parameters(model)[0])


@register_method("lora", config=LoraConfig, version="2", kinds=("classification", "generation"))
class LoraAdapter:
    """Fine-tune a peft LoRA adapter (of any variant) and the classification head with CE.

    On a generation task the adapter trains a causal LM on the answer tokens (``bench.sdk.causal``).
    """

    def __init__(self, config: LoraConfig) -> None:
        self.config = config

    def fit(self, ctx: FitContext) -> ModelFitted | CausalFitted:
        """Wrap, train with the shared loop, return the fitted model."""
        c = self.config
        if ctx.kind == "generation":
            extra = {**VARIANTS[c.variant], **c.peft_options}
            return fit_causal_lora(ctx, r=c.r, alpha=c.alpha, dropout=c.dropout, target_modules=c.target_modules,
                                   rewrites_base=c.variant in REWRITES_BASE, **extra)
        base = ctx.new_model()
        head = head_names(base)
        model = wrap_lora(base, head=head, r=c.r, alpha=c.alpha, dropout=c.dropout, target_modules=c.target_modules,
                          **{**VARIANTS[c.variant], **c.peft_options})
        initial = save_initial(model) if c.variant in REWRITES_BASE else None
        train(model, ctx, head=head, on_epoch_end=val_curve_hook(ctx, model))
        return fitted_from(model, ctx) if initial is None else _convert(model, initial, ctx)

    def load(self, ctx: FitContext, directory: Path) -> ModelFitted | CausalFitted:
        """Load the saved adapter and head onto a fresh (original) base."""
        if ctx.kind == "generation":
            return load_causal(ctx, directory)
        return fitted_from(load_peft(ctx.new_model(), directory), ctx)
