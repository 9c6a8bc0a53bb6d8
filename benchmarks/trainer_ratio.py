"""Training samples/s of the harness loop vs transformers' ``Trainer``, same LoRA and data.

Same peft LoRA (r=8, alpha=16, dropout 0.1, ``classifier`` in full), TREC rows and settings (AdamW,
lr 5e-3, TrainConfig warm-up/clipping, batch 32, 1 epoch, length grouping, dynamic padding unless
``--fixed-length``): ``bench.sdk.loop.train_loop`` vs ``Trainer`` (bf16 if the harness resolves to it,
``DataCollatorWithPadding``, ``group_by_length``, no logging/eval/saving). Both skip 3 warm-up
steps; Trainer's figure is a callback's end-of-step-3 to end-of-last-step span (batch loading
counts on both sides); its own ``train_samples_per_second`` (warm-up included) is shown too.
One untimed harness run, then ``--repeats`` harness/Trainer pairs; ratio of medians. Both sides
are also timed in process CPU seconds over the same steps (``cpu_ratio``): on a machine shared
with other jobs a preempted step inflates wall time but not CPU time (with ``--threads 1``;
more threads add OpenMP's spin-waiting to both sides).

Measured (2-core shared CPU with avx512_bf16, torch 2.13 CPU, transformers 5.23, peft 0.21)::

    python -m benchmarks.trainer_ratio --rows 1024 --repeats 2
    # bf16, dynamic: harness 179.6, Trainer 156.6 (own metric 150.9) samples/s: 1.15x (an earlier
    # run: 211.2 vs 200.0, 1.06x); token slots incl. padding 14336 vs 16064 (real tokens 13709)
    python -m benchmarks.trainer_ratio --fixed-length --precision fp32 --rows 512
    # fp32, fixed 64: harness 27.8, Trainer 26.7 (own metric 26.7) samples/s: 1.04x

With the frozen-weight bf16 casts reused (bench/sdk/casts.py), one thread, transformers 5.25
(2026-12-04, load average 1.5-1.9; docs/speed.md)::

    python -m benchmarks.trainer_ratio --rows 1024 --repeats 2 --threads 1
    # bf16, dynamic: harness 178.8, Trainer 163.1 samples/s: 1.10x (per CPU second 1.10x; before: 1.08x)
    python -m benchmarks.trainer_ratio --fixed-length --precision fp32 --rows 512 --repeats 2 --threads 1
    # fp32, fixed 64: harness 24.0, Trainer 24.1 samples/s: 1.00x (before: 1.01x)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from transformers import DataCollatorWithPadding, PrinterCallback, Trainer, TrainerCallback, TrainingArguments

from bench.data.loaders import resolve_data_dir
from bench.data.tokens import Encoded, encode
from bench.models.encoder import base_model, load_tokenizer
from bench.run.quiet import quiet_libraries
from bench.sdk.loop import WARMUP_STEPS_UNTIMED, cross_entropy_loss, resolve_precision, train_loop, wrap_lora
from bench.spec.suite import TrainConfig

MODEL = "minilm"
HEAD = ["classifier"]
LORA: dict[str, Any] = {"r": 8, "alpha": 16.0, "dropout": 0.1, "target_modules": None}


@dataclass
class Run:
    """One training run; ``padded_tokens`` sums batch size x width over the steps.

    Trainer only: ``own_samples_per_s`` (its ``train_samples_per_second``, warm-up included) and
    ``step_only_samples_per_s`` (over the summed on_step_begin..on_step_end spans: no batch loading).
    Both: ``cpu_samples_per_s``.
    """

    side: str
    samples_per_s: float
    mean_loss: float
    step_losses: list[float] = field(default_factory=list)
    padded_tokens: int = 0
    own_samples_per_s: float = float("nan")
    step_only_samples_per_s: float = float("nan")
    cpu_samples_per_s: float = float("nan")
    """Timed samples per process CPU second, end of warm-up step to end of the last step."""

    def sane(self) -> bool:
        """Positive throughput, finite losses, the last 3 steps' loss below the first 3 steps'."""
        finite = all(math.isfinite(x) for x in [*self.step_losses, self.mean_loss])
        return finite and self.samples_per_s > 0 and np.mean(self.step_losses[-3:]) < np.mean(self.step_losses[:3])


def load_trec(rows: int, max_length: int, data_dir: str | None = None) -> tuple[Encoded, int]:
    """The first ``rows`` TREC training rows, tokenised (truncation only), and the class count."""
    path = resolve_data_dir(data_dir) / "trec" / "train.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    n_classes = max(int(r["label"]) for r in records) + 1
    head = records[:rows]
    labels = np.array([int(r["label"]) for r in head], dtype=np.int64)
    encoded = encode([str(r["text"]) for r in head], labels, np.arange(len(head)), load_tokenizer(MODEL), max_length)
    return encoded, n_classes


def lora_model(n_classes: int, seed: int) -> torch.nn.Module:
    """A fresh MiniLM with the LoRA adapter, built as the harness builds it."""
    model = wrap_lora(base_model(MODEL, n_classes).new(seed), head=HEAD, **LORA)
    dropout = getattr(model, "peft_config")["default"].lora_dropout  # noqa: B009
    assert dropout == LORA["dropout"], f"wrap_lora set lora_dropout={dropout}, not {LORA['dropout']}"
    return model


def per_cpu_s(batch_sizes: list[int], cpu_ends: list[float]) -> float:
    """Samples of the steps after warm-up per CPU second, from the end of the last warm-up step."""
    w = WARMUP_STEPS_UNTIMED
    if len(cpu_ends) <= w or cpu_ends[-1] <= cpu_ends[w - 1]:
        return float("nan")
    return sum(batch_sizes[w:]) / (cpu_ends[-1] - cpu_ends[w - 1])


def run_harness(data: Encoded, n_classes: int, cfg: TrainConfig, *, seed: int,
                fixed_length: int | None) -> Run:
    """Train with ``bench.sdk.loop.train_loop``; ``fixed_length`` pads every batch to that width."""
    losses, slots, sizes, cpu_ends = list[torch.Tensor](), list[int](), list[int](), list[float]()
    pad_id = load_tokenizer(MODEL).pad_token_id

    def loss_fn(model: torch.nn.Module, inputs: dict[str, torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        if fixed_length is not None:  # pad ids with pad_id, the attention mask with 0
            inputs = {k: F.pad(v, (0, fixed_length - v.shape[1]), value=pad_id if k == "input_ids" else 0)
                      for k, v in inputs.items()}
        slots.append(inputs["input_ids"].numel())
        sizes.append(int(inputs["input_ids"].shape[0]))
        loss = cross_entropy_loss(model, inputs, labels)
        losses.append(loss.detach())
        return loss

    stats = train_loop(model=lora_model(n_classes, seed), data=data, cfg=cfg, seed=seed,
                       device=torch.device("cpu"), precision=cfg.precision, head=HEAD, pad_id=pad_id,
                       loss_fn=loss_fn, after_step=lambda: cpu_ends.append(time.process_time()))
    return Run("harness", stats.samples_per_s, stats.epoch_losses[-1], [float(x) for x in losses], sum(slots),
               cpu_samples_per_s=per_cpu_s(sizes, cpu_ends))


class StepTimer(TrainerCallback):
    """Timestamps of every optimizer step's begin and end (and its end in process CPU seconds)."""

    def __init__(self) -> None:
        self.begins, self.ends, self.cpu_ends = list[float](), list[float](), list[float]()

    def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:  # noqa: D102
        self.begins.append(time.perf_counter())

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:  # noqa: D102
        self.ends.append(time.perf_counter())
        self.cpu_ends.append(time.process_time())


