"""LoRA-PAR (Huang, Li, Tang, Chen, EMNLP Findings 2025, arXiv 2507.20999) as ``lora-par``.

Specification: METHODS.md §4. On a generation task:

1. split the training items into System 1 and System 2 (``classifier``: the §4.1 heuristic,
   precomputed labels, a vote of local causal LMs, or random; :mod:`methods.lora_par_systems`);
2. LoRA on q,k,v,gate,up,down (r 8, alpha 64), A and B re-initialised from N(0, 0.01) so that
   importance is non-zero (``init: normal``, the paper's LoRA(θ));
3. per-element importance on ``importance_samples`` items of each system, batch 1, answer-only
   loss (``taylor2``, the authors' code, or ``grad_fisher``, the paper's formula);
4. partition at θ with α/β shares of the shared elements (:mod:`methods.lora_par_partition`),
   or ``partition: random`` (same sizes, the "Rand." control), or ``none`` (every element:
   the LoRA+RL baseline on the same code path);
5. stage 1: SFT on the System-1 items with only the stage-1 elements trainable;
6. stage 2: GRPO (TRL) on the System-2 items with only the stage-2 elements trainable, with the
   five-term GSM8K reward (:mod:`methods.lora_par_reward`, :mod:`methods.lora_par_rl`).

Frozen elements keep their initial values bit for bit (gradient hooks, and a copy put back
after every optimizer step, so weight decay cannot move them); the record says so. The SFT
adapter is handed back as a checkpoint, so the harness scores accuracy after each stage.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from bench.sdk import (
    BenchError,
    CausalFitted,
    CellError,
    FitContext,
    causal_base,
    load_causal,
    load_causal_tokenizer,
    load_converted,
    register_method,
    save_initial,
    sft_data,
    train_causal,
    wrap_causal_lora,
)
from methods.lora_par_partition import (
    MaskKeeper,
    Partition,
    breakdown,
    flat_scores,
    importance,
    lora_parameters,
    partition,
    random_partition,
    reinit_normal,
)
from methods.lora_par_rl import RlSettings, run_grpo
from methods.lora_par_systems import (
    CLASSIFIERS,
    SystemSplit,
    agreement,
    balance,
    heuristic_label,
    load_precomputed,
    random_labels,
    vote_labels,
)

#: ``targets`` -> the LoRA target modules (Llama/SmolLM names).
TARGETS = {"qkv": ("q_proj", "k_proj", "v_proj"), "gud": ("gate_proj", "up_proj", "down_proj"),
           "qkvgud": ("q_proj", "k_proj", "v_proj", "gate_proj", "up_proj", "down_proj")}
PARTITIONS = ("importance", "random", "none")
INITS = ("normal", "pissa", "default")
DATA = ("system1", "system2", "all")


@dataclass(frozen=True)
class LoraParConfig:
    """LoRA-PAR's settings; defaults from METHODS.md §4.2 [code unless noted]."""

    r: int = 8
    """LoRA rank."""
    alpha: float = 64.0
    """lora_alpha (scale 8)."""
    dropout: float = 0.05
    """Training dropout (the example sets it too late to act; 0.05 explicitly) [derived]."""
    targets: str = "qkvgud"
    """qkv | gud | qkvgud (q,k,v,gate,up,down; Llama/Qwen/SmolLM module names)."""
    target_modules: tuple[str, ...] | None = None
    """Module names to adapt instead of ``targets`` (another architecture's names, e.g. ``c_attn``)."""
    init: str = "normal"
    """normal: A and B from N(0, 0.01) (LoRA(θ)); pissa: peft's PiSSA init (PiSSA(θ)); default: peft's
    (B = 0; only with ``partition: none``, since every importance is then zero)."""
    partition: str = "importance"
    """importance | random (same sizes, the "Rand." control) | none (every element, LoRA+RL)."""
    importance: str = "taylor2"
    """taylor2 (the authors' code) | grad_fisher (the paper's formula)."""
    importance_samples: int = 100
    """Items per system the importance is averaged over (batch 1)."""
    theta: float = 0.9
    """Cumulative importance share kept per system, in (0, 1]."""
    shared_alpha: float = 1.0
    """α: share of the shared elements trained in stage 1, in [0, 1]."""
    shared_beta: float = 1.0
    """β: share of the shared elements trained in stage 2, in [0, 1]."""
    classifier: str = "heuristic"
    """heuristic | precomputed | vote | random (METHODS.md §4.1 step 1)."""
    heuristic_min_steps: int = 3
    """heuristic: reasoning steps that make an item System 2 (METHODS.md §4.1 (c))."""
    heuristic_min_operations: int = 2
    """heuristic: operations that make an item System 2. METHODS.md's 3 / 2 label 0.2 % of GSM8K
    train System 1 (15 of 7,473); 5 / 4 label 54.9 % (measured), which the GSM8K suites use."""
    classifier_file: str | None = None
    """precomputed: a CSV (question, answer, _result) or JSONL file."""
    voters: tuple[str, ...] = ("smollm2",)
    """vote: local causal LMs (harness model names), majority vote, ties -> System2."""
    sft_data: str = "system1"
    """Stage-1 items: system1 | all."""
    rl_data: str = "system2"
    """Stage-2 prompts: system2 | all (the authors' example trains RL on all of GSM8K)."""
    rl: bool = True
    """Run stage 2; false stops after SFT."""
    rl_max_prompts: int | None = None
    """Cap on RL prompts (seeded subsample); None: all of ``rl_data``."""
    rl_lr: float = 5e-6
    """GRPO learning rate (AdamW, betas 0.9 / 0.99, cosine schedule)."""
    rl_weight_decay: float = 0.1
    """GRPO weight decay (it cannot move frozen elements: they are put back after every step)."""
    rl_batch_size: int = 8
    """Completions per device step (a multiple of ``num_generations``)."""
    rl_grad_accum: int = 4
    """Gradient accumulation steps of GRPO."""
    num_generations: int = 8
    """Completions sampled per prompt (the group of GRPO's advantage)."""
    max_completion_length: int = 256
    """New tokens per completion at most."""
    rl_warmup_ratio: float = 0.1
    """Share of GRPO steps with linear warm-up."""
    rl_max_grad_norm: float = 0.1
    """Gradient clipping norm of GRPO."""
    rl_temperature: float = 1.0
    """Sampling temperature of the completions."""
    rl_epochs: int = 1
    """Passes over the RL prompts."""
    beta: float | None = None
    """KL coefficient; None: TRL's default (0.0 in the pinned TRL 1.16; recorded)."""

    def __post_init__(self) -> None:
        _choice(self.targets, tuple(TARGETS), "targets")
        _choice(self.init, INITS, "init")
        _choice(self.partition, PARTITIONS, "partition")
        _choice(self.importance, ("taylor2", "grad_fisher"), "importance")
        _choice(self.classifier, CLASSIFIERS, "classifier")
        _choice(self.sft_data, ("system1", "all"), "sft_data")
        _choice(self.rl_data, ("system2", "all"), "rl_data")
        if not 0.0 < self.theta <= 1.0:
            raise ValueError(f"Invalid theta: {self.theta} (must be in (0, 1])")
        for name in ("shared_alpha", "shared_beta"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"Invalid {name}: {getattr(self, name)} (must be in [0, 1])")
        if self.init == "default" and self.partition != "none":
            raise ValueError("init 'default' (B = 0) gives zero importance everywhere; use init 'normal' to partition")
        if self.classifier == "precomputed" and not self.classifier_file:
            raise ValueError("classifier 'precomputed' needs classifier_file")
        if self.r < 1 or self.importance_samples < 1 or self.num_generations < 2:
            raise ValueError("r and importance_samples must be >= 1, num_generations >= 2")
        if self.rl_batch_size % self.num_generations:
            raise ValueError(f"rl_batch_size {self.rl_batch_size} must be a multiple of num_generations "
                             f"{self.num_generations}")

    def rl_settings(self) -> RlSettings:
        """The GRPO hyperparameters."""
        return RlSettings(lr=self.rl_lr, weight_decay=self.rl_weight_decay, batch_size=self.rl_batch_size,
                          grad_accum=self.rl_grad_accum, num_generations=self.num_generations,
                          max_completion_length=self.max_completion_length, warmup_ratio=self.rl_warmup_ratio,
                          max_grad_norm=self.rl_max_grad_norm, temperature=self.rl_temperature, beta=self.beta,
                          epochs=self.rl_epochs)


