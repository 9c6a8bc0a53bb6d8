"""Confident learning (Northcutt, Jiang, Chuang, JAIR 2021) through the ``cleanlab`` package.

Out-of-sample predicted probabilities come from ``folds``-fold stratified cross-validation,
one LoRA classifier per fold (trained as ``lora`` on the other folds). ``cleanlab.filter.
find_label_issues`` flags the label issues, ``cleanlab.rank.get_label_quality_scores`` scores
every sample (the clean score), and a final LoRA classifier trains on the samples kept.
Registered as ``cleanlab``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from torch import nn

from bench.sdk import (
    CellError,
    FitContext,
    ModelFitted,
    count_parameters,
    fitted_from,
    load_peft,
    new_lora_classifier,
    predict_logits,
    register_method,
    softmax,
    train,
    val_curve_hook,
)

FILTERS = ("prune_by_noise_rate", "prune_by_class", "both", "confident_learning", "predicted_neq_given")


@dataclass(frozen=True)
class ConfidentLearningConfig:
    """LoRA as in ``lora``, the cross-validation and cleanlab's filter."""

    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.1
    target_modules: tuple[str, ...] | None = None
    folds: int = 5
    """Cross-validation folds for the out-of-sample probabilities (cleanlab's default 5)."""
    cv_epochs: int | None = None
    """Epochs per fold model; None: the suite's ``train.epochs``."""
    filter_by: str = "prune_by_noise_rate"
    """``cleanlab.filter.find_label_issues(filter_by=...)`` (cleanlab's default)."""

    def __post_init__(self) -> None:
        if self.r < 1:
            raise ValueError(f"Invalid rank: {self.r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"Invalid dropout: {self.dropout}")
        if self.folds < 2:
            raise ValueError(f"Invalid folds: {self.folds} (need at least 2)")
        if self.filter_by not in FILTERS:
            raise ValueError(f"Invalid filter_by: {self.filter_by!r}; expected one of {', '.join(FILTERS)}")


@register_method("cleanlab", config=ConfidentLearningConfig, version="2")
class ConfidentLearningAdapter:
    """Cross-validated LoRA probabilities -> cleanlab's label issues -> LoRA on the rest."""

    def __init__(self, config: ConfidentLearningConfig) -> None:
        self.config = config

    def _train(self, ctx: FitContext, index: NDArray[np.int64], epochs: int, seed: int, final: bool) -> nn.Module:
        c = self.config
        model, head = new_lora_classifier(ctx, c)
        train(model, ctx, head=head, data=ctx.train.subset(index), epochs=epochs, seed=seed,
              on_epoch_end=val_curve_hook(ctx, model) if final else None)
        return model

    def out_of_sample_probs(self, ctx: FitContext) -> NDArray[np.float64]:
        """``[n, K]`` probabilities, each row from the fold model that did not train on it."""
        from sklearn.model_selection import StratifiedKFold

        c, labels = self.config, ctx.train.labels
        epochs = c.cv_epochs or ctx.train_config.epochs
        probs = np.zeros((len(labels), ctx.n_classes))
        splitter = StratifiedKFold(n_splits=c.folds, shuffle=True, random_state=ctx.seed)
        for fold, (fit_index, held_out) in enumerate(splitter.split(np.zeros(len(labels)), labels)):
            model = self._train(ctx, fit_index, epochs, ctx.seed + 1000 * (fold + 1), final=False)
            logits = predict_logits(model, ctx.train.subset(held_out), batch_size=ctx.train_config.eval_batch_size,
                                    device=ctx.device, precision=ctx.precision, pad_id=ctx.tokenizer.pad_token_id)
            probs[held_out] = softmax(logits)
        return probs

    def fit(self, ctx: FitContext) -> ModelFitted:
        """Cross-validate, find label issues, train the final classifier on the kept samples."""
        from cleanlab.filter import find_label_issues
        from cleanlab.rank import get_label_quality_scores

        probs = self.out_of_sample_probs(ctx)
        labels = ctx.train.labels
        # n_jobs=1: cleanlab forks worker processes by default, and a fork of a process running
        # torch threads can deadlock (a CI run hung with a forked pytest child asleep, most likely here)
        issues = np.asarray(find_label_issues(labels, probs, filter_by=self.config.filter_by, n_jobs=1), dtype=bool)
        quality = np.asarray(get_label_quality_scores(labels, probs), dtype=np.float64)
        keep = np.flatnonzero(~issues)
        if len(keep) == 0:
            raise CellError("cleanlab: every training sample was flagged as a label issue")
        model = self._train(ctx, keep, ctx.train_config.epochs, ctx.seed, final=True)
        ctx.log({"n_selected_clean": len(keep), "cv_accuracy_observed": float((probs.argmax(1) == labels).mean())})
        diagnostics = {"selected_clean": ~issues, "clean_score": quality, "n_selected_clean": len(keep),
                       "cv_folds": self.config.folds}
        diagnostics["fold_model_params"] = count_parameters(model)[0]  # each of the `folds` CV models
        return replace(fitted_from(model, ctx), diagnostics=diagnostics)

    def load(self, ctx: FitContext, directory: Path) -> ModelFitted:
        """Load the final classifier onto a fresh base."""
        return fitted_from(load_peft(ctx.new_model(), directory), ctx)
