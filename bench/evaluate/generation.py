"""Scoring a causal LM with lm-eval in process: ``HFLM(pretrained=model)`` on resolved local task YAMLs.

Each evaluation of a suite (a task at one n-shot setting) is one ``lm_eval.simple_evaluate``
call, so its wall time is its own. Metrics are lm-eval's, renamed ``<metric>`` (filter
``none``) or ``<metric>_<filter>`` (``exact_match_strict_match``); multiple-choice tasks add
calibration over the choice probabilities: the softmax of the per-choice loglikelihoods that
lm-eval logged for each sample (``log_samples=True``), scored with
:mod:`bench.metrics.calibration` (ECE with 15 equal-width bins on the max probability, Brier,
NLL). Generation throughput counts the new, non-pad tokens of every ``generate`` call.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from bench.evaluate.bias_probes import probe_items, probe_metrics, probe_of
from bench.evaluate.classification import ECE_BINS
from bench.evaluate.lm_tasks import configs_hash, count_test_items, resolve_tasks, subsample
from bench.metrics.calibration import brier_score, expected_calibration_error, negative_log_likelihood
from bench.spec.generation import EvalSpec

#: ``simple_evaluate`` seeds (lm-eval's defaults, written out so that they are part of the record).
LM_EVAL_SEEDS = {"random_seed": 0, "numpy_random_seed": 1234, "torch_random_seed": 1234,
                 "fewshot_random_seed": 1234}
#: dtype of lm-eval's log-softmax over the vocabulary (HFLM ``softmax_dtype``).
SOFTMAX_DTYPE = "float32"


@dataclass
class GenerationMeter:
    """Counts new (non-pad) tokens and seconds spent in ``generate``."""

    tokens: int = 0
    seconds: float = 0.0

    def attach(self, lm: Any) -> None:
        """Wrap ``lm._model_generate`` (HFLM's one call into ``model.generate``)."""
        inner = lm._model_generate
        pad = lm.tokenizer.pad_token_id

        def measured(context: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
            start = time.perf_counter()
            out: torch.Tensor = inner(context, *args, **kwargs)
            self.seconds += time.perf_counter() - start
            self.tokens += int((out[:, context.shape[1]:] != pad).sum())
            return out

        lm._model_generate = measured

    @property
    def tokens_per_s(self) -> float:
        """New tokens per second of ``generate`` (nan before any generation)."""
        return self.tokens / self.seconds if self.seconds > 0 else float("nan")


def lm_eval_version() -> str:
    """The installed lm-eval version."""
    from importlib.metadata import version

    return version("lm-eval")


def make_lm(model: Any, tokenizer: Any, *, batch_size: int, quiet: bool = False) -> Any:
    """An ``HFLM`` over an in-memory model (a peft model included).

    No autocast: the model computes in its own dtype (bf16 weights for bf16 precision), as it
    does when lm-eval loads the same weights itself, so the two give the same numbers. The
    log-softmax over the vocabulary is taken in fp32 (``softmax_dtype``): in bf16 the choice
    loglikelihoods come out rounded to a few bits (-2.25, -7.0625), which ties choices and
    coarsens the probabilities that ECE is computed from. ``quiet`` turns off lm-eval's
    per-request progress bars.
    """
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, softmax_dtype=SOFTMAX_DTYPE)
    if quiet:
        for name in ("loglikelihood", "loglikelihood_rolling", "generate_until"):
            setattr(lm, name, partial(getattr(lm, name), disable_tqdm=True))
    return lm


def choice_probabilities(samples: Sequence[dict[str, Any]]) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """(probabilities ``[n, K]``, gold indices) from lm-eval's logged multiple-choice samples.

    ``filtered_resps`` holds one ``(loglikelihood, is_greedy)`` per choice; the probabilities
    are their softmax over the choices (the model's distribution restricted to the choices).
    """
    logliks = np.asarray([[float(r[0]) for r in s["filtered_resps"]] for s in samples], dtype=np.float64)
    gold = np.asarray([int(s["target"]) for s in samples], dtype=np.int64)
    if logliks.size == 0:
        return np.zeros((0, 0)), gold
    z = np.exp(logliks - logliks.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True), gold


def calibration(samples: Sequence[dict[str, Any]]) -> dict[str, float]:
    """ECE (15 equal-width bins), Brier and NLL over the choice probabilities, and their argmax accuracy."""
    probs, gold = choice_probabilities(samples)
    if gold.size == 0:
        return {}
    return {"ece": expected_calibration_error(probs, gold, n_bins=ECE_BINS), "brier": brier_score(probs, gold),
            "nll": negative_log_likelihood(probs, gold), "acc_choice_probs": float((probs.argmax(1) == gold).mean())}


def task_metrics(results: dict[str, Any], task: str) -> dict[str, float]:
    """lm-eval's metrics of one task, renamed; standard errors are left out.

    ``acc,none`` becomes ``acc``, ``exact_match,strict-match`` becomes ``exact_match_strict_match``.
    """
    out = {}
    for key, value in results["results"][task].items():
        if "," not in key or "_stderr" in key or not isinstance(value, (int, float)):
            continue
        metric, filt = key.split(",", 1)
        out[metric if filt == "none" else f"{metric}_{filt.replace('-', '_')}"] = float(value)
    return out


def simple_evaluate(lm: Any, spec: EvalSpec, tasks_dir: Path, indices: NDArray[np.int64] | None) -> dict[str, Any]:
    """One ``lm_eval.simple_evaluate`` call for ``spec`` on the resolved task folder (samples logged)."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=str(tasks_dir), include_defaults=False)
    gen_kwargs = {"max_gen_toks": spec.max_gen_toks} if spec.max_gen_toks else None
    samples = {spec.task: [int(i) for i in indices]} if indices is not None else None
    result = lm_eval.simple_evaluate(
        model=lm, tasks=[spec.task], num_fewshot=spec.num_fewshot, samples=samples, task_manager=manager,
        log_samples=True, gen_kwargs=gen_kwargs, apply_chat_template=spec.apply_chat_template,
        fewshot_as_multiturn=spec.apply_chat_template, bootstrap_iters=0, **LM_EVAL_SEEDS)
    if result is None:
        raise RuntimeError("lm_eval.simple_evaluate returned no result")
    return dict(result)


def score(result: dict[str, Any], spec: EvalSpec) -> dict[str, Any]:
    """The record metrics of one evaluation: lm-eval's, plus calibration for multiple-choice tasks.

    A bias probe's metrics are the probe's own (:mod:`bench.metrics.bias`), computed from the
    logged option loglikelihoods; ``probe`` names it.
    """
    samples = result.get("samples", {}).get(spec.task, [])
    probe = probe_of(result["configs"][spec.task])
    if probe is not None:
        metrics: dict[str, Any] = {**probe_metrics(probe, probe_items(probe, samples)), "probe": probe}
    else:
        metrics = dict(task_metrics(result, spec.task))
        if result["configs"][spec.task].get("output_type") == "multiple_choice":
            metrics.update(calibration(samples))
    metrics["n_items"] = float(len({s["doc_id"] for s in samples}))
    metrics["num_fewshot"] = float(result.get("n-shot", {}).get(spec.task, 0))
    return metrics


def per_item(result: dict[str, Any], spec: EvalSpec) -> dict[str, NDArray[Any]]:
    """Per-item arrays of one evaluation, for paired comparisons.

    Doc ids, each metric per filter, and the choice probabilities of multiple-choice tasks; for a
    bias probe, the probe's item arrays (:func:`bench.evaluate.bias_probes.probe_items`) and
    ``<name>_probe`` (the probe's name).
    """
    samples = result.get("samples", {}).get(spec.task, [])
    probe = probe_of(result["configs"][spec.task])
    if probe is not None:
        items = probe_items(probe, samples)
        return {**{f"{spec.name}_{k}": v for k, v in items.items()}, f"{spec.name}_probe": np.asarray([probe])}
    out: dict[str, NDArray[Any]] = {}
    for filt in dict.fromkeys(s.get("filter", "none") for s in samples):
        rows = sorted((s for s in samples if s.get("filter", "none") == filt), key=lambda s: int(s["doc_id"]))
        suffix = "" if filt == "none" else f"_{filt.replace('-', '_')}"
        out[f"{spec.name}_doc_id"] = np.asarray([int(s["doc_id"]) for s in rows], dtype=np.int64)
        for metric in rows[0].get("metrics", []) if rows else []:
            out[f"{spec.name}_{metric}{suffix}"] = np.asarray([float(s[metric]) for s in rows], dtype=np.float32)
        if result["configs"][spec.task].get("output_type") == "multiple_choice":
            out[f"{spec.name}_probs"] = choice_probabilities(rows)[0].astype(np.float32)
    return out


def evaluate_model(model: Any, tokenizer: Any, evals: Sequence[EvalSpec], data_dir: Path, *,
                   templates: Path | None = None, quiet: bool = False) -> dict[str, Any]:
    """Run every evaluation on ``model``; return per-eval metrics, timings and provenance.

    Returns:
        ``{"evals": {name: metrics}, "efficiency": {...}, "lm_eval": {"version", "tasks_hash",
        "tasks_dir"}, "results": {name: simple_evaluate result}}``. Efficiency holds
        ``eval_<name>_wall_s`` per evaluation and, where something was generated,
        ``gen_tokens`` and ``gen_tokens_per_s``.
    """
    logging.getLogger("lm_eval").setLevel(logging.ERROR)  # its per-call notes ("Overwriting num_fewshot")
    names = [e.task for e in evals]
    tasks_dir = resolve_tasks(names, data_dir, folder=templates)
    meter, out, raw = GenerationMeter(), {}, {}
    efficiency: dict[str, float] = {}
    for spec in evals:
        lm = make_lm(model, tokenizer, batch_size=spec.batch_size, quiet=quiet)
        meter.attach(lm)
        indices = subsample(count_test_items(spec.task, data_dir, templates), spec.max_items)
        start = time.perf_counter()
        raw[spec.name] = simple_evaluate(lm, spec, tasks_dir, indices)
        efficiency[f"eval_{spec.name}_wall_s"] = time.perf_counter() - start
        out[spec.name] = score(raw[spec.name], spec)
    if meter.tokens:
        efficiency.update(gen_tokens=float(meter.tokens), gen_tokens_per_s=meter.tokens_per_s)
    provenance = {"version": lm_eval_version(), "tasks_hash": configs_hash(names, templates),
                  "tasks_dir": str(tasks_dir)}
    return {"evals": out, "efficiency": efficiency, "lm_eval": provenance, "results": raw}
