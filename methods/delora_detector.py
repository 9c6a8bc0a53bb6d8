"""Delora's stage 1 (METHODS.md §2.1): the dual-LoRA detector, its objective and its view of the data.

A clean and a noisy LoRA (peft adapters ``clean`` and ``noisy``) on one frozen base with one
shared head; :class:`DetectorObjective` is the training-loop hook ``λ_ce·L_ce + λ_LoRA·L_LoRA
+ λ_Det·L_Det``, and :func:`score_training_set` is the eval-mode selection ``D_c``.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from torch import nn

from bench.sdk import (
    FitContext,
    adapter_parameters,
    head_names,
    lora_targets,
    per_sample_loss,
    selected,
    train_adapters,
)

if TYPE_CHECKING:
    from methods.delora import DeloraConfig

CLEAN, NOISY = "clean", "noisy"


def clean_probability(loss_clean: torch.Tensor, loss_noisy: torch.Tensor) -> torch.Tensor:
    """``p^c = exp(-ℓc) / (exp(-ℓc) + exp(-ℓn)) = σ(ℓn - ℓc)`` (sign per METHODS.md §2.5)."""
    return torch.sigmoid(loss_noisy - loss_clean)


def parameter_change(params: list[nn.Parameter], snapshot: list[torch.Tensor]) -> torch.Tensor:
    """``sqrt(Σ ||θ - θ_snap||² + 1e-12)`` over an adapter's tensors."""
    total = sum(((p.float() - s) ** 2).sum() for p, s in zip(params, snapshot, strict=True))
    return torch.sqrt(total + 1e-12)  # type: ignore[arg-type]


def taus(t: float, h1: float, h2: float) -> tuple[float, float]:
    """``(τ1, τ2) = (t^h1, t^-h2)``."""
    return float(t) ** h1, float(t) ** -h2


class DetectorObjective:
    """The stage-1 loss ``λce L_ce + λlora L_LoRA + λdet L_Det``; keeps per-epoch term means."""

    def __init__(self, model: nn.Module, config: DeloraConfig, steps_per_epoch: int = 1) -> None:
        self.config, self.epoch, self.step, self.steps_per_epoch = config, 1, 0, steps_per_epoch
        self.params = {name: adapter_parameters(model, name) for name in (CLEAN, NOISY)}
        self.snapshot = self.take_snapshot()
        self.targets: torch.Tensor | None = None
        self.sums: dict[str, torch.Tensor] = defaultdict(lambda: torch.zeros(()))
        self.steps = 0

    def take_snapshot(self) -> dict[str, list[torch.Tensor]]:
        """Detached copies of both adapters (the start-of-epoch ``Δw^(t-1)``)."""
        return {name: [p.detach().float().clone() for p in ps] for name, ps in self.params.items()}

    @property
    def t(self) -> float:
        """The time of the τ schedule: the 1-based epoch, or continuous epochs done (t_mode)."""
        if self.config.t_mode == "epoch":
            return float(self.epoch)
        return max(self.step, 1) / self.steps_per_epoch

    def change(self, name: str) -> torch.Tensor:
        """``Δσ`` of adapter ``name`` since the snapshot."""
        return parameter_change(self.params[name], self.snapshot[name])

    def __call__(self, model: nn.Module, inputs: dict[str, torch.Tensor], labels: torch.Tensor,
                 index: NDArray[np.int64]) -> torch.Tensor:
        """The detector loss of one batch."""
        c = self.config
        detecting = self.epoch > c.warmup_epochs and c.lambda_det > 0
        if detecting or c.ce_mode == "separate":
            with selected(model, [CLEAN]):
                loss_c = F.cross_entropy(model(**inputs).logits.float(), labels, reduction="none")
            with selected(model, [NOISY]):
                loss_n = F.cross_entropy(model(**inputs).logits.float(), labels, reduction="none")
        if c.ce_mode == "combined":
            with selected(model, [CLEAN, NOISY]):
                ce = F.cross_entropy(model(**inputs).logits.float(), labels)
        else:
            ce = loss_c.mean() + loss_n.mean()
        tau1, tau2 = taus(self.t, c.h1, c.h2)
        constraint = tau1 * self.change(CLEAN) + tau2 * self.change(NOISY)
        total = c.lambda_ce * ce + c.lambda_lora * constraint
        terms = {"loss_ce": ce, "loss_lora": constraint}
        if detecting:
            if self.targets is None:
                target = (loss_c < loss_n).float().detach()
            else:
                target = self.targets[torch.from_numpy(index)].to(loss_c.device)
            threshold_only = c.det_grad == "threshold"  # then only φ = ℓn learns from L_Det
            det = F.binary_cross_entropy_with_logits(  # BCE on p^c = σ(ℓn − ℓc)
                loss_n - (loss_c.detach() if threshold_only else loss_c), target)
            total = total + c.lambda_det * det
            terms["loss_det"] = det
        for key, value in terms.items():
            self.sums[key] = self.sums[key] + value.detach().float().cpu()
        self.steps += 1
        self.step += 1
        return total

    def epoch_means(self) -> dict[str, float]:
        """Mean of each loss term over the epoch's steps; resets the sums."""
        out = {k: float(v) / max(1, self.steps) for k, v in self.sums.items()}
        self.sums.clear()
        self.steps = 0
        return out


