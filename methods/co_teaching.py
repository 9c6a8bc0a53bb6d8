"""Co-Teaching (Han et al., NeurIPS 2018, arXiv 1804.06872) with two LoRA networks on one base.

Two peft adapters, ``default`` and ``peer``, each with its own classification head, share the
frozen backbone (METHODS.md §6.2). On every mini-batch each network ranks the samples by its
own cross-entropy and hands its ``R(t)`` smallest-loss fraction to the other network, which
updates on those only. ``R(t) = 1 - τ·min(t / T_k, 1)`` with ``t`` the number of finished
epochs (as in the authors' code), ``T_k = ramp_epochs`` and ``τ = forget_rate`` (or, when left
empty, the high-loss share of a 2-GMM on both networks' mean loss after the first epoch).
Prediction averages the two networks' probabilities (or uses one of them).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from torch import nn

from bench.sdk import (
    Encoded,
    FitContext,
    count_parameters,
    gmm_clean_probability,
    load_peft,
    new_lora_classifier,
    per_sample_loss,
    predict_logits,
    register_method,
    selected,
    smallest_fraction,
    softmax,
    train,
    train_adapters,
    val_curve_hook,
)

NETS = ("default", "peer")


@dataclass(frozen=True)
class CoTeachingConfig:
    """Two LoRA networks as in ``lora``, the forget-rate schedule and the prediction rule."""

    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.1
    target_modules: tuple[str, ...] | None = None
    forget_rate: float | None = None
    """τ: the final share of each batch left out; None estimates the noise rate after epoch 1."""
    ramp_epochs: float = 2.0
    """T_k: epochs over which the forget rate ramps up (10 in the paper; 2 for short runs [proposed])."""
    predict: str = "average"
    """``average`` of both networks' probabilities, or ``default`` / ``peer`` alone."""

    def __post_init__(self) -> None:
        if self.r < 1:
            raise ValueError(f"Invalid rank: {self.r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"Invalid dropout: {self.dropout}")
        if self.forget_rate is not None and not 0.0 <= self.forget_rate < 1.0:
            raise ValueError(f"Invalid forget_rate: {self.forget_rate}")
        if self.ramp_epochs <= 0:
            raise ValueError(f"Invalid ramp_epochs: {self.ramp_epochs}")
        if self.predict not in ("average", *NETS):
            raise ValueError(f"Invalid predict: {self.predict!r}; expected average, default or peer")


def keep_rate(finished_epochs: int, forget_rate: float, ramp_epochs: float) -> float:
    """``R(t) = 1 - τ·min(t / T_k, 1)``."""
    return 1.0 - forget_rate * min(finished_epochs / ramp_epochs, 1.0)


def exchange_loss(loss_a: torch.Tensor, loss_b: torch.Tensor, keep: float) -> torch.Tensor:
    """Each network trains on the ``keep`` share of the batch that the *other* finds easiest."""
    k = max(1, math.ceil(keep * len(loss_a)))
    easiest_for_a = torch.argsort(loss_a.detach())[:k]
    easiest_for_b = torch.argsort(loss_b.detach())[:k]
    return loss_a[easiest_for_b].mean() + loss_b[easiest_for_a].mean()


@dataclass
class CoTeachingFitted:
    """Both networks on one peft model; predicts with ``predict`` (see the config)."""

    model: nn.Module
    predict: str
    device: torch.device
    precision: str
    pad_id: int
    batch_size: int = 128
    diagnostics: dict[str, Any] = field(default_factory=dict)

    def net_proba(self, name: str, data: Encoded) -> NDArray[np.float64]:
        """Probabilities of one network."""
        with selected(self.model, [name]):
            return softmax(predict_logits(self.model, data, batch_size=self.batch_size, device=self.device,
                                          precision=self.precision, pad_id=self.pad_id))

    def predict_proba(self, data: Encoded) -> NDArray[np.float64]:
        """The configured prediction: the mean of both networks, or one of them."""
        if self.predict != "average":
            return self.net_proba(self.predict, data)
        return (self.net_proba(NETS[0], data) + self.net_proba(NETS[1], data)) / 2.0

    def predict_variants(self, data: Encoded) -> dict[str, NDArray[np.float64]]:
        """Each network alone (the paper reports either, or their average)."""
        return {f"net_{name}": self.net_proba(name, data) for name in NETS}

    def trainable_parameters(self) -> int:
        """Both networks' adapters and heads."""
        return count_parameters(self.model)[0]

    def total_parameters(self) -> int:
        """Backbone plus both networks."""
        return count_parameters(self.model)[1]

    def save(self, directory: Path) -> None:
        """Save both adapters: ``default`` at the top, ``peer`` in a subfolder (peft's layout)."""
        directory.mkdir(parents=True, exist_ok=True)
        flags = [(p, p.requires_grad) for p in self.model.parameters()]
        self.model.save_pretrained(str(directory), selected_adapters=list(NETS))  # type: ignore[operator]
        for param, flag in flags:
            param.requires_grad_(flag)


def _two_networks(ctx: FitContext, c: CoTeachingConfig) -> tuple[nn.Module, list[str]]:
    model, head = new_lora_classifier(ctx, c)
    torch.manual_seed(ctx.seed + 1)  # the peer starts elsewhere: its own A and its own head
    model.add_adapter(NETS[1], copy.deepcopy(model.peft_config[NETS[0]]))  # type: ignore[operator, index]
    std = float(getattr(getattr(model, "config", None), "initializer_range", 0.02))
    for name, param in model.named_parameters():
        if f"modules_to_save.{NETS[1]}." in name:
            with torch.no_grad():
                param.normal_(0.0, std) if param.dim() > 1 else param.zero_()
    train_adapters(model, NETS)
    return model, head


@register_method("co-teaching", config=CoTeachingConfig, version="2")
class CoTeachingAdapter:
    """Co-Teaching: two LoRA networks exchange their small-loss samples every batch."""

    def __init__(self, config: CoTeachingConfig) -> None:
        self.config = config

    def fit(self, ctx: FitContext) -> CoTeachingFitted:
        """Train both networks; the per-sample mean loss is the clean score."""
        c = self.config
        model, head = _two_networks(ctx, c)
        fitted = CoTeachingFitted(model, c.predict, ctx.device, ctx.precision, ctx.tokenizer.pad_token_id,
                                  ctx.train_config.eval_batch_size)
        state: dict[str, Any] = {"finished": 0, "tau": c.forget_rate}
        history: list[dict[str, Any]] = []
        curve = val_curve_hook(ctx, model, fitted.predict_proba)

        def loss(model: nn.Module, inputs: dict[str, torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
            with selected(model, [NETS[0]]):
                loss_a = F.cross_entropy(model(**inputs).logits.float(), labels, reduction="none")
            with selected(model, [NETS[1]]):
                loss_b = F.cross_entropy(model(**inputs).logits.float(), labels, reduction="none")
            return exchange_loss(loss_a, loss_b, keep_rate(int(state["finished"] or 0), float(state["tau"] or 0.0),
                                                           c.ramp_epochs))

        def on_epoch_end(epoch: int, train_loss: float) -> None:
            curve(epoch, train_loss)
            losses = {}
            for name in NETS:
                with selected(model, [name]):
                    losses[name] = per_sample_loss(model, ctx.train, batch_size=ctx.train_config.eval_batch_size,
                                                   device=ctx.device, precision=ctx.precision,
                                                   pad_id=ctx.tokenizer.pad_token_id)
            mean = (losses[NETS[0]][0] + losses[NETS[1]][0]) / 2.0
            if state["tau"] is None:
                state["tau"] = float((gmm_clean_probability(mean, ctx.seed) <= 0.5).mean())
            state["finished"] = epoch
            keep = keep_rate(epoch, float(state["tau"]), c.ramp_epochs)
            history.append({"epoch": epoch, "selected_clean": smallest_fraction(mean, keep), "clean_score": -mean,
                            **{f"loss_{n}": losses[n][0] for n in NETS},
                            **{f"pred_{n}": losses[n][1].argmax(1) for n in NETS}})
            ctx.log({"selection_epoch": epoch, "forget_rate": state["tau"], "keep_rate": keep})

        train(model, ctx, head=head, loss_fn=loss, on_epoch_end=on_epoch_end)
        final = history[-1]
        fitted.diagnostics = {"selected_clean": final["selected_clean"], "clean_score": final["clean_score"],
                              "selection_history": history, "forget_rate": state["tau"],
                              "n_selected_clean": int(final["selected_clean"].sum())}
        return fitted

    def load(self, ctx: FitContext, directory: Path) -> CoTeachingFitted:
        """Load both networks (and their heads) onto a fresh base."""
        model = load_peft(ctx.new_model(), directory, NETS[0])
        model.load_adapter(str(directory / NETS[1]), adapter_name=NETS[1])  # type: ignore[operator]
        return CoTeachingFitted(model, self.config.predict, ctx.device, ctx.precision, ctx.tokenizer.pad_token_id,
                                ctx.train_config.eval_batch_size)
