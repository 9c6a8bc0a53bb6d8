"""Shared test helpers: a tiny random model and a learnable synthetic task (no download)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from bench.data.tokens import Encoded
from bench.models.classifier import classifier_base, classifier_tokenizer
from bench.sdk.method import FitContext
from bench.spec.suite import TrainConfig

TINY = "random:tiny-bert"
#: The causal backbone of the unit tests: a 2-layer Llama with SmolLM2's tokenizer (ids 0-49151).
TINY_LLAMA = "random:tiny-llama"
N_CLASSES = 3


def synthetic(n: int, seed: int = 0) -> Encoded:
    """Sequences whose label is marked by a class token among random filler (learnable)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, N_CLASSES, size=n)
    ids = []
    for label in labels:
        length = int(rng.integers(4, 12))
        filler = rng.integers(2000, 2100, size=length)
        filler[rng.integers(0, length)] = 1000 + label  # the class token
        ids.append(np.concatenate([[101], filler, [102]]).astype(np.int64))
    return Encoded(ids, labels.astype(np.int64), np.arange(n, dtype=np.int64))


def make_ctx(*, n_train: int = 48, epochs: int = 3, seed: int = 0, lr: float = 5e-3,
             log: Any = None, model: str = TINY) -> FitContext:
    """A FitContext on a tiny random backbone (BERT, or ``model``) and the synthetic task (fp32, CPU)."""
    base = classifier_base(model, N_CLASSES, device=torch.device("cpu"), precision="fp32")
    return FitContext(
        task="synthetic", kind="classification", label_names=[f"c{i}" for i in range(N_CLASSES)],
        new_model=lambda: base.new(seed), tokenizer=classifier_tokenizer(model),
        train=synthetic(n_train, seed=1), val=synthetic(16, seed=2),
        train_config=TrainConfig(epochs=epochs, batch_size=8, eval_batch_size=16, lr=lr,
                                 warmup_ratio=0.1, precision="fp32"),
        seed=seed, device=torch.device("cpu"), precision="fp32",
        log=log or (lambda row: None), progress=None,
    )