class RecordingTrainer(Trainer):
    """Trainer keeping each step's loss and batch shape (two list appends per step)."""

    seen: list[tuple[int, ...]]
    step_losses: list[torch.Tensor]

    def training_step(self, model: Any, inputs: Any, num_items_in_batch: Any = None) -> torch.Tensor:  # noqa: D102
        self.seen.append(tuple(inputs["input_ids"].shape))
        loss: torch.Tensor = super().training_step(model, inputs, num_items_in_batch)
        self.step_losses.append(loss.detach())
        return loss


def run_trainer(data: Encoded, n_classes: int, cfg: TrainConfig, *, seed: int,
                fixed_length: int | None) -> Run:
    """Train with transformers' ``Trainer``; time the steps after warm-up with a callback."""
    tokenizer = load_tokenizer(MODEL)
    collator = DataCollatorWithPadding(tokenizer, padding="max_length" if fixed_length else True,
                                       max_length=fixed_length)
    rows = [{"input_ids": x.tolist(), "labels": int(y)} for x, y in zip(data.input_ids, data.labels, strict=True)]
    timer = StepTimer()
    with tempfile.TemporaryDirectory(prefix="peftbench-trainer-") as out:
        args = TrainingArguments(
            output_dir=out, per_device_train_batch_size=cfg.batch_size, learning_rate=cfg.lr,
            num_train_epochs=cfg.epochs, warmup_steps=cfg.warmup_ratio, max_grad_norm=cfg.max_grad_norm,
            weight_decay=cfg.weight_decay, lr_scheduler_type="linear", bf16=cfg.precision == "bf16",
            use_cpu=True, train_sampling_strategy="group_by_length", dataloader_num_workers=0,
            dataloader_pin_memory=False, report_to=[], eval_strategy="no", save_strategy="no",
            logging_strategy="no", disable_tqdm=True, seed=seed, label_names=["labels"])
        trainer = RecordingTrainer(model=lora_model(n_classes, seed), args=args, train_dataset=rows,
                                   data_collator=collator, processing_class=tokenizer, callbacks=[timer])
        trainer.remove_callback(PrinterCallback)  # it prints the final metrics dict
        trainer.seen, trainer.step_losses = [], []
        metrics = trainer.train().metrics
    w = WARMUP_STEPS_UNTIMED
    timed = sum(n for n, _ in trainer.seen[w:])
    span = timer.ends[-1] - timer.ends[w - 1] if len(timer.ends) > w else float("nan")
    step_only = sum(e - b for b, e in zip(timer.begins[w:], timer.ends[w:], strict=True))
    return Run("trainer", timed / span, float(metrics["train_loss"]), [float(x) for x in trainer.step_losses],
               sum(n * width for n, width in trainer.seen), float(metrics["train_samples_per_second"]),
               timed / step_only if step_only > 0 else float("nan"),
               per_cpu_s([n for n, _ in trainer.seen], timer.cpu_ends))


