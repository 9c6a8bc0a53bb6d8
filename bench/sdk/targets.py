"""Which modules a LoRA adapter wraps when a method leaves ``target_modules`` unset.

Encoder classifiers keep peft's default for their architecture (``query``/``value`` on BERT,
the committed MiniLM baselines' setting). Llama-style decoders (Llama, Mistral, Qwen2/3,
Gemma, SmolLM2: every model whose layers hold the seven projections below) get all four
attention projections and the three MLP projections, the usual choice for LoRA on decoders
(QLoRA, Dettmers et al. 2023, arXiv 2305.14314, §4: LoRA on every linear layer matches full
fine-tuning where query/value alone does not). peft's own default for Llama is ``q_proj``/``v_proj``.
The generation path (``bench.sdk.causal``) keeps peft's default: its stored results used it.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

#: Attention and MLP projections of a Llama-style decoder layer.
LLAMA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def default_targets(model: nn.Module) -> list[str] | None:
    """:data:`LLAMA_TARGETS` where ``model`` has all of them as ``nn.Linear`` layers, else None (peft's default)."""
    names = {name.rsplit(".", 1)[-1] for name, module in model.named_modules() if isinstance(module, nn.Linear)}
    return list(LLAMA_TARGETS) if set(LLAMA_TARGETS) <= names else None


def lora_targets(model: nn.Module, configured: Sequence[str] | None) -> list[str] | None:
    """The ``target_modules`` to give peft: the method's own list, else :func:`default_targets`."""
    return list(configured) if configured else default_targets(model)


def targets_used(model: object) -> list[str] | None:
    """Sorted module names the peft adapters of ``model`` wrap (all adapters together); None without peft."""
    configs = getattr(model, "peft_config", None)
    if not isinstance(configs, dict):
        return None
    used: set[str] = set()
    for config in configs.values():
        targets = getattr(config, "target_modules", None)
        if isinstance(targets, str):  # a regular expression: recorded as written
            used.add(targets)
        elif targets:
            used.update(str(t) for t in targets)
    return sorted(used)
