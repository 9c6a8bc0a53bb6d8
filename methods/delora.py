"""Delora (Yuan, Chen, Zhang, ACL Findings 2025, arXiv 2510.10208) as ``delora-nld``.

Registered as ``delora-nld`` (noisy-label detection): peft has an unrelated method called DeLoRA.
Specification: METHODS.md §2 (everything there is [seed]: no code was public).

Stage 1, detector: a clean LoRA and a noisy LoRA on one frozen base (peft adapters ``clean``
and ``noisy``) with one shared trainable classification head. Per batch:

- ``L_ce``: CE of the combined model ``W0 + ΔW_c + ΔW_n`` on the observed labels (or, with
  ``ce_mode: separate``, CE of clean-only plus CE of noisy-only);
- ``L_LoRA = τ1(t)·Δσ_c + τ2(t)·Δσ_n`` with ``τ1 = t^h1`` (growing: the clean LoRA is held
  back late), ``τ2 = t^-h2`` (decaying: the noisy LoRA is held back early) and ``Δσ`` the
  Frobenius norm of the adapter's change since the start of the epoch (t in epochs done,
  continuous by default; ``t_mode: epoch`` for the 1-based epoch);
- ``L_Det`` (after warm-up): binary CE of the clean probability ``p^c = σ(ℓ^n − ℓ^c)`` towards
  targets fixed at the end of warm-up by a 2-GMM on the combined model's loss (default), or the
  detached self-training target ``1[ℓ^c < ℓ^n]`` of each batch (``detector_targets: self``).

After the last detector epoch, every training sample is scored in eval mode: ``D_c`` = samples
with ``ℓ^c < ℓ^n`` (the noisy LoRA's loss is the per-sample threshold).

Stage 2: ``D_n`` is relabelled (``methods.relabel``; default the clean LoRA's prediction).
Stage 3: a fresh LoRA classifier trains with CE on ``D_c`` and reverse CE on relabelled ``D_n``.

Ablations are configuration: ``detector: false`` (plain LoRA on all samples), ``relabeler:
drop`` (no relabelling), ``lambda_ce``/``lambda_lora``/``lambda_det: 0`` (a loss term off).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from torch import nn

from bench.sdk import (
    CellError,
    FitContext,
    ModelFitted,
    count_parameters,
    fitted_from,
    gmm_clean_probability,
    load_peft,
    new_lora_classifier,
    per_sample_loss,
    register_method,
    reverse_cross_entropy,
    selected,
    train,
    val_curve_hook,
)
from methods.delora_detector import (
    CLEAN,
    NOISY,
    DetectorObjective,
    Selection,
    detector_model,
    score_training_set,
    taus,
)
from methods.relabel import RELABELERS, relabel


@dataclass(frozen=True)
class DeloraConfig:
    """Delora's hyperparameters; defaults from METHODS.md §2.2 (tags there)."""

    r: int = 32
    """Rank of both detector LoRAs and the classifier LoRA [seed]."""
    alpha: float = 64.0
    """lora_alpha [proposed]: scale 2."""
    dropout: float = 0.1
    """peft's ``lora_dropout`` on the adapter input (as in ``lora``)."""
    target_modules: tuple[str, ...] | None = None
    """None: the harness's default for the architecture (bench/sdk/targets.py): query/value on BERT;
    q/k/v/o and gate/up/down on Llama-style decoders, as every other method there. The paper's
    +13.6M parameters on Llama-3.1-8B match q_proj/v_proj at r 32 [derived]: set
    ``target_modules: [q_proj, v_proj]`` to follow it."""
    detector_epochs: int = 8
    """Stage-1 epochs, warm-up included [seed]."""
    warmup_epochs: int = 2
    """Epochs without ``L_Det`` [seed]."""
    classifier_epochs: int = 6
    """Stage-3 epochs [seed]."""
    h1: float = 1.0
    """τ1(t) = t^h1 [proposed]."""
    h2: float = 1.0
    """τ2(t) = t^-h2 [proposed]."""
    t_mode: str = "continuous"
    """``continuous``: t = steps done / steps per epoch, from ~0, so the noisy LoRA starts held back
    (τ2 large) and the clean one free (τ1 small); ``epoch``: t = 1-based epoch, as METHODS.md §2.2
    proposes, which makes τ1 = τ2 = 1 for all of epoch 1. Chosen by the sweep in docs/delora.md."""
    lambda_ce: float = 1.0
    """Weight of ``L_ce`` (0: ablation)."""
    lambda_lora: float = 0.03
    """Weight of ``L_LoRA`` (0: ablation). METHODS.md §2.2 proposes 1; on MiniLM that held both
    LoRAs still (Δσ 0.06 per epoch against 7.7 unconstrained). Chosen by the sweep in docs/delora.md."""
    lambda_det: float = 1.0
    """Weight of ``L_Det`` (0: ablation)."""
    det_grad: str = "both"
    """Which LoRA ``L_Det`` trains. ``both``: its gradient reaches ``ℓc`` and ``ℓn`` (and the head
    through each pass), so it also pushes the clean LoRA's loss up on every sample it flags, clean
    or not, and the clean LoRA's predictions (the default relabels) unlearn them. ``threshold``:
    ``ℓc`` is detached inside ``L_Det``, so only the learnable threshold ``φ = ℓn`` (the noisy
    LoRA) and the head through its pass learn from it; the clean LoRA learns from ``L_ce`` alone.
    METHODS.md §2.1 does not say; the seed calls ``φ`` the learnable part. Left out of the run id
    at ``both`` (:data:`OMIT_WHEN_DEFAULT`), so earlier runs keep theirs."""
    ce_mode: str = "combined"
    """``combined``: CE of W0+ΔW_c+ΔW_n; ``separate``: CE(clean-only) + CE(noisy-only)."""
    detector_targets: str = "gmm"
    """``gmm``: a 2-component GMM on the combined model's per-sample loss at the end of warm-up,
    frozen (METHODS.md §2.5 item 3); ``self``: 1[ℓ^c < ℓ^n] each batch, the §2.1 proposal. On
    MiniLM the self-training targets run away once L_Det starts (the clean LoRA unlearns what it
    wrongly flags; TREC sym-20 % AUROC 0.94 → 0.77); GMM targets hold it there (74.7 → 86.7 %)
    but do worse under asymmetric and instance noise (docs/delora.md has all four settings)."""
    detector: bool = True
    """False: no detector, the classifier trains on every sample with CE (ablation)."""
    relabeler: str = "clean-lora"
    """clean-lora | drop | file | model (``methods.relabel``)."""
    relabel_file: str | None = None
    """JSONL ``{id, value}`` for ``relabeler: file``."""
    relabel_model: str | None = None
    """Causal LM name or folder for ``relabeler: model``."""
    rce_log_zero: float = -4.0
    """``log 0`` clip A of reverse CE: RCE = -A (1 - p_y) [proposed]."""
    classifier_init: str = "fresh"
    """``fresh`` LoRA for stage 3, or ``clean``: start from the clean LoRA."""
    log_selection: bool = True
    """Score the whole training set after every detector epoch (per-epoch detection curves)."""

    OMIT_WHEN_DEFAULT: ClassVar[tuple[str, ...]] = ("det_grad",)
    """Fields added after runs were stored: left out of the cell's spec (and run id) at their default."""

    def __post_init__(self) -> None:
        if self.r < 1:
            raise ValueError(f"Invalid rank: {self.r}")
        if not 0 <= self.warmup_epochs <= self.detector_epochs or self.detector_epochs < 1:
            raise ValueError(f"Invalid epochs: warmup {self.warmup_epochs} of {self.detector_epochs}")
        if self.detector_targets == "gmm" and self.warmup_epochs == 0:
            raise ValueError("detector_targets 'gmm' needs at least one warm-up epoch")
        if self.classifier_epochs < 1:
            raise ValueError(f"Invalid classifier_epochs: {self.classifier_epochs}")
        if min(self.lambda_ce, self.lambda_lora, self.lambda_det) < 0 or self.lambda_ce + self.lambda_det == 0:
            raise ValueError("Invalid loss weights: need lambda_ce or lambda_det > 0, none negative")
        choices = {"ce_mode": ("combined", "separate"), "detector_targets": ("self", "gmm"),
                   "t_mode": ("epoch", "continuous"), "det_grad": ("both", "threshold"),
                   "relabeler": RELABELERS, "classifier_init": ("fresh", "clean")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"Invalid {name}: {getattr(self, name)!r}; expected one of {', '.join(allowed)}")
        if self.relabeler == "file" and not self.relabel_file:
            raise ValueError("relabeler 'file' needs relabel_file")
        if self.relabeler == "model" and not self.relabel_model:
            raise ValueError("relabeler 'model' needs relabel_model")


