"""SmolLM2 as a LoRA classifier on the CPU: fp32 weights vs bf16 weights, both under bf16 autocast.

The harness keeps a causal backbone's weights in fp32 on the CPU (bf16 autocast does the
matmuls) and loads them in bf16 only on CUDA (docs/causal-classifiers.md). This measures what
bf16 weights would gain on the CPU: one epoch of LoRA training (r=8, alpha 16, all seven Llama
projections, ``score`` head in full; batch 16, lr 2e-3, 3 warm-up steps untimed) on the first
``--rows`` TREC training questions, then prediction over them (batch 64). ``--order`` repeats
the two kinds alternately, so that load from other jobs falls on both.

Measured (2-core Intel Xeon with AMX, torch 2.13 CPU, transformers 5.25, one thread,
2026-12-07, load average 2.2-2.5 from other users' jobs)::

    OMP_NUM_THREADS=1 python -m benchmarks.causal_cpu_dtype --order fp32 bf16 fp32 bf16
    # fp32 weights: train 13.17 samples/s, eval 63.5 samples/s, last-epoch loss 1.1314
    # bf16 weights: train 13.92 samples/s, eval 72.1 samples/s, last-epoch loss 1.1358
    # fp32 weights: train 12.40 samples/s, eval 62.2 samples/s, last-epoch loss 1.1314
    # bf16 weights: train 12.56 samples/s, eval 72.3 samples/s, last-epoch loss 1.1358
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from bench.data.loaders import resolve_data_dir
from bench.data.tokens import Encoded
from bench.models.classifier import causal_classifier, classifier_tokenizer
from bench.sdk.loop import predict_logits, train_loop, wrap_lora
from bench.spec.suite import TrainConfig

MODEL = "smollm2"
CPU = torch.device("cpu")


def trec_rows(rows: int) -> Encoded:
    """The first ``rows`` TREC training questions, tokenised for SmolLM2 (at most 64 tokens)."""
    tokenizer = classifier_tokenizer(MODEL)
    path = resolve_data_dir(None) / "trec" / "train.jsonl"
    items = [json.loads(line) for line in path.read_text().splitlines()[:rows]]
    ids = [np.asarray(tokenizer(r["text"], truncation=True, max_length=64)["input_ids"]) for r in items]
    return Encoded(ids, np.array([r["label"] for r in items], dtype=np.int64), np.arange(len(items)))


def measure(weights: str, data: Encoded) -> str:
    """One training epoch and one prediction pass with ``weights`` (``fp32``/``bf16``) under bf16 autocast."""
    pad_id = classifier_tokenizer(MODEL).pad_token_id
    model = wrap_lora(causal_classifier(MODEL, 6, weights).new(0), head=["score"], r=8, alpha=16, dropout=0.1,
                      target_modules=None)
    cfg = TrainConfig(epochs=1, batch_size=16, lr=2e-3, head_lr=5e-3, precision="bf16")
    stats = train_loop(model=model, data=data, cfg=cfg, seed=0, device=CPU, precision="bf16", head=["score"],
                       pad_id=pad_id)
    start = time.perf_counter()
    predict_logits(model, data, batch_size=64, device=CPU, precision="bf16", pad_id=pad_id)
    eval_rate = len(data) / (time.perf_counter() - start)
    return (f"{weights} weights: train {stats.samples_per_s:.2f} samples/s, eval {eval_rate:.1f} samples/s, "
            f"last-epoch loss {stats.epoch_losses[-1]:.4f}")


def main() -> None:
    """Parse the flags and print one line per run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=368, help="TREC training rows (23 batches of 16)")
    parser.add_argument("--order", nargs="+", choices=["fp32", "bf16"], default=["fp32", "bf16"])
    args = parser.parse_args()
    data = trec_rows(args.rows)
    for weights in args.order:
        print(measure(weights, data), flush=True)


if __name__ == "__main__":
    main()
