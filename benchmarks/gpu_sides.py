"""The two sides of ``benchmarks/gpu.py``: the harness's causal-LM loop and transformers' ``Trainer``.

Both train the same peft LoRA on the same random-weight Llama shape and the same random token
rows (every row full length: no padding, so every token is a real one):

- harness: ``wrap_causal_lora`` + ``train_causal`` on a ``FitContext``, which is the body of
  ``bench.sdk.causal.fit_causal_lora`` (what ``bench run`` calls for ``lora`` on a generation task),
  with its default loss (``sft_loss``: every token a target) and an ``after_step`` hook that marks
  the timed window;
- Trainer: ``benchmarks.trainer_ratio.RecordingTrainer`` (``Trainer`` keeping each step's loss)
  with a callback marking the same window.

Each side runs inside ``bench.run.profile.Phase`` (the harness's own wall/RSS/torch-peak/NVML
figures) and a :class:`DeviceSampler` thread (NVML device memory and power, torch reserved memory,
every 50 ms). The timed window runs from the end of optimizer step ``warmup_steps`` to the end of
the last step, with ``torch.cuda.synchronize`` and an NVML energy-counter read at both ends.
"""

from __future__ import annotations

import gc
import math
import tempfile
import threading
import time
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from torch import nn

from bench.data.tokens import Encoded
from bench.models.causal import RANDOM_BASE_SEED, RANDOM_CAUSAL, dtype_for
from bench.run.profile import GIB, Phase
from bench.sdk.causal import sft_data, sft_loss, train_causal, wrap_causal_lora
from bench.sdk.loop import count_parameters
from bench.sdk.method import FitContext
from bench.spec.suite import TrainConfig

_LLAMA3 = {"model_type": "llama", "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256,
           "rope_theta": 500000.0, "rms_norm_eps": 1e-5, "max_position_embeddings": 131072}
#: Llama-3.2-1B and Llama-3.1-8B sizes (their config.json; the llama3 rope scaling is left out: it
#: changes rotary frequencies, not the work), and the harness's ``tiny-llama`` preset for CPU tests.
SHAPES: dict[str, dict[str, Any]] = {
    "1b": {**_LLAMA3, "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16,
           "tie_word_embeddings": True},
    "8b": {**_LLAMA3, "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
           "tie_word_embeddings": False},
    "tiny": {**RANDOM_CAUSAL["tiny-llama"], "vocab_size": 512},
}
#: LoRA on every linear layer of the blocks: attention q, k, v, o and the MLP (gate, up, down).
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
SAMPLE_INTERVAL_S = 0.05


@dataclass(frozen=True)
class Work:
    """What both sides train: shape, sequence length, batch, steps, LoRA and optimiser settings."""

    shape: str
    seq: int
    batch_size: int
    warmup_steps: int
    measure_steps: int
    rank: int = 16
    grad_ckpt: bool = False
    precision: str = "bf16"
    lr: float = 2e-4
    seed: int = 0

    @property
    def total_steps(self) -> int:
        """Warm-up plus measured optimizer steps (one epoch over ``total_steps * batch_size`` rows)."""
        return self.warmup_steps + self.measure_steps

    @property
    def tokens_per_step(self) -> int:
        """Tokens of one optimizer step (all real: rows are full length)."""
        return self.batch_size * self.seq

    def lora(self) -> dict[str, Any]:
        """The peft LoRA settings: alpha = 2r (the peft method_comparison and torchtune habit), no dropout."""
        return {"r": self.rank, "alpha": 2.0 * self.rank, "dropout": 0.0, "target_modules": list(LORA_TARGETS)}


def nvml_handle(device: torch.device) -> Any:
    """The NVML handle of a CUDA device, or None (no GPU, no driver, no nvidia-ml-py)."""
    if device.type != "cuda":
        return None
    try:
        import pynvml

        pynvml.nvmlInit()
        return pynvml.nvmlDeviceGetHandleByIndex(device.index or 0)
    except Exception:  # figures stay None, as in bench.run.profile
        return None