def _choice(value: str, options: tuple[str, ...], what: str) -> None:
    if value not in options:
        raise ValueError(f"Invalid {what}: {value!r}; expected one of {', '.join(options)}")


def _sample(index: np.ndarray, n: int, seed: int) -> np.ndarray:
    """A seeded subsample of ``n`` positions of ``index`` (all of it when smaller), sorted."""
    if len(index) <= n:
        return index
    return np.sort(np.random.default_rng(seed).choice(index, size=n, replace=False))


def _adapter_state(model: nn.Module, initial: Any, ctx: FitContext) -> dict[str, Any]:
    """The adapter's state now, as the evaluated model will hold it (a PiSSA adapter converted to a W0 delta)."""
    from peft import get_peft_model_state_dict

    if initial is None:
        return {k: v.detach().clone() for k, v in get_peft_model_state_dict(model).items()}
    converted = load_converted(model, initial, ctx.new_model)
    return {k: v.detach().clone() for k, v in get_peft_model_state_dict(converted).items()}


def _all_elements(model: nn.Module) -> Partition:
    params = lora_parameters(model)
    sizes = [int(p.numel()) for p in params.values()]
    every = np.ones(sum(sizes), dtype=bool)
    return Partition(s1=every, s2=every, s1only=~every, s2only=~every, shared=every, stage1=every, stage2=every,
                     names=tuple(params), shapes=tuple(tuple(p.shape) for p in params.values()))


