"""The generation kind: SFT of a causal LM, scored by lm-eval tasks and HumanEval.

Metrics are flat, ``<eval name>_<metric>`` (``gsm8k_exact_match_strict_match``,
``mmlu_5shot_acc``, ``mmlu_5shot_ece``, ``humaneval_pass_at_1``); efficiency adds
``eval_<name>_wall_s`` per evaluation and generation throughput; diagnostics hold lm-eval's
version, the task configs' hash and, for HumanEval, the count of each sandbox outcome.
HumanEval evaluations run through :mod:`bench.evaluate.code`, and only when the run opted in
to code execution.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from bench.data.sft import Pairs, SftData, encode_pairs, load_pairs
from bench.data.tokens import Encoded
from bench.errors import BenchError, CellError
from bench.evaluate.code import CodeExecution, evaluate_humaneval
from bench.evaluate.generation import evaluate_model, per_item
from bench.evaluate.lm_tasks import resolve_generation_task
from bench.kinds.base import Evaluation, Log, split_diagnostics
from bench.models.causal import causal_base, check_causal_model, load_causal_tokenizer
from bench.models.device import default_device
from bench.models.encoder import is_encoder
from bench.run.profile import Phase
from bench.sdk.causal import CausalFitted, reload_check
from bench.sdk.loop import resolve_precision
from bench.sdk.method import FitContext, Fitted, Method
from bench.sdk.registry import MethodEntry
from bench.spec.cells import ResolvedCell
from bench.spec.generation import EvalSpec, GenerationTaskSpec, HumanEvalSpec

#: Validation items the reload check compares next-token probabilities on.
RELOAD_ITEMS = 2
#: Per-eval figures that describe the evaluation rather than score the model (kept in diagnostics).
EVAL_INFO = ("n_items", "num_fewshot", "n_samples", "probe")
#: Metric names shown in the runner's per-cell line.
HEADLINE_SUFFIXES = ("_exact_match_strict_match", "_exact_match_flexible_extract", "_acc", "_ece")


@lru_cache(maxsize=4)
def _pairs(spec: GenerationTaskSpec, data_dir: Path) -> tuple[Pairs, Pairs]:
    return load_pairs(spec, data_dir)


@lru_cache(maxsize=4)
def _encoded(spec: GenerationTaskSpec, data_dir: Path, model: str) -> tuple[SftData, SftData]:
    tokenizer = load_causal_tokenizer(model)
    return tuple(encode_pairs(p, tokenizer, max_length=spec.max_length, chat=spec.chat_template,  # type: ignore[return-value]
                              system=spec.system_prompt) for p in _pairs(spec, data_dir))


def _as_encoded(data: SftData) -> Encoded:
    return Encoded(data.input_ids, np.zeros(len(data), np.int64), data.ids)


@dataclass
class GenerationSetup:
    """What :meth:`Generation.setup` prepared for a generation cell."""

    task: GenerationTaskSpec
    train: SftData
    val: SftData
    ctx: FitContext
    method: Method
    noise: dict[str, Any] = field(default_factory=dict)
    """Generation tasks take no label noise."""


def _flatten(evals: dict[str, dict[str, float]]) -> tuple[dict[str, float], dict[str, Any]]:
    metrics, info = {}, {}
    for name, values in evals.items():
        info[name] = {k: v for k, v in values.items() if k in EVAL_INFO}
        metrics.update({f"{name}_{k}": v for k, v in values.items() if k not in EVAL_INFO})
    return metrics, info


@dataclass
class _Scores:
    """What the evaluations of one fitted model gathered."""

    evals: dict[str, dict[str, float]] = field(default_factory=dict)
    efficiency: dict[str, Any] = field(default_factory=dict)
    diagnostics: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, Any] = field(default_factory=dict)
    reasons: dict[str, dict[str, int]] = field(default_factory=dict)
    gen_tokens: float = 0.0
    gen_s: float = 0.0


def _lm_eval(s: GenerationSetup, fitted: CausalFitted, data_dir: Path, out: _Scores) -> None:
    specs = [e for e in s.task.evals if isinstance(e, EvalSpec)]
    if not specs:
        return
    result = evaluate_model(fitted.model, fitted.tokenizer, specs, data_dir, quiet=s.ctx.progress is None)
    out.evals.update(result["evals"])
    out.efficiency.update(result["efficiency"])
    out.diagnostics["lm_eval"] = result["lm_eval"]
    for spec in specs:
        out.arrays.update(per_item(result["results"][spec.name], spec))
    out.gen_tokens = out.efficiency.get("gen_tokens", 0.0)
    out.gen_s = out.gen_tokens / out.efficiency["gen_tokens_per_s"] if out.gen_tokens else 0.0


def _humaneval(s: GenerationSetup, fitted: CausalFitted, execution: CodeExecution, out: _Scores) -> None:
    for spec in (e for e in s.task.evals if isinstance(e, HumanEvalSpec)):
        start = time.perf_counter()
        result = evaluate_humaneval(fitted.model, fitted.tokenizer, spec, seed=s.ctx.seed, execution=execution,
                                    progress=s.ctx.progress)
        out.evals[spec.name] = result["metrics"]
        out.efficiency.update(result["efficiency"], **{f"eval_{spec.name}_wall_s": time.perf_counter() - start})
        out.reasons[spec.name] = result["reasons"]
        out.arrays.update(result["arrays"])
        out.gen_tokens, out.gen_s = out.gen_tokens + result["gen_tokens"], out.gen_s + result["gen_s"]


def _score(s: GenerationSetup, fitted: CausalFitted, data_dir: Path, execution: CodeExecution, out: _Scores) -> None:
    """Every evaluation of the task (lm-eval tasks, then HumanEval) on ``fitted``'s current adapter."""
    with torch.no_grad():
        _lm_eval(s, fitted, data_dir, out)
        _humaneval(s, fitted, execution, out)