def energy_j(handle: Any) -> float | None:
    """NVML's total-energy counter (mJ since the driver loaded) in joules; None where not reported."""
    if handle is None:
        return None
    try:
        import pynvml

        return float(pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)) / 1000.0
    except Exception:
        return None


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class DeviceSampler(threading.Thread):
    """Polls NVML device memory used and power, and torch's reserved memory, every ``interval`` s."""

    def __init__(self, device: torch.device, handle: Any, interval: float = SAMPLE_INTERVAL_S) -> None:
        super().__init__(daemon=True)
        self.device, self.handle, self.interval = device, handle, interval
        self.used_peak, self.reserved_peak, self.samples = 0, 0, 0
        self.power_w: list[float] = []
        self._stop_event = threading.Event()

    def sample(self) -> None:
        """One reading of every figure available."""
        self.samples += 1
        if self.device.type == "cuda":
            self.reserved_peak = max(self.reserved_peak, torch.cuda.memory_reserved(self.device))
        if self.handle is None:
            return
        import pynvml

        self.used_peak = max(self.used_peak, int(pynvml.nvmlDeviceGetMemoryInfo(self.handle).used))
        try:
            self.power_w.append(pynvml.nvmlDeviceGetPowerUsage(self.handle) / 1000.0)  # mW
        except pynvml.NVMLError:
            pass

    def run(self) -> None:  # noqa: D102
        while not self._stop_event.is_set():
            self.sample()
            self._stop_event.wait(self.interval)

    def __enter__(self) -> DeviceSampler:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop_event.set()
        self.join()
        self.sample()

    def figures(self) -> dict[str, Any]:
        """Sampled peaks (GiB) and mean power (W); None where the device does not report them."""
        nvml = self.handle is not None
        return {"nvml_used_peak_gib": self.used_peak / GIB if nvml else None,
                "sampled_reserved_peak_gib": self.reserved_peak / GIB if self.device.type == "cuda" else None,
                "sampled_power_mean_w": float(np.mean(self.power_w)) if self.power_w else None,
                "samples": self.samples}


class Window:
    """The timed stretch of a run: from the end of optimizer step ``warmup`` to the end of step ``total``.

    ``step()`` is called after every optimizer step; at both ends it synchronises the device and
    reads the clock and NVML's energy counter.
    """

    def __init__(self, device: torch.device, handle: Any, *, warmup: int, total: int) -> None:
        self.device, self.handle, self.warmup, self.total = device, handle, warmup, total
        self.steps = 0
        self.marks: dict[str, tuple[float, float | None]] = {}

    def step(self) -> None:
        """Count one optimizer step; mark the window's start or end when it is one of them."""
        self.steps += 1
        if self.steps in (self.warmup, self.total):
            sync(self.device)
            self.marks["start" if self.steps == self.warmup else "end"] = (time.perf_counter(), energy_j(self.handle))

    def figures(self, tokens_per_step: int) -> dict[str, Any]:
        """Tokens/s over the window, and its energy (J), energy per token (J) and mean power (W)."""
        if set(self.marks) != {"start", "end"}:
            raise RuntimeError(f"timed window not closed: {self.steps} steps seen, marks {sorted(self.marks)}")
        (t0, e0), (t1, e1) = self.marks["start"], self.marks["end"]
        tokens, seconds = (self.total - self.warmup) * tokens_per_step, t1 - t0
        energy = e1 - e0 if e0 is not None and e1 is not None else None
        return {"timed_steps": self.total - self.warmup, "timed_tokens": tokens, "timed_s": seconds,
                "tokens_per_s": tokens / seconds if seconds > 0 else float("nan"), "energy_j": energy,
                "energy_per_token_j": energy / tokens if energy is not None else None,
                "mean_power_w": energy / seconds if energy is not None and seconds > 0 else None}


