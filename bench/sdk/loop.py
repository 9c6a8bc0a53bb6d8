"""Shared training helpers: peft wrapping, batching, the training loop, batched prediction.

A plain method is ``wrap_lora`` + ``train_loop`` + a :class:`bench.sdk.fitted.PeftFitted`; a
method with its own objective passes a ``loss_fn`` hook instead of subclassing anything.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from torch import nn

from bench.data.tokens import Encoded
from bench.errors import CellError
from bench.sdk.casts import frozen_casts
from bench.sdk.dropout import fast_dropout
from bench.spec.suite import TrainConfig

LossFn = Callable[..., torch.Tensor]
"""``loss_fn(model, inputs, labels) -> scalar loss``; ``inputs`` has ``input_ids`` etc.

With ``train_loop(..., with_index=True)`` it is called as ``loss_fn(model, inputs, labels, index)``,
``index`` being the batch's positions in the training data (for per-sample selection or weights).
"""

#: The runner collects the stats of every training loop a method runs (some run several).
STATS_SINK: ContextVar[list[TrainStats] | None] = ContextVar("peftbench_train_stats", default=None)

#: Steps at the start of training left out of throughput (allocator, kernel selection).
WARMUP_STEPS_UNTIMED = 3


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` becomes ``bf16`` where the hardware computes in bf16, else ``fp32``."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return "fp32"
    return "bf16" if ("avx512_bf16" in flags or "amx_bf16" in flags) else "fp32"


def autocast(device: torch.device, precision: str) -> Any:
    """bf16 autocast context for ``precision == "bf16"``, else a no-op."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


def make_batches(lengths: NDArray[np.int64], batch_size: int, *, rng: np.random.Generator | None,
                 group_by_length: bool) -> list[NDArray[np.int64]]:
    """Index batches: shuffled (with ``rng``), grouped by length within mega-batches.

    Like transformers' ``group_by_length``: shuffle, cut into mega-batches, sort each by length
    (longest first), split into batches, shuffle the batches. Our mega-batches always hold 50
    batches; transformers uses ``min(n // (4 * batch_size), 50)``, so on small sets (under
    ~6,400 rows at batch 32) ours group tighter and pad less (measured: 12 % fewer padded
    tokens on 1,024 TREC rows), at the price of less randomness in batch composition.
    """
    order = rng.permutation(len(lengths)) if rng is not None else np.arange(len(lengths))
    if group_by_length:
        mega = batch_size * 50
        chunks = [order[i : i + mega] for i in range(0, len(order), mega)]
        order = np.concatenate([c[np.argsort(-lengths[c], kind="stable")] for c in chunks])
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    if group_by_length and rng is not None:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


def collate(data: Encoded, index: NDArray[np.int64], pad_id: int,
            device: torch.device) -> dict[str, torch.Tensor]:
    """Pad the items at ``index`` to the longest of them (dynamic padding)."""
    rows = [data.input_ids[i] for i in index]
    width = max(len(r) for r in rows)
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for j, row in enumerate(rows):
        ids[j, : len(row)] = row
        mask[j, : len(row)] = 1
    return {"input_ids": torch.from_numpy(ids).to(device), "attention_mask": torch.from_numpy(mask).to(device)}


def cross_entropy_loss(model: nn.Module, inputs: dict[str, torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
    """Default loss: mean cross-entropy of the model's logits."""
    return F.cross_entropy(model(**inputs).logits.float(), labels)


def param_groups(model: nn.Module, cfg: TrainConfig, head: Sequence[str]) -> list[dict[str, Any]]:
    """AdamW groups: trainable head parameters at ``head_lr``, the rest at ``lr``."""
    head_params: list[nn.Parameter] = []
    body_params: list[nn.Parameter] = []
    for name, param in model.named_parameters():
        if param.requires_grad:
            is_head = any(f"{h}." in name or name.startswith(h) for h in head)
            (head_params if is_head else body_params).append(param)
    groups = [{"params": body_params, "lr": cfg.lr}]
    if head_params:
        groups.append({"params": head_params, "lr": cfg.head_lr if cfg.head_lr is not None else cfg.lr})
    return [g for g in groups if g["params"]]


def linear_schedule(total_steps: int, warmup_ratio: float) -> Callable[[int], float]:
    """Linear warm-up to the peak learning rate, then linear decay to 0."""
    warmup = int(math.ceil(warmup_ratio * total_steps))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return factor


@dataclass
class TrainStats:
    """What the loop measured: timed samples and unpadded tokens exclude warm-up steps."""

    steps: int = 0
    samples: int = 0
    tokens: int = 0
    timed_samples: int = 0
    timed_tokens: int = 0
    timed_s: float = 0.0
    wall_s: float = 0.0
    epoch_losses: list[float] = field(default_factory=list)

    @property
    def samples_per_s(self) -> float:
        """Training samples per second after warm-up."""
        return self.timed_samples / self.timed_s if self.timed_s > 0 else float("nan")

    @property
    def tokens_per_s(self) -> float:
        """Unpadded training tokens per second after warm-up."""
        return self.timed_tokens / self.timed_s if self.timed_s > 0 else float("nan")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _check_finite(total: torch.Tensor, epoch: int, step: int) -> None:
    if not math.isfinite(float(total)):
        raise CellError(f"non-finite training loss (NaN/inf) in epoch {epoch}, by step {step}")


EpochHook = Callable[[int, float], None]
"""``on_epoch_end(epoch, mean_train_loss)``: evaluate, log curves, adjust state."""


def _optimizer(model: nn.Module, cfg: TrainConfig, head: Sequence[str], total: int,
               params: list[dict[str, Any]] | None) -> tuple[Any, Any, list[nn.Parameter]]:
    """AdamW over ``params`` (default :func:`param_groups`), its schedule, and the trained tensors."""
    groups = params if params is not None else param_groups(model, cfg, head)
    optimizer = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay, foreach=True)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, linear_schedule(total, cfg.warmup_ratio))
    return optimizer, scheduler, [p for g in groups for p in g["params"]]


