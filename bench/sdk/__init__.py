"""What a method author imports: ``from bench.sdk import FitContext, register_method, train, ...``.

The contract (docs/methods.md): a method is a class registered with :func:`register_method`
whose ``fit(ctx: FitContext) -> Fitted`` trains on ``ctx.train`` (the observed labels) and
whose ``load(ctx, directory) -> Fitted`` rebuilds what ``Fitted.save`` wrote. Everything else
here is a helper: the shared training loop (:func:`train`), peft wrapping, fitted-model
wrappers, per-sample losses for noisy-label methods. Names are imported lazily, so importing
``bench.sdk`` (or its registry, as ``bench ls`` does) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bench.data.sft import SftData, target_labels
    from bench.data.tokens import Encoded
    from bench.errors import BenchError, CellError
    from bench.models.causal import causal_base, load_causal_tokenizer
    from bench.models.encoder import head_names
    from bench.sdk.adapters import adapter_parameters, selected, train_adapters
    from bench.sdk.causal import CausalFitted, fit_causal_lora, load_causal, sft_data, train_causal, wrap_causal_lora
    from bench.sdk.fitted import (
        ModelFitted,
        fitted_from,
        load_converted,
        load_peft,
        load_trainable,
        save_initial,
        val_curve_hook,
    )
    from bench.sdk.loop import (
        LossFn,
        TrainStats,
        collate,
        count_parameters,
        cross_entropy_loss,
        new_lora_classifier,
        param_groups,
        predict_logits,
        softmax,
        train,
        train_loop,
        wrap_lora,
    )
    from bench.sdk.method import Diagnostics, FitContext, Fitted, Method, VariantPredictor
    from bench.sdk.noisy import (
        gmm_clean_probability,
        masked_mean,
        per_sample_loss,
        reverse_cross_entropy,
        smallest_fraction,
    )
    from bench.sdk.registry import register_method
    from bench.sdk.targets import default_targets, lora_targets

_WHERE = {
    "FitContext": "bench.sdk.method",
    "Fitted": "bench.sdk.method",
    "Method": "bench.sdk.method",
    "VariantPredictor": "bench.sdk.method",
    "Diagnostics": "bench.sdk.method",
    "register_method": "bench.sdk.registry",
    "default_targets": "bench.sdk.targets",
    "lora_targets": "bench.sdk.targets",
    "LossFn": "bench.sdk.loop",
    "TrainStats": "bench.sdk.loop",
    "collate": "bench.sdk.loop",
    "count_parameters": "bench.sdk.loop",
    "cross_entropy_loss": "bench.sdk.loop",
    "new_lora_classifier": "bench.sdk.loop",
    "param_groups": "bench.sdk.loop",
    "predict_logits": "bench.sdk.loop",
    "softmax": "bench.sdk.loop",
    "train": "bench.sdk.loop",
    "train_loop": "bench.sdk.loop",
    "wrap_lora": "bench.sdk.loop",
    "ModelFitted": "bench.sdk.fitted",
    "fitted_from": "bench.sdk.fitted",
    "load_converted": "bench.sdk.fitted",
    "load_peft": "bench.sdk.fitted",
    "load_trainable": "bench.sdk.fitted",
    "save_initial": "bench.sdk.fitted",
    "val_curve_hook": "bench.sdk.fitted",
    "CausalFitted": "bench.sdk.causal",
    "fit_causal_lora": "bench.sdk.causal",
    "load_causal": "bench.sdk.causal",
    "sft_data": "bench.sdk.causal",
    "train_causal": "bench.sdk.causal",
    "wrap_causal_lora": "bench.sdk.causal",
    "adapter_parameters": "bench.sdk.adapters",
    "selected": "bench.sdk.adapters",
    "train_adapters": "bench.sdk.adapters",
    "gmm_clean_probability": "bench.sdk.noisy",
    "masked_mean": "bench.sdk.noisy",
    "per_sample_loss": "bench.sdk.noisy",
    "reverse_cross_entropy": "bench.sdk.noisy",
    "smallest_fraction": "bench.sdk.noisy",
    "Encoded": "bench.data.tokens",
    "SftData": "bench.data.sft",
    "target_labels": "bench.data.sft",
    "head_names": "bench.models.encoder",
    "causal_base": "bench.models.causal",
    "load_causal_tokenizer": "bench.models.causal",
    "BenchError": "bench.errors",
    "CellError": "bench.errors",
}

__all__ = [
    "BenchError",
    "CausalFitted",
    "CellError",
    "Diagnostics",
    "Encoded",
    "FitContext",
    "Fitted",
    "LossFn",
    "Method",
    "ModelFitted",
    "SftData",
    "TrainStats",
    "VariantPredictor",
    "adapter_parameters",
    "causal_base",
    "collate",
    "count_parameters",
    "cross_entropy_loss",
    "default_targets",
    "fit_causal_lora",
    "fitted_from",
    "gmm_clean_probability",
    "head_names",
    "load_causal",
    "load_causal_tokenizer",
    "load_converted",
    "load_peft",
    "load_trainable",
    "lora_targets",
    "masked_mean",
    "new_lora_classifier",
    "param_groups",
    "per_sample_loss",
    "predict_logits",
    "register_method",
    "reverse_cross_entropy",
    "save_initial",
    "selected",
    "sft_data",
    "smallest_fraction",
    "softmax",
    "target_labels",
    "train",
    "train_adapters",
    "train_causal",
    "train_loop",
    "val_curve_hook",
    "wrap_causal_lora",
    "wrap_lora",
]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'bench.sdk' has no attribute {name!r}")