def classify(config: LoraParConfig, ctx: FitContext) -> SystemSplit:
    """Step 1: the System-1/System-2 label of every training item, by the configured classifier."""
    questions, answers = list(ctx.train_texts), list(ctx.train_answers)
    if len(questions) != len(ctx.train) or len(answers) != len(ctx.train):
        raise CellError("lora-par needs the training questions and answers (a generation task)")
    per_voter: list[list[str]] = []
    if config.classifier == "heuristic":
        labels = [heuristic_label(a, min_steps=config.heuristic_min_steps,
                                  min_operations=config.heuristic_min_operations) for a in answers]
        source = f"heuristic(steps>={config.heuristic_min_steps}, operations>={config.heuristic_min_operations})"
    elif config.classifier == "precomputed":
        labels = load_precomputed(Path(str(config.classifier_file)), questions)
        source = f"precomputed:{config.classifier_file}"
    elif config.classifier == "random":
        labels, source = random_labels(len(questions), ctx.seed), "random"
    else:
        voters = [(causal_base(name, ctx.precision).new().to(ctx.device).eval(), load_causal_tokenizer(name))
                  for name in config.voters]
        labels, per_voter = vote_labels(voters, questions, answers, device=ctx.device)
        source = "vote:" + ",".join(config.voters)
    return SystemSplit(labels=tuple(labels), source=source, balance=balance(labels), agreement=agreement(per_voter))