def _stages(setup: GenerationSetup, fitted: CausalFitted, data_dir: Path, execution: CodeExecution,
            efficiency: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Every evaluation of the task on each earlier stage's adapter (``fitted.checkpoints``)."""
    from peft import get_peft_model_state_dict, set_peft_model_state_dict

    final = {k: v.detach().clone() for k, v in get_peft_model_state_dict(fitted.model).items()}
    stages = {}
    try:
        for name, state in fitted.checkpoints.items():
            set_peft_model_state_dict(fitted.model, state)
            start, out = time.perf_counter(), _Scores()
            _score(setup, fitted, data_dir, execution, out)
            stages[name] = _flatten(out.evals)[0]
            efficiency[f"eval_stage_{name}_wall_s"] = time.perf_counter() - start
    finally:
        set_peft_model_state_dict(fitted.model, final)
    return stages


class Generation:
    """The generation :class:`~bench.kinds.base.TaskKind`."""

    name = "generation"

    def resolve_task(self, task: Any, method: MethodEntry, data_dir: Path, *, model: str) -> dict[str, Any]:
        """Data digests and the lm-eval task configs' hash; the method and the model must be causal LMs."""
        if is_encoder(model):
            raise BenchError(f"task '{task.name}' is a generation task (SFT, lm-eval evaluations, bias probes) and "
                             f"needs a causal LM; model '{model}' is an encoder classifier (use e.g. model: smollm2)")
        check_causal_model(model)
        resolved = resolve_generation_task(task, method, data_dir)
        _pairs(task, data_dir)  # every SFT row in the task's format: bad data fails here, before any cell trains
        return resolved

    def check_noise(self, task: Any, noise: Any, data_dir: Path) -> None:
        """Generation tasks draw no label noise: nothing to check."""

    def setup(self, cell: ResolvedCell, data_dir: Path, log: Log, progress: Any) -> GenerationSetup:
        """Load the SFT data and the causal base; build the method and its FitContext."""
        task, model = cast(GenerationTaskSpec, cell.cell.task), cell.cell.model
        train, val = _encoded(task, data_dir, model)
        device = default_device()
        precision = resolve_precision(cell.cell.train.precision, device)
        base = causal_base(model, precision)
        train_pairs = _pairs(task, data_dir)[0]
        prompts = dict(zip(train_pairs.ids.tolist(), train_pairs.prompts, strict=True))
        answers = dict(zip(train_pairs.ids.tolist(), train_pairs.responses, strict=True))
        ctx = FitContext(
            task=task.name, kind=self.name, label_names=[], new_model=lambda: base.new().to(device),
            tokenizer=load_causal_tokenizer(model), train=_as_encoded(train), val=_as_encoded(val),
            train_config=cell.cell.train, seed=cell.cell.seed, device=device, precision=precision, log=log,
            progress=progress, train_texts=tuple(prompts[int(i)] for i in train.ids),
            train_targets=tuple(train.target_masks), val_targets=tuple(val.target_masks),
            train_answers=tuple(answers[int(i)] for i in train.ids),
        )
        return GenerationSetup(task, train, val, ctx, cell.method.adapter(cell.config))

    def evaluate(self, setup: GenerationSetup, fitted: Fitted, *, data_dir: Path,
                 execution: CodeExecution | None = None) -> Evaluation:
        """Every lm-eval task and HumanEval evaluation of the task, in one timed phase."""
        if not isinstance(fitted, CausalFitted):
            raise CellError(f"method returned {type(fitted).__name__}, not a CausalFitted")
        out = _Scores(diagnostics={"n_truncated": setup.train.n_truncated})
        method_own, _ = split_diagnostics(fitted.diagnostics)
        if method_own:  # e.g. ba-lora's step-0 checks, lora-dropout's ensemble size and mask sparsity
            out.diagnostics["method"] = method_own
        with Phase("eval", setup.ctx.device) as phase:
            _score(setup, fitted, data_dir, execution or CodeExecution(), out)
        if out.gen_tokens:
            out.efficiency.update(gen_tokens=float(out.gen_tokens),
                                  gen_tokens_per_s=out.gen_tokens / out.gen_s if out.gen_s else float("nan"))
        flat, out.diagnostics["evals"] = _flatten(out.evals)
        metrics: dict[str, Any] = dict(flat)
        for name, counts in out.reasons.items():  # sandbox outcomes of every sample: passed, failed, ...
            out.diagnostics["evals"][name]["reasons"] = counts
        efficiency = {**phase.figures, **out.efficiency}
        if fitted.checkpoints:
            metrics["stages"] = _stages(setup, fitted, data_dir, execution or CodeExecution(), efficiency)
        return Evaluation(metrics, efficiency, out.diagnostics, predictions=out.arrays)

    def reload_check(self, setup: GenerationSetup, fitted: Fitted) -> dict[str, float]:
        """Next-token probabilities of a few validation items, before and after a reload."""
        items = setup.val if len(setup.val) else setup.train
        items = SftData(items.input_ids[:RELOAD_ITEMS], items.target_masks[:RELOAD_ITEMS], items.ids[:RELOAD_ITEMS])
        def load(folder: Path) -> CausalFitted:
            return cast(CausalFitted, setup.method.load(setup.ctx, folder))

        return reload_check(cast(CausalFitted, fitted), load, items)

    def summary_line(self, metrics: dict[str, Any]) -> str:
        """Every evaluation's headline metrics."""
        keys = [k for k in metrics if k.endswith(HEADLINE_SUFFIXES) or "_pass_at_" in k]
        return ", ".join(f"{k} {100 * metrics[k]:.2f}%" for k in keys) or "no metrics"


KIND = Generation()