def compare(data: Encoded, n_classes: int, cfg: TrainConfig, *, seed: int = 0,
            fixed_length: int | None = None, repeats: int = 1, warmup: bool = True) -> dict[str, Any]:
    """Interleave ``repeats`` harness/Trainer pairs; return the medians, the ratio and every run.

    ``fixed_length``: pad every batch to that width on both sides (None: dynamic padding).
    ``warmup``: train once untimed first; per-shape kernel set-up is not charged to the first side.
    """
    if warmup:
        run_harness(data, n_classes, cfg, seed=seed, fixed_length=fixed_length)
    runs: list[Run] = []
    for _ in range(repeats):
        runs.append(run_harness(data, n_classes, cfg, seed=seed, fixed_length=fixed_length))
        runs.append(run_trainer(data, n_classes, cfg, seed=seed, fixed_length=fixed_length))

    def med(side: str, key: str) -> float:
        return float(statistics.median(getattr(r, key) for r in runs if r.side == side))

    out: dict[str, Any] = {f"{side}_{key}": med(side, key) for side, key in [
        ("harness", "samples_per_s"), ("trainer", "samples_per_s"), ("trainer", "own_samples_per_s"),
        ("trainer", "step_only_samples_per_s"), ("harness", "mean_loss"), ("trainer", "mean_loss"),
        ("harness", "cpu_samples_per_s"), ("trainer", "cpu_samples_per_s")]}
    return {**out, "ratio": out["harness_samples_per_s"] / out["trainer_samples_per_s"],
            "cpu_ratio": out["harness_cpu_samples_per_s"] / out["trainer_cpu_samples_per_s"],
            "sane": all(r.sane() for r in runs), "real_tokens": int(data.lengths.sum()),
            "runs": [asdict(r) for r in runs]}


