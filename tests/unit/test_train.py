"""The shared training loop against a reference loop written out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bench.errors import CellError
from bench.models.encoder import base_model
from bench.sdk.dropout import fast_dropout
from bench.sdk.loop import collate, linear_schedule, make_batches, train_loop
from bench.spec.suite import TrainConfig
from tests.helpers import N_CLASSES, TINY, synthetic


def test_make_batches_covers_every_item_once_and_groups_lengths() -> None:
    lengths = np.array([5, 1, 9, 3, 7, 2, 8, 4, 6, 10], dtype=np.int64)
    batches = make_batches(lengths, 3, rng=np.random.default_rng(0), group_by_length=True)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(10))
    # one mega-batch (50*3 > 10): sorted longest first, then batches shuffled
    assert sorted(tuple(sorted(lengths[b].tolist())) for b in batches) == [(1,), (2, 3, 4), (5, 6, 7), (8, 9, 10)]


def test_collate_pads_to_longest_and_masks() -> None:
    data = synthetic(3)
    out = collate(data, np.array([0, 1]), pad_id=0, device=torch.device("cpu"))
    width = max(len(data.input_ids[0]), len(data.input_ids[1]))
    assert out["input_ids"].shape == (2, width)
    assert out["attention_mask"].sum().item() == len(data.input_ids[0]) + len(data.input_ids[1])


def test_linear_schedule_warmup_then_decay() -> None:
    f = linear_schedule(10, 0.2)  # warm-up = ceil(0.2*10) = 2 steps
    assert [round(f(s), 4) for s in range(10)] == [0.5, 1.0, 1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125]


def _reference(model: torch.nn.Module, data, cfg: TrainConfig, seed: int) -> list[float]:
    """Plain PyTorch: same batches, AdamW, warm-up + linear decay by hand, clipping.

    Its dropouts draw the loop's masks (bench.sdk.dropout, tested in test_dropout.py), so that the
    two runs see the same random numbers.
    """
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    model.train()
    epochs = [make_batches(data.lengths, cfg.batch_size, rng=rng, group_by_length=cfg.group_by_length)
              for _ in range(cfg.epochs)]
    total = sum(len(e) for e in epochs)
    warmup = math.ceil(cfg.warmup_ratio * total)
    head = [p for n, p in model.named_parameters() if n.startswith("classifier")]
    body = [p for n, p in model.named_parameters() if not n.startswith("classifier")]
    opt = torch.optim.AdamW([{"params": body, "lr": cfg.lr}, {"params": head, "lr": cfg.head_lr}],
                            weight_decay=cfg.weight_decay)
    peaks, step, losses = [cfg.lr, cfg.head_lr], 0, []
    for batches in epochs:
        total_loss = 0.0
        for index in batches:
            scale = (step + 1) / warmup if step < warmup else (total - step) / (total - warmup)
            for group, peak in zip(opt.param_groups, peaks, strict=True):
                group["lr"] = peak * scale
            rows = [data.input_ids[i] for i in index]
            width = max(len(r) for r in rows)
            ids = torch.zeros(len(rows), width, dtype=torch.long)
            mask = torch.zeros(len(rows), width, dtype=torch.long)
            for j, r in enumerate(rows):
                ids[j, : len(r)], mask[j, : len(r)] = torch.from_numpy(r), 1
            with fast_dropout(model, torch.device("cpu")):
                logits = model(input_ids=ids, attention_mask=mask).logits
            loss = F.cross_entropy(logits, torch.from_numpy(data.labels[index]))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(body + head, cfg.max_grad_norm)
            opt.step()
            opt.zero_grad()
            total_loss += loss.item()
            step += 1
        losses.append(total_loss / len(batches))
    return losses


def test_train_loop_matches_reference_loop() -> None:
    data = synthetic(40)
    cfg = TrainConfig(epochs=2, batch_size=8, lr=1e-3, head_lr=1e-2, warmup_ratio=0.25,
                      max_grad_norm=0.5, precision="fp32")
    base = base_model(TINY, N_CLASSES)
    ours, ref = base.new(0), base.new(0)
    stats = train_loop(model=ours, data=data, cfg=cfg, seed=3, device=torch.device("cpu"), precision="fp32",
                       head=["classifier"], pad_id=0)
    ref_losses = _reference(ref, data, cfg, seed=3)
    assert stats.epoch_losses == pytest.approx(ref_losses, rel=1e-5)
    for (name, a), (_, b) in zip(ours.named_parameters(), ref.named_parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6), name
    assert stats.samples == 80 and stats.steps == 10
    assert stats.tokens == 2 * int(data.lengths.sum())
    assert stats.timed_samples == 80 - 3 * 8  # the first 3 steps are warm-up, untimed


def test_nan_loss_is_a_cell_error() -> None:
    data = synthetic(16)
    cfg = TrainConfig(epochs=1, batch_size=8, precision="fp32")
    model = base_model(TINY, N_CLASSES).new(0)

    def nan_loss(model, inputs, labels):
        return model(**inputs).logits.sum() * float("nan")

    with pytest.raises(CellError, match="non-finite training loss"):
        train_loop(model=model, data=data, cfg=cfg, seed=0, device=torch.device("cpu"), precision="fp32",
                   head=["classifier"], pad_id=0, loss_fn=nan_loss)


def test_wrap_lora_extra_modules_to_save_train_beside_the_head() -> None:
    from bench.sdk.loop import wrap_lora

    def trainable(model: torch.nn.Module) -> set[str]:
        return {n.split(".modules_to_save.")[0] for n, p in model.named_parameters()
                if p.requires_grad and "modules_to_save" in n}

    plain = wrap_lora(base_model(TINY, N_CLASSES).new(0), head=["classifier"], r=2, alpha=4, dropout=0.0,
                      target_modules=None)
    assert {name.rsplit(".", 1)[-1] for name in trainable(plain)} == {"classifier"}
    # peft_options: {modules_to_save: [pooler]} also trains BERT's pooler (all-MiniLM-L6-v2 never trained it)
    pooled = wrap_lora(base_model(TINY, N_CLASSES).new(0), head=["classifier"], r=2, alpha=4, dropout=0.0,
                       target_modules=None, modules_to_save=["pooler"])
    assert {name.rsplit(".", 1)[-1] for name in trainable(pooled)} == {"classifier", "pooler"}
