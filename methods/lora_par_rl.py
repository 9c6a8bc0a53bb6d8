"""LoRA-PAR stage 2 (METHODS.md §4.1 step 6): GRPO with TRL's ``GRPOTrainer`` on a partitioned LoRA.

The trainer is TRL's own (pinned in pyproject.toml; its version, loss type and KL coefficient
go into the record). Only the stage's LoRA elements move: a gradient hook zeroes the others'
gradients and, after every optimizer step, :class:`MaskCallback` copies them back, so AdamW's
weight decay cannot move them either. Each logged step becomes one row of ``rl_*`` curves:
total reward, each reward term, KL and completion length.
"""

from __future__ import annotations

import copy
import importlib
import math
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from bench.sdk import CellError, FitContext
from bench.sdk.scratch import scratch_prefix
from methods.lora_par_partition import MaskKeeper
from methods.lora_par_reward import gsm8k_rl_rows, trl_reward_funcs

#: TRL's per-step log keys -> our curve names (``rewards/<term>/mean`` are added per term).
LOG_KEYS = {"reward": "rl_reward", "reward_std": "rl_reward_std", "kl": "rl_kl",
            "completions/mean_length": "rl_completion_length", "loss": "rl_loss"}


@dataclass(frozen=True)
class RlSettings:
    """The GRPO hyperparameters of one run (METHODS.md §4.2, scaled by the suite)."""

    lr: float
    weight_decay: float
    batch_size: int
    grad_accum: int
    num_generations: int
    max_completion_length: int
    warmup_ratio: float
    max_grad_norm: float
    temperature: float
    beta: float | None
    """KL coefficient; None keeps TRL's default (recorded)."""
    epochs: int


def _trainer_callbacks(keeper: MaskKeeper, ctx: FitContext) -> list[Any]:
    from transformers import TrainerCallback

    class MaskCallback(TrainerCallback):
        """Puts frozen LoRA elements back after every optimizer step."""

        def on_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            keeper.restore()

    class CurveCallback(TrainerCallback):
        """One ``rl_*`` curve row per logged GRPO step."""

        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None,
                   **kwargs: Any) -> None:
            if not logs or "reward" not in logs:
                return
            row: dict[str, Any] = {"rl_step": state.global_step}
            for key, value in logs.items():
                name = LOG_KEYS.get(key)
                if key.startswith("rewards/") and key.endswith("/mean"):
                    name = f"rl_reward_{key.split('/')[1]}"
                if name is not None:
                    row[name] = float(value)
            if not math.isfinite(row.get("rl_reward", 0.0)):
                raise CellError(f"GRPO step {state.global_step}: the reward is not finite")
            ctx.log(row)

    return [MaskCallback(), CurveCallback()]


def grpo_config(settings: RlSettings, ctx: FitContext, output_dir: str) -> Any:
    """TRL's ``GRPOConfig`` for this run (no checkpoints, no reports, one log row per step)."""
    trl: Any = importlib.import_module("trl")  # typed as Any: TRL's own annotations are not ours to check
    extra: dict[str, Any] = {} if settings.beta is None else {"beta": settings.beta}
    return trl.GRPOConfig(
        output_dir=output_dir, learning_rate=settings.lr, weight_decay=settings.weight_decay,
        adam_beta1=0.9, adam_beta2=0.99, lr_scheduler_type="cosine", warmup_steps=settings.warmup_ratio,
        per_device_train_batch_size=settings.batch_size, gradient_accumulation_steps=settings.grad_accum,
        num_generations=settings.num_generations, max_completion_length=settings.max_completion_length,
        temperature=settings.temperature, num_train_epochs=settings.epochs, max_grad_norm=settings.max_grad_norm,
        logging_steps=1, save_strategy="no", report_to=[], seed=ctx.seed, data_seed=ctx.seed,
        use_cpu=ctx.device.type == "cpu", bf16=ctx.device.type == "cuda" and ctx.precision == "bf16",
        disable_tqdm=ctx.progress is None, dataloader_num_workers=0, **extra)


def run_grpo(model: nn.Module, ctx: FitContext, *, questions: Sequence[str], answers: Sequence[str],
             keeper: MaskKeeper, settings: RlSettings) -> dict[str, Any]:
    """Train ``model`` (a peft model) with GRPO on (question, GSM8K answer) pairs; return provenance.

    Raises:
        CellError: a non-finite reward, or a frozen element that moved.
    """
    from datasets import Dataset

    trl: Any = importlib.import_module("trl")

    if not questions:
        raise CellError("lora-par: no RL prompts (the RL data split is empty)")
    rows = gsm8k_rl_rows(list(questions), list(answers))
    keeper.register(model)
    try:
        with tempfile.TemporaryDirectory(prefix=scratch_prefix("grpo")) as tmp:
            config = grpo_config(settings, ctx, tmp)
            trainer = trl.GRPOTrainer(model=model, reward_funcs=trl_reward_funcs(), args=config,
                                  train_dataset=Dataset.from_list(rows), processing_class=copy.deepcopy(ctx.tokenizer),
                                  callbacks=_trainer_callbacks(keeper, ctx))
            # without a progress bar transformers prints every step's log dict; the curves keep them
            trainer.remove_callback(importlib.import_module("transformers").PrinterCallback)
            trainer.train()
    finally:
        keeper.remove()
    if not keeper.frozen_unchanged():
        raise CellError("lora-par: a frozen LoRA element moved during GRPO")
    return {"trl_version": trl.__version__, "beta": float(config.beta), "loss_type": str(config.loss_type),
            "n_prompts": len(rows), "num_generations": settings.num_generations,
            "max_completion_length": settings.max_completion_length}