def table(result: dict[str, Any]) -> str:
    """A Markdown table, one row per run, then the medians and the ratio."""
    lines = ["| pair | side | samples/s (warm-up excl.) | per CPU s | Trainer own metric | Trainer step-only "
             "| padded tokens | mean loss | loss first 3 -> last 3 steps |", "|---|---|---|---|---|---|---|---|---|"]
    for i, run in enumerate(result["runs"]):
        first, last = np.mean(run["step_losses"][:3]), np.mean(run["step_losses"][-3:])
        own, step = ("", "") if run["side"] == "harness" else (
            f"{run['own_samples_per_s']:.1f}", f"{run['step_only_samples_per_s']:.1f}")
        lines.append(f"| {i // 2 + 1} | {run['side']} | {run['samples_per_s']:.1f} | {run['cpu_samples_per_s']:.1f} "
                     f"| {own} | {step} "
                     f"| {run['padded_tokens']} | {run['mean_loss']:.3f} | {first:.3f} -> {last:.3f} |")
    lines.append(f"\nmedian: harness {result['harness_samples_per_s']:.1f} samples/s, Trainer "
                 f"{result['trainer_samples_per_s']:.1f} (callback), {result['trainer_own_samples_per_s']:.1f} "
                 f"(own metric); ratio harness/Trainer = {result['ratio']:.2f}x (per CPU second: "
                 f"{result['cpu_ratio']:.2f}x); real tokens "
                 f"{result['real_tokens']}; losses drop on both sides: {result['sane']}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line flags."""
    p = argparse.ArgumentParser(description="Harness loop vs transformers Trainer: training samples/s.")
    p.add_argument("--rows", type=int, default=1024, help="first N rows of TREC train")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=64, help="truncation length")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto")
    p.add_argument("--fixed-length", action="store_true", help="pad every batch to --max-length")
    p.add_argument("--repeats", type=int, default=1, help="harness/Trainer pairs, interleaved")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    p.add_argument("--no-warmup", action="store_true", help="skip the untimed warm-up run")
    p.add_argument("--data-dir", default=None, help="dataset root (default: the harness's lookup)")
    p.add_argument("--json", type=Path, default=None, help="also write the result here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the comparison, print the table, optionally write JSON."""
    quiet_libraries()
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    precision = resolve_precision(args.precision, torch.device("cpu"))
    cfg = TrainConfig(epochs=1, batch_size=args.batch_size, lr=5e-3, precision=precision)
    data, n_classes = load_trec(args.rows, args.max_length, args.data_dir)
    fixed = args.max_length if args.fixed_length else None
    load = os.getloadavg()[0]  # before the run; the run itself adds about its thread count
    result = compare(data, n_classes, cfg, seed=args.seed, fixed_length=fixed, repeats=args.repeats,
                     warmup=not args.no_warmup)
    result["settings"] = {**vars(args), "json": str(args.json), "precision_resolved": precision,
                          "torch_threads": torch.get_num_threads(), "loadavg_1m_before": load}
    padding = f"fixed {args.max_length}" if fixed else f"dynamic (max {args.max_length})"
    print(f"TREC rows={len(data)} batch={args.batch_size} padding={padding} precision={precision} "
          f"threads={torch.get_num_threads()} repeats={args.repeats} load avg before {load:.1f}\n")
    print(table(result))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
