"""Causal models: the atomic GGUF -> HF folder conversion (on a tiny model), name resolution, bases."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from bench.errors import BenchError
from bench.models import causal as causal_models
from bench.models.causal import atomic_folder, causal_base, convert_gguf, resolve_causal


def test_atomic_folder_writes_once_and_leaves_nothing_on_a_crash(tmp_path: Path) -> None:
    target = tmp_path / "models" / "m"

    def crash(folder: Path) -> None:
        (folder / "half.safetensors").write_bytes(b"x" * 10)
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        atomic_folder(target, crash)
    assert not target.exists() and list((tmp_path / "models").iterdir()) == []  # no half folder, no temp left

    calls: list[Path] = []
    atomic_folder(target, lambda f: (calls.append(f), (f / "ok").write_text("1")))
    atomic_folder(target, lambda f: calls.append(f))  # already there: not rewritten
    assert len(calls) == 1 and (target / "ok").read_text() == "1"


class _Quantizer:
    """Stands in for transformers' GGUF quantizer: save_pretrained refuses while it is attached."""

    def remove_quantization_config(self, model: Any) -> None:
        del model.hf_quantizer


def _tiny_llama() -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=16, hidden_size=8, intermediate_size=16, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1)
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.hf_quantizer = _Quantizer()
    original = model.save_pretrained

    def guarded(*args: Any, **kwargs: Any) -> Any:
        if hasattr(model, "hf_quantizer"):
            raise ValueError("model with a quantizer cannot be saved")
        return original(*args, **kwargs)

    model.save_pretrained = guarded
    return model


class _Tokenizer:
    def save_pretrained(self, folder: str) -> None:
        (Path(folder) / "tokenizer.json").write_text("{}")


def test_convert_gguf_drops_the_quantizer_and_saves_a_loadable_folder(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import transformers

    model = _tiny_llama()
    monkeypatch.setattr(causal_models, "_load_gguf", lambda folder, file, dtype: model)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda *a, **k: _Tokenizer())
    out = convert_gguf(tmp_path, "m.gguf", tmp_path / "cache" / "m")
    assert {p.name for p in out.iterdir()} >= {"config.json", "model.safetensors", "tokenizer.json"}
    again = transformers.AutoModelForCausalLM.from_pretrained(str(out))
    assert again.dtype == torch.bfloat16
    assert torch.equal(again.model.embed_tokens.weight, model.model.embed_tokens.weight)


def test_convert_gguf_crash_leaves_no_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import transformers

    def broken(folder: Path, file: str, dtype: torch.dtype) -> Any:
        raise MemoryError("out of memory while dequantizing")

    monkeypatch.setattr(causal_models, "_load_gguf", broken)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda *a, **k: _Tokenizer())
    with pytest.raises(MemoryError):
        convert_gguf(tmp_path, "m.gguf", tmp_path / "cache" / "m")
    assert list((tmp_path / "cache").iterdir()) == []


def test_resolve_causal_names(tmp_path: Path) -> None:
    assert resolve_causal("smollm2") == ("embedded", "smollm2")
    assert resolve_causal("HuggingFaceTB/SmolLM2-135M-Instruct") == ("embedded", "smollm2")
    assert resolve_causal("random:tiny-llama") == ("random", "tiny-llama")
    assert resolve_causal(str(tmp_path)) == ("local", tmp_path)
    assert resolve_causal("org/some-model") == ("hub", "org/some-model")
    with pytest.raises(BenchError, match="did you mean 'tiny-llama'"):
        resolve_causal("random:tiny-lama")


def test_random_base_copies_are_fresh_and_identical() -> None:
    base = causal_base("random:tiny-llama", "fp32")
    a, b = base.new(), base.new()
    assert a is not b and a.dtype == torch.float32
    for (name, p), (_, q) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        assert torch.equal(p, q), name
    with torch.no_grad():
        next(a.parameters()).add_(1.0)
    assert not torch.equal(next(a.parameters()), next(base.new().parameters()))
