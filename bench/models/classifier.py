"""Classification backbones of either family: encoders (``bench.models.encoder``) and causal LMs.

A classification task's ``model:`` is looked up here: the embedded MiniLM and the ``random:``
BERT shapes are encoders; the embedded SmolLM2 and the ``random:`` Llama shapes are causal; an
HF folder or name is causal when its ``config.json`` names a decoder-only architecture
(:func:`is_decoder_config`). Encoders take the encoder path unchanged. A causal LM becomes
transformers' ``*ForSequenceClassification`` (e.g. ``LlamaForSequenceClassification``): a linear
``score`` head on the hidden state of the last token that is not the pad token (docs/causal-classifiers.md).
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol, cast

import torch
from torch import nn

from bench.errors import BenchError, did_you_mean
from bench.models import causal, encoder

ENCODER, CAUSAL = "encoder", "causal"


class Base(Protocol):
    """A loaded base model: :meth:`new` gives each cell a fresh copy with a head seeded by ``seed``."""

    def new(self, seed: int) -> nn.Module:
        """A fresh classifier: pretrained body, head initialised from ``seed``."""


def known_names() -> list[str]:
    """Every model name a classification task accepts besides HF names and folders."""
    return [*encoder.model_names(), *causal.causal_names()]


def is_decoder_config(config: dict[str, Any]) -> bool:
    """Whether an HF ``config.json`` describes a decoder-only LM.

    Its ``model_type`` has a causal-LM class in transformers and no masked-LM class (BERT and
    RoBERTa have both and stay encoders; Llama, Mistral, Qwen, Gemma, GPT-2 have only the first).
    """
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    kind = str(config.get("model_type", ""))
    return kind in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and kind not in MODEL_FOR_MASKED_LM_MAPPING_NAMES


def _read_config(path: Path) -> dict[str, Any]:
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise BenchError(f"model config '{path}' cannot be read: {type(err).__name__}") from None
    if not isinstance(config, dict):
        raise BenchError(f"model config '{path}' is not a JSON object")
    return config


def _hf_config(name: str) -> dict[str, Any] | None:
    """The ``config.json`` of an HF folder or of a name in the local HF cache; None where there is none."""
    folder = Path(name) if name else None
    if folder is not None and folder.is_dir():
        encoder.check_model_folder(folder)
        return _read_config(folder / "config.json")
    from huggingface_hub import try_to_load_from_cache

    try:
        cached = try_to_load_from_cache(name, "config.json")
    except ValueError:  # not a valid repo id
        return None
    if isinstance(cached, str):
        return _read_config(Path(cached))
    if os.environ.get(encoder.HUB_ENV) == "1":  # downloads allowed: fetch the config only
        from transformers import AutoConfig

        return dict(encoder.hf_load(AutoConfig.from_pretrained, name, "hub", known=known_names()).to_dict())
    return None


def family(name: str) -> str:
    """``encoder`` or ``causal`` for a classification model name (without loading any weights).

    Raises:
        BenchError: an unknown ``random:`` preset, or a name that is no folder, not known here
            and not in the local HF cache (one line; as :func:`bench.models.encoder.check_model`).
    """
    if encoder.is_encoder(name):
        return ENCODER
    key = causal.CAUSAL_ALIASES.get(name.lower(), name)  # as bench.models.causal.resolve_causal reads it
    if key in causal.EMBEDDED_CAUSAL:
        return CAUSAL
    if key.startswith("random:"):
        preset = key.split(":", 1)[1]
        if preset in causal.RANDOM_CAUSAL:
            return CAUSAL
        presets = [*encoder.RANDOM_PRESETS, *causal.RANDOM_CAUSAL]
        raise BenchError(f"unknown random preset '{preset}'" + did_you_mean(preset, presets))
    config = _hf_config(name)
    if config is None:
        encoder.check_hub_name(name, known=known_names())  # raises: not cached and no downloads
        raise BenchError(f"model '{name}': no config.json found")
    return CAUSAL if is_decoder_config(config) else ENCODER


def check_classifier(name: str) -> None:
    """Check a classification model name without loading weights: family, package, preset, folder, cache.

    Raises:
        BenchError: one line naming the model and what is known.
    """
    if family(name) == CAUSAL:
        causal.check_causal_model(name)
    else:
        encoder.check_model(name)


def classifier_tokenizer(name: str) -> Any:
    """The model's own tokenizer (random shapes borrow their family's embedded one); pad = eos for causal LMs."""
    return causal.load_causal_tokenizer(name) if family(name) == CAUSAL else encoder.load_tokenizer(name)


def weights_dtype(device: torch.device, precision: str) -> str:
    """``bf16`` weights for a causal backbone on CUDA under bf16 precision, else ``fp32``.

    On the CPU the weights stay fp32 under bf16 autocast (docs/causal-classifiers.md).
    """
    return "bf16" if device.type == "cuda" and precision == "bf16" else "fp32"


def classifier_base(name: str, n_classes: int, *, device: torch.device, precision: str) -> Base:
    """The base of a classification cell: an encoder's :class:`~bench.models.encoder.BaseModel`, or a causal LM's."""
    if family(name) == CAUSAL:
        return causal_classifier(name, n_classes, weights_dtype(device, precision))
    return encoder.base_model(name, n_classes)


@dataclass
class CausalClassifier:
    """A causal LM loaded once as a sequence classifier; every cell gets a deep copy with its own head."""

    name: str
    template: nn.Module

    def new(self, seed: int) -> nn.Module:
        """A copy of the template (body in its dtype) whose fp32 ``score`` head is drawn from ``seed``.

        The head is drawn as transformers initialises it (normal, std ``initializer_range``) and
        kept in fp32 under bf16 weights, so that AdamW updates it in full precision.
        """
        model = copy.deepcopy(self.template)
        head = cast(nn.Linear, model.get_submodule("score").float())
        torch.manual_seed(seed)
        with torch.no_grad():
            nn.init.normal_(head.weight, std=float(getattr(model.config, "initializer_range", 0.02)))
            if head.bias is not None:
                nn.init.zeros_(head.bias)
        return model


@lru_cache(maxsize=2)
def causal_classifier(name: str, n_classes: int, weights: str) -> CausalClassifier:
    """Load causal LM ``name`` once per process, class count and weight dtype (``bf16``/``fp32``).

    transformers' ``AutoModelForSequenceClassification`` keeps the pretrained body and adds a
    ``score`` head; ``pad_token_id`` is the tokenizer's (its eos where it has no pad token), which
    the head needs to find each row's last real token under the harness's right padding.
    """
    from transformers import AutoModelForSequenceClassification

    dtype = causal.dtype_for(weights)
    kind, location = causal.resolve_causal(name)
    tokenizer = causal.load_causal_tokenizer(name)
    if kind == "random":
        config = causal.random_config(str(location), tokenizer, num_labels=n_classes)
        torch.manual_seed(causal.RANDOM_BASE_SEED)
        model = AutoModelForSequenceClassification.from_config(config).to(dtype)  # type: ignore[no-untyped-call]
    else:
        if kind == "embedded":  # the converted HF folder (bench.models.causal), never the hub
            kind, location = "local", causal.embedded_folder(str(location))
        model = causal.hf_load_causal(AutoModelForSequenceClassification.from_pretrained, location, kind,
                                      dtype=dtype, num_labels=n_classes)
    model.config.pad_token_id = tokenizer.pad_token_id
    if not isinstance(model.get_submodule("score"), nn.Linear):
        raise BenchError(f"{name}: {type(model).__name__} has no linear 'score' head")
    return CausalClassifier(name, model.eval())