@dataclass
class _Step:
    """One optimiser step's fixed inputs (what :func:`train_loop` passes to every step)."""

    model: nn.Module
    data: Encoded
    labels: torch.Tensor
    cfg: TrainConfig
    device: torch.device
    precision: str
    pad_id: int
    loss_fn: LossFn
    with_index: bool
    optimizer: Any
    scheduler: Any
    trainable: list[nn.Parameter]
    after_step: Callable[[], None] | None = None

    def __call__(self, index: NDArray[np.int64]) -> torch.Tensor:
        """Forward, backward, clip, step; returns the detached loss."""
        inputs = collate(self.data, index, self.pad_id, self.device)
        with autocast(self.device, self.precision):
            labels = self.labels[index].to(self.device)
            loss = (self.loss_fn(self.model, inputs, labels, index) if self.with_index
                    else self.loss_fn(self.model, inputs, labels))
        loss.backward()  # type: ignore[no-untyped-call]
        if self.cfg.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.trainable, self.cfg.max_grad_norm)
        self.optimizer.step()
        if self.after_step is not None:
            self.after_step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss.detach().float()


def _count(stats: TrainStats, index: NDArray[np.int64], lengths: NDArray[np.int64]) -> None:
    stats.steps += 1
    n_tokens = int(lengths[index].sum())
    stats.samples, stats.tokens = stats.samples + len(index), stats.tokens + n_tokens
    if stats.steps > WARMUP_STEPS_UNTIMED:
        stats.timed_samples += len(index)
        stats.timed_tokens += n_tokens


def train_loop(*, model: nn.Module, data: Encoded, cfg: TrainConfig, seed: int, device: torch.device,
               precision: str, head: Sequence[str], pad_id: int, loss_fn: LossFn = cross_entropy_loss,
               on_epoch_end: EpochHook | None = None, progress: Any = None,
               params: list[dict[str, Any]] | None = None, with_index: bool = False,
               after_step: Callable[[], None] | None = None) -> TrainStats:
    """Train ``model`` on ``data`` with AdamW, warm-up + linear decay and gradient clipping.

    The keywords are those of :func:`train` (which takes most of them from a FitContext), plus
    ``cfg`` (hyperparameters), ``seed`` (batch order and torch RNG), ``device``, ``precision``
    (``bf16`` autocast or ``fp32``), ``pad_id`` and ``progress`` (a tqdm-like factory or None).

    Raises:
        CellError: on a non-finite loss.
    """
    model.to(device).train()
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    lengths = data.lengths
    epochs = [make_batches(lengths, cfg.batch_size, rng=rng, group_by_length=cfg.group_by_length)
              for _ in range(cfg.epochs)]
    total = sum(len(e) for e in epochs)
    optimizer, scheduler, trainable = _optimizer(model, cfg, head, total, params)
    step = _Step(model, data, torch.from_numpy(data.labels), cfg, device, precision, pad_id, loss_fn, with_index,
                 optimizer, scheduler, trainable, after_step)
    stats, start = TrainStats(), time.perf_counter()
    timer = start
    bar = progress(total=total, desc="train", unit="step", leave=False) if progress else None
    for epoch, batches in enumerate(epochs, start=1):
        running = torch.zeros((), device=device)
        # not around on_epoch_end: a hook may rewrite weights, or train with nn.Dropout's own masks
        with frozen_casts(model, device, precision), fast_dropout(model, device):
            for index in batches:
                if stats.steps == WARMUP_STEPS_UNTIMED:
                    _sync(device)
                    timer = time.perf_counter()
                running += step(index)
                _count(stats, index, lengths)
                if stats.steps % 20 == 0:
                    _check_finite(running, epoch, stats.steps)
                if bar is not None:
                    bar.update(1)
        _check_finite(running, epoch, stats.steps)
        if stats.steps > WARMUP_STEPS_UNTIMED:
            _sync(device)
            stats.timed_s = time.perf_counter() - timer
        stats.epoch_losses.append(float(running) / max(1, len(batches)))
        if on_epoch_end is not None:
            on_epoch_end(epoch, stats.epoch_losses[-1])
            model.train()
            if stats.steps > WARMUP_STEPS_UNTIMED:  # evaluation is not training time
                _sync(device)
                timer = time.perf_counter() - stats.timed_s
    if bar is not None:
        bar.close()
    stats.wall_s = time.perf_counter() - start
    sink = STATS_SINK.get()
    if sink is not None:
        sink.append(stats)
    return stats