def detector_model(ctx: FitContext, c: DeloraConfig) -> tuple[nn.Module, list[str]]:
    """Two LoRA adapters (clean, noisy) on one fresh base with one shared trainable head."""
    from peft import LoraConfig, get_peft_model

    base = ctx.new_model()
    head = head_names(base)

    def config() -> LoraConfig:
        return LoraConfig(r=c.r, lora_alpha=c.alpha,  # type: ignore[arg-type]
                          lora_dropout=c.dropout, target_modules=lora_targets(base, c.target_modules))

    model = get_peft_model(base, config(), adapter_name=CLEAN)
    model.add_adapter(NOISY, config())
    train_adapters(model, [CLEAN, NOISY], extra=head)
    return model, head


@dataclass
class Selection:
    """The detector's eval-mode view of the training set after an epoch."""

    loss_clean: NDArray[np.float64]
    loss_noisy: NDArray[np.float64]
    logits_clean: NDArray[np.float32]
    logits_noisy: NDArray[np.float32]
    logits_combined: NDArray[np.float32]

    @property
    def selected_clean(self) -> NDArray[np.bool_]:
        """``D_c``: the clean LoRA's loss is below the noisy LoRA's (the per-sample threshold)."""
        return np.asarray(self.loss_clean < self.loss_noisy)

    @property
    def clean_score(self) -> NDArray[np.float64]:
        """``p^c = σ(ℓn − ℓc)``."""
        return np.asarray(1.0 / (1.0 + np.exp(-(self.loss_noisy - self.loss_clean))))

    def history_entry(self, epoch: int) -> dict[str, Any]:
        """Arrays for the runner's per-epoch detection curves."""
        return {"epoch": epoch, "selected_clean": self.selected_clean, "clean_score": self.clean_score,
                "loss_clean": self.loss_clean, "loss_noisy": self.loss_noisy,
                "pred_clean": self.logits_clean.argmax(1), "pred_noisy": self.logits_noisy.argmax(1),
                "pred_combined": self.logits_combined.argmax(1)}


def score_training_set(model: nn.Module, ctx: FitContext) -> Selection:
    """Eval-mode per-sample losses of the clean-only, noisy-only and combined models."""
    kw = {"batch_size": ctx.train_config.eval_batch_size, "device": ctx.device, "precision": ctx.precision,
          "pad_id": ctx.tokenizer.pad_token_id}
    with selected(model, [CLEAN]):
        loss_c, logits_c = per_sample_loss(model, ctx.train, **kw)
    with selected(model, [NOISY]):
        loss_n, logits_n = per_sample_loss(model, ctx.train, **kw)
    with selected(model, [CLEAN, NOISY]):
        _, logits_b = per_sample_loss(model, ctx.train, **kw)
    return Selection(loss_c, loss_n, logits_c, logits_n, logits_b)