def _copy_lora(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy LoRA tensors saved under peft state-dict keys into ``model``'s ``default`` adapter."""
    lora = {n: p for n, p in model.named_parameters() if "lora_" in n}
    with torch.no_grad():
        for name, param in lora.items():
            key = name.replace(".default.", ".")
            if key not in state or state[key].shape != param.shape:
                raise CellError(f"delora-nld: the clean LoRA does not fit the classifier at {key}")
            param.copy_(state[key])


@dataclass
class Detection:
    """What stage 1 hands on: the final selection, its per-epoch history, the detector's size."""

    view: Selection
    history: list[dict[str, Any]]
    parameters: int
    clean_state: dict[str, torch.Tensor]
    """The clean LoRA's tensors (peft state-dict keys), for ``classifier_init: clean``."""


@register_method("delora-nld", config=DeloraConfig, version="3")
class DeloraAdapter:
    """Delora: dual-LoRA detector, relabelling, then a LoRA classifier on the selection."""

    def __init__(self, config: DeloraConfig) -> None:
        self.config = config

    def detect(self, ctx: FitContext) -> Detection:
        """Stage 1: train the detector and score the training set with it."""
        c = self.config
        model, head = detector_model(ctx, c)
        batch = ctx.train_config.batch_size
        objective = DetectorObjective(model, c, steps_per_epoch=(len(ctx.train) + batch - 1) // batch)
        history: list[dict[str, Any]] = []
        last: list[Selection] = []

        def on_epoch_end(epoch: int, train_loss: float) -> None:
            tau1, tau2 = taus(objective.t, c.h1, c.h2)
            with torch.no_grad():
                change = {f"delta_sigma_{name}": float(objective.change(name)) for name in (CLEAN, NOISY)}
            row: dict[str, Any] = {"detector_epoch": epoch, "detector_train_loss": train_loss, "tau1": tau1,
                                   "tau2": tau2, **change, **objective.epoch_means()}
            if c.log_selection or epoch == c.detector_epochs:
                view = score_training_set(model, ctx)
                history.append(view.history_entry(epoch))
                last[:] = [view]
                row["n_selected_clean"] = int(view.selected_clean.sum())
                row["n_flagged_noisy"] = len(ctx.train) - row["n_selected_clean"]
            if c.detector_targets == "gmm" and epoch == c.warmup_epochs:
                objective.targets = torch.from_numpy(self._gmm_targets(model, ctx))
            ctx.log(row)
            objective.snapshot = objective.take_snapshot()
            objective.epoch = epoch + 1

        train(model, ctx, head=head, epochs=c.detector_epochs, loss_fn=objective, on_epoch_end=on_epoch_end,
              with_index=True)
        from peft import get_peft_model_state_dict

        state = {k: v.detach().clone() for k, v in get_peft_model_state_dict(model, adapter_name=CLEAN).items()}
        return Detection(last[0], history, count_parameters(model)[0], state)

    def _gmm_targets(self, model: nn.Module, ctx: FitContext) -> NDArray[np.float32]:
        with selected(model, [CLEAN, NOISY]):
            losses, _ = per_sample_loss(model, ctx.train, batch_size=ctx.train_config.eval_batch_size,
                                        device=ctx.device, precision=ctx.precision, pad_id=ctx.tokenizer.pad_token_id)
        return (gmm_clean_probability(losses, ctx.seed) > 0.5).astype(np.float32)

    def fit(self, ctx: FitContext) -> ModelFitted:
        """Detect, relabel, train the classifier; diagnostics carry the selection."""
        c = self.config
        diagnostics: dict[str, Any] = {"relabeler": c.relabeler if c.detector else None}
        detector_params, labels = 0, ctx.train.labels.copy()
        index = np.arange(len(ctx.train))
        flagged = np.zeros(len(ctx.train), dtype=bool)
        init_state = None
        if c.detector:
            detection = self.detect(ctx)
            view, detector_params = detection.view, detection.parameters
            flagged = ~view.selected_clean
            new = relabel(c.relabeler, ctx, np.flatnonzero(flagged), view.logits_clean,
                          file=c.relabel_file, model=c.relabel_model)
            relabels = np.full(len(ctx.train), -1, dtype=np.int64)
            if new is None:
                index = np.flatnonzero(~flagged)
            else:
                relabels[flagged] = new
                labels[flagged] = new + ctx.n_classes  # marks the relabelled items for RCE
            if len(index) == 0:
                raise CellError("delora-nld: the detector flagged every training sample as noisy")
            diagnostics.update(selected_clean=view.selected_clean, clean_score=view.clean_score,
                               selection_history=detection.history, relabels=relabels,
                               n_selected_clean=int(view.selected_clean.sum()), detector_params=detector_params)
            if c.classifier_init == "clean":
                init_state = detection.clean_state
        model, head = self._classifier(ctx, init_state)
        data = ctx.train.subset(index).with_labels(labels[index])
        train(model, ctx, head=head, data=data, epochs=c.classifier_epochs,
              loss_fn=self._classifier_loss(ctx.n_classes), on_epoch_end=val_curve_hook(ctx, model))
        classifier_params = count_parameters(model)[0]
        diagnostics["classifier_params"] = classifier_params
        return replace(fitted_from(model, ctx), diagnostics=diagnostics,
                       trained_parameters=classifier_params + detector_params)

    def _classifier(self, ctx: FitContext, init_state: dict[str, torch.Tensor] | None) -> tuple[nn.Module, list[str]]:
        c = self.config
        model, head = new_lora_classifier(ctx, c)
        if init_state is not None:
            _copy_lora(model, init_state)
        return model, head

    def _classifier_loss(self, n_classes: int) -> Any:
        log_zero = self.config.rce_log_zero

        def loss(model: nn.Module, inputs: dict[str, torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
            logits = model(**inputs).logits.float()
            relabelled = labels >= n_classes
            target = torch.where(relabelled, labels - n_classes, labels)
            ce = F.cross_entropy(logits, target, reduction="none")
            return torch.where(relabelled, reverse_cross_entropy(logits, target, log_zero), ce).mean()

        return loss

    def load(self, ctx: FitContext, directory: Path) -> ModelFitted:
        """Load the saved classifier (adapter + head) onto a fresh base."""
        return fitted_from(load_peft(ctx.new_model(), directory), ctx)