@torch.inference_mode()
def predict_logits(model: nn.Module, data: Encoded, *, batch_size: int, device: torch.device,
                   precision: str, pad_id: int) -> NDArray[np.float32]:
    """Logits ``[n, K]`` in data order (batches sorted by length, then restored).

    Under ``inference_mode`` rather than ``no_grad`` (no version counters or view tracking: the
    same kernels, so the same logits; measured 1-2 % faster on CPU, docs/speed.md).
    """
    model.to(device).eval()
    order = np.argsort(-data.lengths, kind="stable")
    out: list[NDArray[np.float32]] = []
    for i in range(0, len(order), batch_size):
        inputs = collate(data, order[i : i + batch_size], pad_id, device)
        with autocast(device, precision):
            logits = model(**inputs).logits
        out.append(logits.float().cpu().numpy())
    logits_sorted = np.concatenate(out) if out else np.zeros((0, 0), np.float32)
    result = np.empty_like(logits_sorted)
    result[order] = logits_sorted
    return result


def softmax(logits: NDArray[np.floating[Any]]) -> NDArray[np.float64]:
    """Row-wise softmax in float64."""
    z = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return np.asarray(e / e.sum(axis=1, keepdims=True))


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())


def wrap_lora(model: nn.Module, *, head: Sequence[str], r: int, alpha: float, dropout: float,
              target_modules: Sequence[str] | None, **extra: Any) -> nn.Module:
    """Wrap ``model`` with a peft LoRA adapter; the classification head trains in full.

    ``target_modules=None`` picks by architecture (:func:`bench.sdk.targets.default_targets`):
    peft's default for encoders (``query``/``value`` for BERT), the attention and MLP
    projections for Llama-style decoders. ``extra`` goes to ``peft.LoraConfig``
    (``use_dora``, ``init_lora_weights``, ``use_rslora``, ...).
    """
    from peft import LoraConfig, TaskType, get_peft_model

    from bench.sdk.targets import lora_targets

    config = LoraConfig(
        task_type=TaskType.SEQ_CLS, r=r,
        lora_alpha=int(alpha) if float(alpha).is_integer() else alpha,  # type: ignore[arg-type]
        lora_dropout=dropout, target_modules=lora_targets(model, target_modules),
        modules_to_save=[*head, *extra.pop("modules_to_save", [])], **extra,
    )
    return get_peft_model(model, config)


def new_lora_classifier(ctx: Any, config: Any, **extra: Any) -> tuple[nn.Module, list[str]]:
    """A fresh base from ``ctx.new_model()`` wrapped with LoRA; returns the model and its head names.

    ``config`` supplies ``r``, ``alpha``, ``dropout`` and ``target_modules``; ``extra`` goes to peft.
    """
    from bench.models.encoder import head_names

    base = ctx.new_model()
    head = head_names(base)
    model = wrap_lora(base, head=head, r=config.r, alpha=config.alpha, dropout=config.dropout,
                      target_modules=config.target_modules, **extra)
    return model, head


def train(model: nn.Module, ctx: Any, *, head: Sequence[str], data: Encoded | None = None,
          epochs: int | None = None, seed: int | None = None, loss_fn: LossFn = cross_entropy_loss,
          on_epoch_end: EpochHook | None = None, params: list[dict[str, Any]] | None = None,
          with_index: bool = False, after_step: Callable[[], None] | None = None) -> TrainStats:
    """:func:`train_loop` with the device, precision, pad id, progress and hyperparameters of ``ctx``.

    Args:
        model: the model to train in place.
        ctx: the method's :class:`~bench.sdk.method.FitContext`.
        head: names of the classification-head modules (trained at ``head_lr``); ``()`` for none.
        data: what to train on (default ``ctx.train``, the observed labels).
        epochs: replaces ``ctx.train_config.epochs`` (a method's own stage lengths).
        seed: replaces ``ctx.seed`` (e.g. one seed per cross-validation fold).
        loss_fn: the loss hook (default: cross-entropy of the model's logits).
        on_epoch_end: called after each epoch with (epoch, mean training loss).
        params: optimizer parameter groups (default: head at ``head_lr``, the rest at ``lr``).
        with_index: pass the batch's positions in ``data`` to ``loss_fn`` as a fourth argument.
        after_step: called after every optimizer step (e.g. to put frozen elements back).
    """
    cfg = ctx.train_config if epochs is None else replace(ctx.train_config, epochs=epochs)
    return train_loop(model=model, data=ctx.train if data is None else data, cfg=cfg,
                      seed=ctx.seed if seed is None else seed, device=ctx.device, precision=ctx.precision,
                      head=head, pad_id=ctx.tokenizer.pad_token_id, loss_fn=loss_fn, on_epoch_end=on_epoch_end,
                      progress=ctx.progress, with_index=with_index, params=params, after_step=after_step)