def build_base(work: Work, device: torch.device) -> nn.Module:
    """A random-weight causal LM of ``work.shape``, built as ``causal_base`` builds ``random:<preset>``.

    Same steps (``AutoConfig.for_model``, seed ``RANDOM_BASE_SEED``, weights in ``dtype_for(precision)``)
    but allocated on ``device`` in that dtype from the start: the 8B shape in fp32 on the host would
    be 32 GB and minutes of initialisation. ``use_cache=False`` as for any training forward.
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    shape = dict(SHAPES[work.shape])
    config = AutoConfig.for_model(shape.pop("model_type"), use_cache=False, **shape)
    torch.manual_seed(RANDOM_BASE_SEED)
    with torch.device(device):
        model: nn.Module = AutoModelForCausalLM.from_config(  # type: ignore[no-untyped-call]
            config, dtype=dtype_for(work.precision), attn_implementation="sdpa")
    if work.grad_ckpt:  # both sides get it from here; Trainer's own flag stays off
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})  # type: ignore[operator]
    return model


def random_rows(work: Work) -> list[np.ndarray]:
    """``total_steps * batch_size`` rows of ``seq`` uniform random token ids (seeded)."""
    rng = np.random.default_rng(work.seed)
    vocab = int(SHAPES[work.shape]["vocab_size"])
    return list(rng.integers(0, vocab, size=(work.total_steps * work.batch_size, work.seq), dtype=np.int64))


def train_config(work: Work) -> TrainConfig:
    """The hyperparameters of both sides: AdamW, constant-then-linear-decay lr (no warm-up), clip 1.0."""
    return TrainConfig(epochs=1, batch_size=work.batch_size, eval_batch_size=1, lr=work.lr, weight_decay=0.0,
                       warmup_ratio=0.0, max_grad_norm=1.0, precision=work.precision)


def train_harness(model: nn.Module, rows: list[np.ndarray], *, work: Work, device: torch.device,
                  window: Window) -> tuple[list[float], float]:
    """``train_causal`` on a FitContext of ``rows`` (all tokens targets); (step losses, its own tokens/s)."""
    masks = tuple(np.ones(work.seq, dtype=bool) for _ in rows)
    ctx = FitContext(task="random-tokens", kind="generation", label_names=[], new_model=lambda: model,
                     tokenizer=SimpleNamespace(pad_token_id=0), train=Encoded(rows, np.zeros(len(rows), np.int64),
                     np.arange(len(rows))), val=Encoded(rows[:1], np.zeros(1, np.int64), np.arange(1)),
                     train_config=train_config(work), seed=work.seed, device=device, precision=work.precision,
                     log=lambda row: None, progress=None,  # type: ignore[arg-type]  # train_loop: no bar
                     train_targets=masks, val_targets=masks[:1])
    default_loss, losses = sft_loss(sft_data(ctx)), list[torch.Tensor]()

    def loss_fn(model: nn.Module, inputs: dict[str, torch.Tensor], labels: torch.Tensor, index: Any) -> torch.Tensor:
        loss = default_loss(model, inputs, labels, index)
        losses.append(loss.detach())
        return loss

    stats = train_causal(ctx, model, loss_fn=loss_fn, after_step=window.step)
    return [float(x) for x in losses], stats.tokens_per_s


def train_trainer(model: nn.Module, rows: list[np.ndarray], *, work: Work, device: torch.device,
                  window: Window) -> tuple[list[float], float]:
    """``Trainer`` on the same rows and settings; (step losses, its own tokens/s, warm-up included)."""
    from transformers import PrinterCallback, TrainerCallback, TrainingArguments

    from benchmarks.trainer_ratio import RecordingTrainer

    class Marks(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            window.step()

    cfg = train_config(work)
    ids = torch.from_numpy(np.stack(rows))
    dataset = [{"input_ids": x, "attention_mask": torch.ones_like(x), "labels": x} for x in ids]
    with tempfile.TemporaryDirectory(prefix="peftbench-gpu-") as out:
        args = TrainingArguments(
            output_dir=out, per_device_train_batch_size=cfg.batch_size, max_steps=work.total_steps,
            learning_rate=cfg.lr, lr_scheduler_type="linear", warmup_steps=0, weight_decay=cfg.weight_decay,
            max_grad_norm=cfg.max_grad_norm, bf16=work.precision == "bf16", use_cpu=device.type == "cpu",
            dataloader_num_workers=0, report_to=[], eval_strategy="no", save_strategy="no",
            logging_strategy="no", disable_tqdm=True, seed=work.seed, label_names=["labels"])
        trainer = RecordingTrainer(model=model, args=args, train_dataset=dataset, callbacks=[Marks()])
        trainer.remove_callback(PrinterCallback)  # it prints the final metrics dict
        trainer.seen, trainer.step_losses = [], []
        metrics = trainer.train().metrics
        trainer.accelerator.free_memory()
    return [float(x) for x in trainer.step_losses], float(metrics["train_samples_per_second"]) * work.seq


SIDES = {"harness": train_harness, "trainer": train_trainer}


def release(device: torch.device) -> None:
    """Free what the last side left (its model, optimizer states, cached blocks)."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def run_side(side: str, work: Work, device: torch.device) -> dict[str, Any]:
    """Build a fresh base, wrap it with LoRA, train one side; every figure of that side."""
    release(device)
    handle = nvml_handle(device)
    before = energy_j(handle)  # only to tell "no energy counter" from 0 J
    used_before = _nvml_used_gib(handle)
    t0 = time.perf_counter()
    model = wrap_causal_lora(build_base(work, device), **work.lora())
    sync(device)
    build_s = time.perf_counter() - t0
    trainable, total = count_parameters(model)
    rows, window = random_rows(work), Window(device, handle, warmup=work.warmup_steps, total=work.total_steps)
    with DeviceSampler(device, handle) as sampler, Phase("train", device) as phase:
        losses, own = SIDES[side](model, rows, work=work, device=device, window=window)
    del model
    figures = {"side": side, **window.figures(work.tokens_per_step), "own_tokens_per_s": own,
               "n_active_params": total, "n_trainable_params": trainable, "build_s": build_s,
               "nvml_used_before_gib": used_before, "energy_counter": before is not None,
               **{f"phase_{k.removeprefix('train_')}": v for k, v in phase.figures.items()}, **sampler.figures(),
               "steps_seen": window.steps, "loss_first": losses[0] if losses else float("nan"),
               "loss_last": losses[-1] if losses else float("nan"), "step_losses": losses}
    release(device)
    return figures


def _nvml_used_gib(handle: Any) -> float | None:
    if handle is None:
        return None
    import pynvml

    return float(pynvml.nvmlDeviceGetMemoryInfo(handle).used) / GIB


def sane(figures: dict[str, Any], total_steps: int) -> bool:
    """Every step seen, positive finite throughput, finite losses."""
    losses = figures["step_losses"]
    return (figures["steps_seen"] == total_steps and len(losses) == total_steps
            and math.isfinite(figures["tokens_per_s"]) and figures["tokens_per_s"] > 0
            and all(math.isfinite(x) for x in losses))