@register_method("lora-par", config=LoraParConfig, version="1", kinds=("generation",))
class LoraParAdapter:
    """System-1/System-2 split, importance partition of one LoRA, SFT then GRPO."""

    def __init__(self, config: LoraParConfig) -> None:
        self.config = config
        self.last_partition: Partition | None = None
        """The partition of the last ``fit`` (masks per stage), for inspection."""

    def _model(self, ctx: FitContext) -> nn.Module:
        c = self.config
        extra = {"init_lora_weights": "pissa"} if c.init == "pissa" else {}
        model = wrap_causal_lora(ctx.new_model(), r=c.r, alpha=c.alpha, dropout=c.dropout,
                                 target_modules=c.target_modules or TARGETS[c.targets], **extra)
        if c.init == "normal":
            reinit_normal(model, std=0.01, seed=ctx.seed)
        return model

    def _partition(self, model: nn.Module, ctx: FitContext, split: SystemSplit) -> tuple[Partition, dict[str, Any]]:
        c = self.config
        if c.partition == "none":
            return _all_elements(model), {}
        data = sft_data(ctx)
        kw = {"kind": c.importance, "device": ctx.device, "precision": ctx.precision,
              "pad_id": ctx.tokenizer.pad_token_id}
        scores = []
        for system, index in (("system1", split.system1_index()), ("system2", split.system2_index())):
            chosen = _sample(index, c.importance_samples, ctx.seed)
            per_element = importance(model, data, chosen, **kw)
            scores.append((system, per_element))
        flat = [flat_scores(s) for _, s in scores]
        params = lora_parameters(model)
        found = partition(flat[0], flat[1], theta=c.theta, alpha=c.shared_alpha, beta=c.shared_beta,
                          names=tuple(params), shapes=tuple(tuple(p.shape) for p in params.values()))
        if c.partition == "random":
            found = random_partition(found, seed=ctx.seed)
        return found, {f"importance_{name}": breakdown(s) for name, s in scores}

    def fit(self, ctx: FitContext) -> CausalFitted:
        """Split, score, partition, SFT, GRPO; diagnostics carry every §4.3 figure."""
        c = self.config
        split = classify(c, ctx)
        split.check()
        model = self._model(ctx)
        initial = save_initial(model) if c.init == "pissa" else None  # PiSSA rewrites W0: convert at the end
        found, importances = self._partition(model, ctx, split)
        self.last_partition, stats = found, found.stats()
        if stats["stage1_active"] == 0 or (c.rl and stats["stage2_active"] == 0):
            raise CellError(f"lora-par: a stage has no trainable element at theta {c.theta} "
                            f"(stage 1: {stats['stage1_active']}, stage 2: {stats['stage2_active']})")
        sft_index = self._sft(model, ctx, split, found)
        diagnostics: dict[str, Any] = {
            "systems": {"source": split.source, "balance": split.balance, "agreement": split.agreement},
            "partition": {**stats, "kind": c.partition, "importance": c.importance, "theta": c.theta, "init": c.init},
            **importances, "sft_items": int(len(sft_index)), "frozen_unchanged_sft": True,
        }
        checkpoints = {}
        if c.rl:
            checkpoints["sft"] = _adapter_state(model, initial, ctx)
            diagnostics["rl"] = self._rl(model, ctx, split, found)
        if initial is not None:
            with initial:
                model = load_converted(model, initial, ctx.new_model).to(ctx.device)
        model.eval()
        return CausalFitted(model, ctx.tokenizer, ctx.device, ctx.precision, diagnostics=diagnostics,
                            trained_parameters=int(stats["trained"] if c.rl else stats["stage1_active"]),
                            checkpoints=checkpoints)

    def _sft(self, model: nn.Module, ctx: FitContext, split: SystemSplit, found: Partition) -> np.ndarray:
        """Stage 1 on the System-1 items (or all) with only the stage-1 elements trainable."""
        keeper = MaskKeeper(found.masks(1)).register(model)
        index = split.system1_index() if self.config.sft_data == "system1" else np.arange(len(ctx.train))
        try:
            train_causal(ctx, model, index=index, after_step=keeper.restore)
        finally:
            keeper.remove()
        if not keeper.frozen_unchanged():
            raise CellError("lora-par: a frozen LoRA element moved during SFT")
        return index

    def _rl(self, model: nn.Module, ctx: FitContext, split: SystemSplit, found: Partition) -> dict[str, Any]:
        c = self.config
        index = split.system2_index() if c.rl_data == "system2" else np.arange(len(ctx.train))
        if c.rl_max_prompts is not None:
            index = _sample(index, c.rl_max_prompts, ctx.seed)
        if len(index) == 0:
            raise CellError("lora-par: no System-2 items for the RL stage (rl_data: system2)")
        keeper = MaskKeeper(found.masks(2))
        provenance = run_grpo(model, ctx, questions=[ctx.train_texts[i] for i in index],
                              answers=[ctx.train_answers[i] for i in index], keeper=keeper,
                              settings=c.rl_settings())
        return {**provenance, "settings": asdict(c.rl_settings()), "frozen_unchanged_rl": True}

    def load(self, ctx: FitContext, directory: Path) -> CausalFitted:
        """Load the saved adapter (every element, frozen ones at their initial values) onto a fresh base."""
        if ctx.kind != "generation":
            raise BenchError("lora-par trains causal LMs only (a generation task)")
        return load_causal(ctx, directory)
