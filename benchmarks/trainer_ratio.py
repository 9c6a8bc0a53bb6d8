"""Training throughput of the harness loop against transformers' ``Trainer``, same LoRA.

Trains the same peft LoRA (r=8, alpha=16, dropout 0.1, peft's default targets, full
``classifier`` head) on the same TREC rows with the same hyperparameters (AdamW, lr 5e-3,
warm-up ratio and gradient clipping from :class:`bench.suite.TrainConfig`, batch 32, 1 epoch,
length-grouped batches) twice in one process: ``bench.train.train_loop``, then ``Trainer``
(``DataCollatorWithPadding``, ``train_sampling_strategy="group_by_length"``, bf16 where the
harness resolves precision to bf16, no logging, eval or checkpoints). Both sides leave out
the first ``WARMUP_STEPS_UNTIMED`` (3) steps: the harness in ``TrainStats.samples_per_s``,
Trainer through a callback timing from the end of step 3 to the end of the last step (so
that, like the harness, it includes batch loading and collation). Trainer's own
``train_samples_per_second`` (warm-up included) is printed for reference. ``--repeats``
interleaves harness, Trainer, harness, Trainer, ...; the ratio is of the medians.

Command (CPU, 2 cores, MiniLM, dynamic padding, precision auto = bf16 here)::

    python -m benchmarks.trainer_ratio --rows 1024 --repeats 2

Measured (2 shared cores, avx512_bf16): see ``MEASURED`` below.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from bench.data.loaders import resolve_data_dir
from bench.encode import Encoded, encode
from bench.models import base_model, load_tokenizer
from bench.suite import TrainConfig
from bench.train import WARMUP_STEPS_UNTIMED, cross_entropy_loss, resolve_precision, train_loop, wrap_lora

MODEL = "minilm"
HEAD = ["classifier"]
LORA = {"r": 8, "alpha": 16.0, "dropout": 0.1, "target_modules": None}
MEASURED = "filled in after the real run"


@dataclass
class Run:
    """One training run: throughput and per-step losses."""

    side: str
    samples_per_s: float
    mean_loss: float
    step_losses: list[float] = field(default_factory=list)
    own_samples_per_s: float = float("nan")
    """Trainer's ``train_samples_per_second`` (warm-up included); NaN for the harness."""
    step_only_samples_per_s: float = float("nan")
    """Trainer: samples over the summed on_step_begin..on_step_end intervals (no data loading)."""

    def sane(self) -> bool:
        """Finite losses and the last 3 steps below the first 3."""
        head, tail = self.step_losses[:3], self.step_losses[-3:]
        finite = all(math.isfinite(x) for x in self.step_losses) and math.isfinite(self.mean_loss)
        return finite and self.samples_per_s > 0 and float(np.mean(tail)) < float(np.mean(head))


def load_trec(rows: int, max_length: int, data_dir: str | None = None) -> tuple[Encoded, int]:
    """The first ``rows`` TREC training rows, tokenised (truncation only), and the class count."""
    path = resolve_data_dir(data_dir) / "trec" / "train.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    n_classes = max(int(r["label"]) for r in records) + 1
    head = records[:rows]
    labels = np.array([int(r["label"]) for r in head], dtype=np.int64)
    texts = [str(r["text"]) for r in head]
    return encode(texts, labels, np.arange(len(head)), load_tokenizer(MODEL), max_length), n_classes


def _lora_model(n_classes: int, seed: int) -> torch.nn.Module:
    return wrap_lora(base_model(MODEL, n_classes).new(seed), head=HEAD, **LORA)  # type: ignore[arg-type]


