"""Executing one generation cell in process: SFT data, causal base, fit, lm-eval, reload check, record.

The runner hands every cell whose task is a :class:`~bench.spec.generation.GenerationTaskSpec`
here. The record has the classification record's shape: metrics are flat,
``<eval name>_<metric>`` (``gsm8k_exact_match_strict_match``, ``mmlu_5shot_acc``,
``mmlu_5shot_ece``, ``humaneval_pass_at_1``), efficiency adds ``eval_<name>_wall_s`` per
evaluation and generation throughput, and diagnostics hold lm-eval's version, the task configs'
hash and, for HumanEval, the count of each sandbox outcome. HumanEval evaluations run through
:mod:`bench.evaluate.code`, and only when the run opted in to code execution.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.kinds import classification as execute
from bench.sdk.causal import CausalFitted, reload_check
from bench.models.causal import causal_base, load_causal_tokenizer
from bench.spec.cells import Cell
from bench.spec.config import build
from bench.data.tokens import Encoded
from bench.run.env import environment
from bench.errors import CellError, failure_text
from bench.evaluate.code import CodeExecution, evaluate_humaneval
from bench.evaluate.generation import evaluate_model, per_item
from bench.spec.generation import EvalSpec, GenerationTaskSpec, HumanEvalSpec
from bench.sdk.method import FitContext
from bench.run.profile import Phase, overall_peaks, train_figures
from bench.results.record import make_record, now
from bench.sdk.registry import get_method
from bench.data.sft import Pairs, SftData, encode_pairs, load_pairs
from bench.sdk.train import resolve_precision

#: Validation items the reload check compares next-token probabilities on.
RELOAD_ITEMS = 2
#: Per-eval figures that describe the evaluation rather than score the model (kept in diagnostics).
EVAL_INFO = ("n_items", "num_fewshot", "n_samples")


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
    """What :func:`setup` prepared for a generation cell."""

    task: GenerationTaskSpec
    train: SftData
    val: SftData
    ctx: FitContext
    method: Any


def setup(cell: Cell, data_dir: Path, log: Any, progress: Any) -> GenerationSetup:
    """Load the SFT data and the causal base; build the method and its FitContext."""
    task = cell.task
    if not isinstance(task, GenerationTaskSpec):
        raise CellError(f"{task.name}: not a generation task")
    train, val = _encoded(task, data_dir, cell.model)
    device = execute.device_for(cell)
    precision = resolve_precision(cell.train.precision, device)
    base = causal_base(cell.model, precision)
    entry = get_method(cell.method.method)
    method = entry.adapter(build(entry.config, cell.method.config, f"methods.{cell.method.id}.config"))
    train_pairs = _pairs(task, data_dir)[0]
    prompts = dict(zip(train_pairs.ids.tolist(), train_pairs.prompts, strict=True))
    ctx = FitContext(
        task=task.name, kind="generation", label_names=[], new_model=lambda: base.new().to(device),
        tokenizer=load_causal_tokenizer(cell.model), train=_as_encoded(train), val=_as_encoded(val),
        train_config=cell.train, seed=cell.seed, device=device, precision=precision, log=log, progress=progress,
        train_texts=tuple(prompts[int(i)] for i in train.ids), train_targets=tuple(train.target_masks),
        val_targets=tuple(val.target_masks),
    )
    return GenerationSetup(task, train, val, ctx, method)


def _flatten(evals: dict[str, dict[str, float]]) -> tuple[dict[str, float], dict[str, Any]]:
    metrics, info = {}, {}
    for name, values in evals.items():
        info[name] = {k: v for k, v in values.items() if k in EVAL_INFO}
        metrics.update({f"{name}_{k}": v for k, v in values.items() if k not in EVAL_INFO})
    return metrics, info


def _evaluate(s: GenerationSetup, fitted: CausalFitted, data_dir: Path,
              execution: CodeExecution) -> tuple[dict[str, Any], ...]:
    lm_evals = [e for e in s.task.evals if isinstance(e, EvalSpec)]
    code_evals = [e for e in s.task.evals if isinstance(e, HumanEvalSpec)]
    evals: dict[str, dict[str, float]] = {}
    efficiency: dict[str, Any] = {}
    diagnostics: dict[str, Any] = {"n_truncated": s.train.n_truncated}
    method_own, _ = execute.split_diagnostics(fitted.diagnostics)
    if method_own:  # e.g. ba-lora's step-0 checks, lora-dropout's ensemble size and mask sparsity
        diagnostics["method"] = method_own
    arrays: dict[str, Any] = {}
    reasons: dict[str, dict[str, int]] = {}
    gen_tokens, gen_s = 0.0, 0.0
    with Phase("eval", s.ctx.device) as phase:
        with torch.no_grad():
            if lm_evals:
                result = evaluate_model(fitted.model, fitted.tokenizer, lm_evals, data_dir,
                                        quiet=s.ctx.progress is None)
                evals.update(result["evals"])
                efficiency.update(result["efficiency"])
                diagnostics["lm_eval"] = result["lm_eval"]
                for spec in lm_evals:
                    arrays.update(per_item(result["results"][spec.name], spec))
                gen_tokens = efficiency.get("gen_tokens", 0.0)
                gen_s = gen_tokens / efficiency["gen_tokens_per_s"] if gen_tokens else 0.0
            for code_spec in code_evals:
                start = time.perf_counter()
                out = evaluate_humaneval(fitted.model, fitted.tokenizer, code_spec, seed=s.ctx.seed,
                                         execution=execution, progress=s.ctx.progress)
                evals[code_spec.name] = out["metrics"]
                efficiency.update(out["efficiency"], **{f"eval_{code_spec.name}_wall_s": time.perf_counter() - start})
                reasons[code_spec.name] = out["reasons"]
                arrays.update(out["arrays"])
                gen_tokens, gen_s = gen_tokens + out["gen_tokens"], gen_s + out["gen_s"]
    if gen_tokens:
        efficiency.update(gen_tokens=float(gen_tokens), gen_tokens_per_s=gen_tokens / gen_s if gen_s else float("nan"))
    metrics, diagnostics["evals"] = _flatten(evals)
    for name, counts in reasons.items():  # sandbox outcomes of every sample: passed, failed, timeout, ...
        diagnostics["evals"][name]["reasons"] = counts
    return metrics, {**phase.figures, **efficiency}, diagnostics, arrays


def run_generation_cell(cell: Cell, spec: dict[str, Any], rid: str, data_dir: Path, progress: Any,
                        execution: CodeExecution | None = None) -> dict[str, Any]:
    """Execute one generation cell and return its record (success, or failed with the reason).

    ``execution`` carries the run's opt-in to execute model-written code (HumanEval evaluations).
    """
    curves: dict[str, list[Any]] = {}

    def log(row: dict[str, Any]) -> None:
        for key, value in row.items():
            curves.setdefault(key, []).append(value)

    device = execute.device_for(cell)
    common = {"run_id": rid, "spec": spec, "env": environment(str(device)), "started_at": now()}
    efficiency: dict[str, Any] = {}
    try:
        with Phase("setup", device) as phase:
            s = setup(cell, data_dir, log, progress)
        efficiency.update(phase.figures)
        with Phase("train", device) as phase:
            fitted, stats = execute.fit(s)  # type: ignore[arg-type]
        if not isinstance(fitted, CausalFitted):
            raise CellError(f"method '{cell.method.method}' returned {type(fitted).__name__}, not a CausalFitted")
        efficiency.update(phase.figures, **train_figures(stats))
        metrics, eval_figures, diagnostics, arrays = _evaluate(s, fitted, data_dir, execution or CodeExecution())
        efficiency.update(eval_figures)
        items = s.val if len(s.val) else s.train
        items = SftData(items.input_ids[:RELOAD_ITEMS], items.target_masks[:RELOAD_ITEMS], items.ids[:RELOAD_ITEMS])
        with Phase("reload", device) as phase:
            reload = reload_check(fitted, lambda folder: s.method.load(s.ctx, folder), items)
        efficiency.update(phase.figures, adapter_bytes=reload["adapter_bytes"],
                          trainable_params=fitted.trainable_parameters(), total_params=fitted.total_parameters())
        metrics["reload_max_abs_diff"] = reload["reload_max_abs_diff"]
        efficiency.update(overall_peaks(efficiency))
        record = make_record(**common, metrics=metrics, efficiency=efficiency, status="success", curves=curves,
                             diagnostics=diagnostics, finished_at=now())
        record["_predictions"] = arrays
        return record
    except Exception as err:  # a bug in a method must not stop the suite or lose other results
        error = failure_text(err)
    return make_record(**common, efficiency=efficiency, status="failed", error=error, curves=curves,
                       finished_at=now())


def summary_line(metrics: dict[str, Any]) -> str:
    """The runner's one-line result of a generation cell: every evaluation's headline metrics."""
    keys = [k for k in metrics if k.endswith(("_exact_match_strict_match", "_exact_match_flexible_extract",
                                              "_acc", "_ece")) or "_pass_at_" in k]
    return ", ".join(f"{k} {100 * metrics[k]:.2f}%" for k in keys) or "no metrics"
