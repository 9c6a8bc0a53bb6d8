"""Fine-tuning a causal LM with a peft adapter on SFT data, and the fitted model lm-eval scores.

The training loop is :func:`bench.sdk.loop.train_loop` with a loss hook: the batch's per-token
targets (answer tokens; -100 elsewhere) go to the model's own causal-LM loss, the mean over
target tokens. Batches are length-grouped like classification batches (``group_by_length``),
and throughput counts unpadded prompt + answer tokens.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from bench.data.sft import SftData, target_labels
from bench.data.tokens import Encoded
from bench.errors import BenchError
from bench.sdk.fitted import load_converted, load_peft, save_initial
from bench.sdk.loop import TrainStats, autocast, collate, count_parameters, train_loop
from bench.sdk.scratch import scratch_prefix

#: Reload check of a generation model: the largest |Δp| of next-token probabilities allowed.
RELOAD_TOLERANCE = 1e-5


@dataclass
class CausalFitted:
    """A fitted causal LM (a peft model) with its tokenizer, handed to lm-eval."""

    model: nn.Module
    tokenizer: Any
    device: torch.device
    precision: str
    diagnostics: dict[str, Any] = field(default_factory=dict)
    trained_parameters: int | None = None
    """What the optimizer trained, when the evaluated model differs (a converted PiSSA adapter)."""
    checkpoints: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    """Earlier stages to score too: stage name -> the adapter's state (``get_peft_model_state_dict``)
    at the end of that stage. The harness evaluates each with the task's evaluations
    (``metrics["stages"][name]``), e.g. accuracy after SFT of a method that then runs RL."""

    def predict_proba(self, data: Encoded) -> NDArray[np.float64]:
        """Not defined for generation: lm-eval scores ``model`` and ``tokenizer``."""
        raise BenchError("a generation model has no class probabilities; it is scored through lm-eval")

    def trainable_parameters(self) -> int:
        """Parameters trained."""
        return self.trained_parameters if self.trained_parameters is not None else count_parameters(self.model)[0]

    def total_parameters(self) -> int:
        """All parameters of the evaluated model."""
        return count_parameters(self.model)[1]

    def save(self, directory: Path) -> None:
        """``save_pretrained``: the adapter of a peft model, the whole model otherwise."""
        directory.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(str(directory))  # type: ignore[operator]


def wrap_causal_lora(model: nn.Module, *, r: int, alpha: float, dropout: float,
                     target_modules: Sequence[str] | None, **extra: Any) -> nn.Module:
    """Wrap a causal LM with a peft LoRA adapter (``extra`` goes to ``peft.LoraConfig``)."""
    from peft import LoraConfig, TaskType, get_peft_model

    config = LoraConfig(task_type=TaskType.CAUSAL_LM, r=r,
                        lora_alpha=int(alpha) if float(alpha).is_integer() else alpha,  # type: ignore[arg-type]
                        lora_dropout=dropout, target_modules=list(target_modules) if target_modules else None,
                        **extra)
    return get_peft_model(model, config)


def sft_data(ctx: Any, val: bool = False) -> SftData:
    """The context's SFT items (``ctx.train`` or ``ctx.val`` with their target masks)."""
    data, masks = (ctx.val, ctx.val_targets) if val else (ctx.train, ctx.train_targets)
    if len(masks) != len(data):
        raise BenchError("generation context without target masks for every item")
    return SftData(list(data.input_ids), list(masks), data.ids)


def sft_loss(data: SftData) -> Callable[..., torch.Tensor]:
    """A ``train_loop`` loss hook (``with_index=True``): the LM loss on the batch's target tokens."""

    def loss(model: nn.Module, inputs: dict[str, torch.Tensor], labels: torch.Tensor,
             index: NDArray[np.int64]) -> torch.Tensor:
        width = inputs["input_ids"].shape[1]
        targets = torch.from_numpy(target_labels(data, index, width)).to(inputs["input_ids"].device)
        out: torch.Tensor = model(**inputs, labels=targets).loss
        return out

    return loss


@torch.no_grad()
def mean_target_loss(model: nn.Module, data: SftData, *, batch_size: int, device: torch.device, precision: str,
                     pad_id: int) -> float:
    """Mean cross-entropy over all target tokens of ``data`` (nan for no data)."""
    if len(data) == 0:
        return float("nan")
    model.eval()
    encoded = Encoded(data.input_ids, np.zeros(len(data), np.int64), data.ids)
    total, count = 0.0, 0
    for start in range(0, len(data), batch_size):
        index = np.arange(start, min(start + batch_size, len(data)))
        inputs = collate(encoded, index, pad_id, device)
        targets = torch.from_numpy(target_labels(data, index, inputs["input_ids"].shape[1])).to(device)
        with autocast(device, precision):
            logits = model(**inputs).logits.float()
        shifted = targets[:, 1:]
        nll = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), shifted, reduction="sum",
                                                ignore_index=-100)
        total, count = total + float(nll), count + int((shifted != -100).sum())
    return total / max(count, 1)