def run_harness(data: Encoded, n_classes: int, cfg: TrainConfig, *, seed: int,
                fixed_length: int | None) -> Run:
    """Train with ``bench.train.train_loop``; ``fixed_length`` pads every batch to that width."""
    losses: list[torch.Tensor] = []
    pad_id = load_tokenizer(MODEL).pad_token_id

    def loss_fn(model: torch.nn.Module, inputs: dict[str, torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        if fixed_length is not None:
            extra = fixed_length - inputs["input_ids"].shape[1]
            inputs = {"input_ids": F.pad(inputs["input_ids"], (0, extra), value=pad_id),
                      "attention_mask": F.pad(inputs["attention_mask"], (0, extra), value=0)}
        loss = cross_entropy_loss(model, inputs, labels)
        losses.append(loss.detach())
        return loss

    stats = train_loop(model=_lora_model(n_classes, seed), data=data, cfg=cfg, seed=seed,
                       device=torch.device("cpu"), precision=cfg.precision, head=HEAD, pad_id=pad_id,
                       loss_fn=loss_fn)
    return Run("harness", stats.samples_per_s, stats.epoch_losses[-1], [float(x) for x in losses])


def _trainer_classes() -> tuple[type, type]:
    from transformers import Trainer, TrainerCallback

    class StepTimer(TrainerCallback):  # type: ignore[misc]
        """Timestamps of every step's begin and end."""

        def __init__(self) -> None:
            self.begins: list[float] = []
            self.ends: list[float] = []

        def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.begins.append(time.perf_counter())

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.ends.append(time.perf_counter())

    class RecordingTrainer(Trainer):  # type: ignore[misc]
        """Trainer that keeps each step's loss and batch size (a list append per step)."""

        def training_step(self, model: Any, inputs: Any, num_items_in_batch: Any = None) -> torch.Tensor:
            self.batch_sizes.append(int(inputs["input_ids"].shape[0]))
            loss: torch.Tensor = super().training_step(model, inputs, num_items_in_batch)
            self.step_losses.append(loss.detach())
            return loss

    return StepTimer, RecordingTrainer


def _training_args(cfg: TrainConfig, seed: int, out: str) -> Any:
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=out, per_device_train_batch_size=cfg.batch_size, learning_rate=cfg.lr,
        num_train_epochs=cfg.epochs, warmup_steps=cfg.warmup_ratio, max_grad_norm=cfg.max_grad_norm,
        weight_decay=cfg.weight_decay, lr_scheduler_type="linear", bf16=cfg.precision == "bf16",
        use_cpu=True, train_sampling_strategy="group_by_length", dataloader_num_workers=0,
        dataloader_pin_memory=False, report_to=[], eval_strategy="no", save_strategy="no",
        logging_strategy="no", disable_tqdm=True, seed=seed, label_names=["labels"],
    )


def run_trainer(data: Encoded, n_classes: int, cfg: TrainConfig, *, seed: int,
                fixed_length: int | None) -> Run:
    """Train with transformers' ``Trainer``; time steps after warm-up with a callback."""
    from transformers import DataCollatorWithPadding

    step_timer, trainer_cls = _trainer_classes()
    tokenizer = load_tokenizer(MODEL)
    pad = {"padding": "max_length", "max_length": fixed_length} if fixed_length else {}
    dataset = [{"input_ids": ids.tolist(), "labels": int(y)} for ids, y in zip(data.input_ids, data.labels)]
    timer = step_timer()
    with tempfile.TemporaryDirectory(prefix="peftbench-trainer-") as out:
        trainer = trainer_cls(model=_lora_model(n_classes, seed), args=_training_args(cfg, seed, out),
                              train_dataset=dataset, data_collator=DataCollatorWithPadding(tokenizer, **pad),
                              processing_class=tokenizer, callbacks=[timer])
        trainer.batch_sizes, trainer.step_losses = [], []
        metrics = trainer.train().metrics
    w = WARMUP_STEPS_UNTIMED
    timed = sum(trainer.batch_sizes[w:])
    span = timer.ends[-1] - timer.ends[w - 1] if len(timer.ends) > w else float("nan")
    step_only = sum(e - b for b, e in zip(timer.begins[w:], timer.ends[w:]))
    return Run("trainer", timed / span, float(metrics["train_loss"]),
               [float(x) for x in trainer.step_losses], float(metrics["train_samples_per_second"]),
               timed / step_only if step_only > 0 else float("nan"))


def compare(data: Encoded, n_classes: int, cfg: TrainConfig, *, seed: int = 0,
            fixed_length: int | None = None, repeats: int = 1) -> dict[str, Any]:
    """Interleave harness and Trainer runs; medians, the ratio and every run."""
    runs: list[Run] = []
    for _ in range(repeats):
        runs.append(run_harness(data, n_classes, cfg, seed=seed, fixed_length=fixed_length))
        runs.append(run_trainer(data, n_classes, cfg, seed=seed, fixed_length=fixed_length))

    def med(side: str, key: str) -> float:
        return float(statistics.median(getattr(r, key) for r in runs if r.side == side))

    harness, trainer = med("harness", "samples_per_s"), med("trainer", "samples_per_s")
    return {"harness_samples_per_s": harness, "trainer_samples_per_s": trainer,
            "trainer_own_samples_per_s": med("trainer", "own_samples_per_s"),
            "trainer_step_only_samples_per_s": med("trainer", "step_only_samples_per_s"),
            "ratio": harness / trainer, "harness_mean_loss": med("harness", "mean_loss"),
            "trainer_mean_loss": med("trainer", "mean_loss"), "sane": all(r.sane() for r in runs),
            "runs": [asdict(r) for r in runs]}


def table(result: dict[str, Any]) -> str:
    """A small Markdown table: one row per run, then the medians and the ratio."""
    lines = ["| run | side | samples/s (warm-up excl.) | Trainer own metric | Trainer step-only "
             "| mean loss | first 3 -> last 3 steps |", "|---|---|---|---|---|---|---|"]
    for i, run in enumerate(result["runs"]):
        first, last = np.mean(run["step_losses"][:3]), np.mean(run["step_losses"][-3:])
        own = "" if run["side"] == "harness" else f"{run['own_samples_per_s']:.1f}"
        step = "" if run["side"] == "harness" else f"{run['step_only_samples_per_s']:.1f}"
        lines.append(f"| {i // 2 + 1} | {run['side']} | {run['samples_per_s']:.1f} | {own} | {step} "
                     f"| {run['mean_loss']:.3f} | {first:.3f} -> {last:.3f} |")
    lines.append(f"\nmedian: harness {result['harness_samples_per_s']:.1f} samples/s, Trainer "
                 f"{result['trainer_samples_per_s']:.1f} (callback), {result['trainer_own_samples_per_s']:.1f} "
                 f"(own metric); ratio harness/Trainer = {result['ratio']:.2f}x")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line flags."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.trainer_ratio", description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, default=1024, help="first N rows of TREC train")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--lr", type=float, default=5e-3)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto")
    p.add_argument("--fixed-length", action="store_true", help="pad every batch to --max-length")
    p.add_argument("--repeats", type=int, default=1, help="interleaved harness/Trainer pairs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=None, help="dataset root (default: the harness's lookup)")
    p.add_argument("--json", type=Path, default=None, help="write the result here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the comparison, print the table, optionally write JSON."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    args = parse_args(argv)
    precision = resolve_precision(args.precision, torch.device("cpu"))
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, precision=precision)
    data, n_classes = load_trec(args.rows, args.max_length, args.data_dir)
    fixed = args.max_length if args.fixed_length else None
    result = compare(data, n_classes, cfg, seed=args.seed, fixed_length=fixed, repeats=args.repeats)
    result["settings"] = {**vars(args), "json": str(args.json), "precision_resolved": precision,
                          "torch_threads": torch.get_num_threads()}
    padding = f"fixed {args.max_length}" if fixed else f"dynamic (max {args.max_length})"
    print(f"TREC rows={len(data)} batch={args.batch_size} padding={padding} precision={precision} "
          f"threads={torch.get_num_threads()} repeats={args.repeats}\n")
    print(table(result))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