def train_causal(ctx: Any, model: nn.Module, *, loss_fn: Callable[..., torch.Tensor] | None = None,
                 epoch_row: Callable[[], dict[str, Any]] | None = None,
                 params: list[dict[str, Any]] | None = None, index: NDArray[np.int64] | None = None,
                 after_step: Callable[[], None] | None = None) -> TrainStats:
    """Train a wrapped causal LM on the context's SFT data with the shared loop.

    One curve row per epoch: ``epoch``, ``train_loss`` (the mean of ``loss_fn``), ``val_loss``
    (answer tokens of the held-out rows, eval mode) and what ``epoch_row()`` adds (a method's
    own terms). ``loss_fn`` is a ``with_index`` hook; the default is :func:`sft_loss`. ``index``
    trains on those items of ``ctx.train`` only (e.g. one system's share of the data);
    ``after_step`` runs after every optimizer step.
    """
    train, val = sft_data(ctx), sft_data(ctx, val=True)
    if index is not None:
        train = SftData([train.input_ids[i] for i in index], [train.target_masks[i] for i in index], train.ids[index])
    pad = ctx.tokenizer.pad_token_id
    figures = {"batch_size": ctx.train_config.eval_batch_size, "device": ctx.device, "precision": ctx.precision,
               "pad_id": pad}

    def on_epoch_end(epoch: int, train_loss: float) -> None:
        extra = epoch_row() if epoch_row is not None else {}
        ctx.log({"epoch": epoch, "train_loss": train_loss, "val_loss": mean_target_loss(model, val, **figures),
                 **extra})

    return train_loop(model=model, data=Encoded(train.input_ids, np.zeros(len(train), np.int64), train.ids),
                      cfg=ctx.train_config, seed=ctx.seed, device=ctx.device, precision=ctx.precision, head=(),
                      pad_id=pad, loss_fn=loss_fn or sft_loss(train), on_epoch_end=on_epoch_end,
                      progress=ctx.progress, with_index=True, params=params, after_step=after_step)


def fit_causal_lora(ctx: Any, *, r: int, alpha: float, dropout: float, target_modules: Sequence[str] | None,
                    rewrites_base: bool = False, **extra: Any) -> CausalFitted:
    """Train a LoRA adapter (any peft variant) on the context's SFT data; return the fitted model.

    ``rewrites_base`` (PiSSA, OLoRA): the trained adapter is converted into a plain LoRA delta
    on a fresh, unmodified base, and that converted model is the one evaluated and saved.
    """
    model = wrap_causal_lora(ctx.new_model(), r=r, alpha=alpha, dropout=dropout, target_modules=target_modules,
                             **extra)
    initial = save_initial(model) if rewrites_base else None
    train_causal(ctx, model)
    model.eval()
    trained = count_parameters(model)[0]
    if initial is not None:
        with initial:
            model = load_converted(model, initial, ctx.new_model).to(ctx.device).eval()
    return CausalFitted(model, ctx.tokenizer, ctx.device, ctx.precision, trained_parameters=trained)


def load_causal(ctx: Any, directory: Path) -> CausalFitted:
    """Load a saved adapter onto a fresh base."""
    model = load_peft(ctx.new_model(), directory).to(ctx.device).eval()
    return CausalFitted(model, ctx.tokenizer, ctx.device, ctx.precision)


@torch.no_grad()
def next_token_probs(fitted: CausalFitted, data: SftData, *, batch_size: int = 8) -> NDArray[np.float32]:
    """Next-token probabilities at every real position of ``data``'s items (for the reload check)."""
    encoded = Encoded(data.input_ids, np.zeros(len(data), np.int64), data.ids)
    fitted.model.eval()
    out = []
    for start in range(0, len(data), batch_size):
        inputs = collate(encoded, np.arange(start, min(start + batch_size, len(data))), 0, fitted.device)
        with autocast(fitted.device, fitted.precision):
            probs = torch.softmax(fitted.model(**inputs).logits.float(), dim=-1)
        out.append(probs[inputs["attention_mask"].bool()].cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def reload_check(fitted: CausalFitted, load: Callable[[Path], CausalFitted], data: SftData) -> dict[str, float]:
    """Save the adapter, load it onto a fresh base, compare next-token probabilities on ``data``.

    Raises:
        BenchError: when the reloaded model predicts differently.
    """
    with tempfile.TemporaryDirectory(prefix=scratch_prefix("reload")) as tmp:
        folder = Path(tmp)
        fitted.save(folder)
        size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        again = load(folder)
        diff = float(np.abs(next_token_probs(fitted, data) - next_token_probs(again, data)).max(initial=0.0))
    if not diff <= RELOAD_TOLERANCE:
        raise BenchError(f"reload check failed: saved and reloaded model differ (max |dp| = {diff:.2e})")
    return {"adapter_bytes": float(size), "reload_max_abs_diff": diff}
