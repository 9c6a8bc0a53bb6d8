"""The classification kind: noisy-label text classification with an encoder or a causal LM and a fresh head.

Setup loads the task's splits (cached per process), injects the cell's label noise (keeping
the truth mask out of the method's sight) and builds the :class:`FitContext`. Evaluation
scores test-set probabilities (accuracy, macro-F1, calibration), every prediction variant, a
noisy-label detector's selection against the truth mask, its relabels, and the collapse check.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from bench.data.noise import NoiseResult, NoiseSpec, apply_noise, real_noise, resolve_pair_map
from bench.data.task import TaskData, load_task
from bench.data.tokens import Encoded, encode
from bench.errors import BenchError, CellError
from bench.evaluate.classification import (
    classification_metrics,
    collapse_message,
    detection_metrics,
    relabel_metrics,
    selection_curves,
    validation_metrics,
)
from bench.kinds.base import Evaluation, Log, split_diagnostics
from bench.models.classifier import check_classifier, classifier_base, classifier_tokenizer
from bench.models.device import default_device
from bench.run.profile import Phase
from bench.sdk.loop import collate, resolve_precision
from bench.sdk.method import SAMPLE_KEYS, Diagnostics, FitContext, Fitted, Method, VariantPredictor
from bench.sdk.registry import MethodEntry
from bench.sdk.scratch import scratch_prefix
from bench.sdk.targets import targets_used
from bench.spec.cells import ResolvedCell, data_version
from bench.spec.suite import TaskSpec

#: Reload check: the largest |Δp| allowed between the fitted model and its reloaded copy.
RELOAD_TOLERANCE = 1e-5
#: Test items the reload check predicts twice. A save that loses or misplaces a tensor changes
#: every item's probabilities, so 32 tell as much as 256 did; 256 cost 1.8 s of a 23-s smoke cell
#: (lora-dropout's 16-pass ensemble: 21 s) and made most of the harness's overhead (docs/speed.md).
RELOAD_ITEMS = 32


@lru_cache(maxsize=4)
def _task(spec: TaskSpec, data_dir: Path) -> TaskData:
    return load_task(spec, data_dir)


@lru_cache(maxsize=8)
def _encoded(spec: TaskSpec, data_dir: Path, model: str) -> tuple[Encoded, Encoded, Encoded]:
    data, tok = _task(spec, data_dir), classifier_tokenizer(model)
    return tuple(encode(s.texts, s.labels, s.ids, tok, spec.max_length)  # type: ignore[return-value]
                 for s in (data.train, data.val, data.test))


@lru_cache(maxsize=4)
def _features(spec: TaskSpec, data_dir: Path, model: str) -> NDArray[np.float64]:
    """L2-normalised mean-pooled embeddings of the frozen pretrained body (encoder or causal LM; for I-noise)."""
    train = _encoded(spec, data_dir, model)[0]
    cpu = torch.device("cpu")
    full = classifier_base(model, len(_task(spec, data_dir).label_names), device=cpu, precision="fp32").new(0)
    encoder = cast(torch.nn.Module, full.base_model)
    encoder.eval()
    pad = classifier_tokenizer(model).pad_token_id
    out = []
    with torch.no_grad():
        for i in range(0, len(train), 256):
            inputs = collate(train, np.arange(i, min(i + 256, len(train))), pad, cpu)
            hidden = encoder(**inputs).last_hidden_state
            mask = inputs["attention_mask"].unsqueeze(-1).float()
            pooled = (hidden * mask).sum(1) / mask.sum(1)
            out.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
    return np.concatenate(out).astype(np.float64)


@dataclass
class ClassificationSetup:
    """What :meth:`Classification.setup` prepared for a cell."""

    data: TaskData
    train: Encoded
    val: Encoded
    test: Encoded
    noise_result: NoiseResult
    truly_clean: NDArray[np.bool_]
    ctx: FitContext
    method: Method
    reload_model: Callable[[], nn.Module] | None = None
    """What the reload check loads the saved model onto (default ``ctx.new_model``)."""

    @property
    def noise(self) -> dict[str, Any]:
        """The record's ``noise`` section."""
        n = self.noise_result
        block = {"realised_rate": n.realised_rate, "counts": n.counts, "matrix": n.matrix, "info": n.info}
        return block if self.data.imbalance is None else {**block, "imbalance": self.data.imbalance}


def inject_noise(cell: ResolvedCell, data: TaskData, train: Encoded,
                 data_dir: Path) -> tuple[NoiseResult, NDArray[np.bool_]]:
    """The observed training labels under the cell's noise, and the truth mask (True = clean)."""
    task = cast(TaskSpec, cell.cell.task)
    spec: NoiseSpec = cell.noise
    features = _features(task, data_dir, cell.cell.model) if spec.kind == "instance" else None
    result = apply_noise(spec, train.labels, data.n_classes, seed=cell.cell.seed, features=features)
    # real-noise sets: the observed labels are the data's, the truth its gold field
    truly_clean = np.asarray(result.observed == data.train.truth, dtype=bool)
    if task.truth_field is not None:  # the noise block describes the data's own noise, not "none"
        result = real_noise(result, data.train.truth, data.n_classes, f"{task.label_field} vs {task.truth_field}")
    return result, truly_clean


def read_diagnostics(diagnostics: dict[str, Any], n_train: int) -> Diagnostics:
    """The harness-read keys of a method's diagnostics, checked for length.

    Raises:
        CellError: a per-sample array whose length is not the training set's.
    """
    for key in SAMPLE_KEYS:
        value = diagnostics.get(key)
        if value is not None and len(value) != n_train:
            raise CellError(f"the method's diagnostics['{key}'] has {len(value)} entries for {n_train} "
                            "training samples")
    return cast(Diagnostics, diagnostics)


class Classification:
    """The classification :class:`~bench.kinds.base.TaskKind`."""

    name = "classification"

    def resolve_task(self, task: Any, method: MethodEntry, data_dir: Path, *, model: str) -> dict[str, Any]:
        """The data digest of every split file the task reads; with ``imbalance:``, its minority as an index.

        The task's data is loaded and checked here (labels.json, every row's text and label, the
        imbalance), and the model name looked up, so bad data or an unknown model fails
        ``bench validate`` and ``bench run`` before any cell trains. Naming the minority class or
        giving its index is one run id.
        """
        if self.name not in method.kinds:
            raise BenchError(f"method '{method.name}' does not train classifiers (supports: "
                             f"{', '.join(method.kinds)}); task '{task.name}' is a classification task")
        check_classifier(model)
        data = _task(task, data_dir)  # raises BenchError on bad data
        resolved: dict[str, Any] = {"data_version": data_version(task, data_dir)}
        if task.imbalance is not None:
            info = cast(dict[str, Any], data.imbalance)
            resolved["imbalance"] = {"ratio": task.imbalance.ratio, "minority": info["minority"]}
        return resolved

    def check_noise(self, task: Any, noise: NoiseSpec, data_dir: Path) -> None:
        """An asymmetric pair map must fit the task's classes (checked here, not when the cell draws it)."""
        if noise.kind == "asymmetric":
            try:
                resolve_pair_map(noise.pair_map, _task(task, data_dir).n_classes)
            except ValueError as err:
                raise BenchError(f"task '{task.name}', noise {noise.label()}: {err}") from None

    def setup(self, cell: ResolvedCell, data_dir: Path, log: Log, progress: Any) -> ClassificationSetup:
        """Load data, inject noise, build the method and its FitContext."""
        task, model, seed = cast(TaskSpec, cell.cell.task), cell.cell.model, cell.cell.seed
        data = _task(task, data_dir)
        train, val, test = _encoded(task, data_dir, model)
        noise, truly_clean = inject_noise(cell, data, train, data_dir)
        device = default_device()
        precision = resolve_precision(cell.cell.train.precision, device)
        base = classifier_base(model, data.n_classes, device=device, precision=precision)
        ctx = FitContext(
            task=data.name, kind=self.name, label_names=data.label_names,
            new_model=lambda: base.new(seed), tokenizer=classifier_tokenizer(model),
            train=train.with_labels(noise.observed), val=val, train_config=cell.cell.train, seed=seed,
            device=device, precision=precision, log=log, progress=progress, train_texts=tuple(data.train.texts),
        )
        shell = getattr(base, "shell", None)  # an encoder base builds it without drawing weights
        return ClassificationSetup(data, train, val, test, noise, truly_clean, ctx, cell.method.adapter(cell.config),
                                   reload_model=None if shell is None else lambda: shell(seed))

    def evaluate(self, setup: ClassificationSetup, fitted: Fitted, *, data_dir: Path,
                 execution: Any = None) -> Evaluation:
        """Test metrics, variants, validation accuracy and NLL, detection against the truth mask, relabels, collapse.

        ``val_accuracy`` and ``val_nll`` score the final model on the validation split (gold
        labels): what a ``sweep:`` selects on (:mod:`bench.results.sweep`), never test figures.
        """
        s = setup
        with Phase("eval", s.ctx.device) as phase:
            probs = fitted.predict_proba(s.test)
        seconds = phase.figures["eval_wall_s"] or float("nan")
        efficiency = {**phase.figures, "eval_samples_per_s": len(s.test) / seconds}
        metrics = classification_metrics(probs, s.test.labels)
        if isinstance(fitted, VariantPredictor):
            variants = fitted.predict_variants(s.test)
            if variants:
                metrics["variants"] = {name: classification_metrics(p, s.test.labels) for name, p in variants.items()}
        start = time.perf_counter()  # after every test prediction (and outside the eval phase): they stay as they were
        metrics.update(validation_metrics(fitted.predict_proba(s.val), s.val.labels))
        efficiency["val_eval_wall_s"] = time.perf_counter() - start
        read = read_diagnostics(fitted.diagnostics, len(s.ctx.train))
        diagnostics, train_arrays = split_diagnostics(fitted.diagnostics)
        collapsed = collapse_message(probs, s.test.labels, s.data.label_names)
        if collapsed:
            diagnostics["collapsed"] = collapsed
        targets = targets_used(getattr(fitted, "model", None))
        if targets is not None:  # what LoRA wrapped (default targets depend on the architecture)
            diagnostics["lora_target_modules"] = targets
        metrics.update(detection_metrics(fitted.diagnostics, s.truly_clean))
        truth = s.data.train.truth
        curves = selection_curves(read.get("selection_history", []), s.truly_clean, s.ctx.train.labels, truth)
        if "relabels" in read:
            relabelled, diagnostics["relabel_confusion"] = relabel_metrics(read["relabels"], truth, s.data.n_classes)
            metrics.update(relabelled)
        predictions = {"ids": s.test.ids, "labels": s.test.labels, "probs": probs.astype("float32"),
                       **({"train_ids": s.ctx.train.ids, **train_arrays} if train_arrays else {})}
        return Evaluation(metrics, efficiency, diagnostics, curves, predictions)

    def reload_check(self, setup: ClassificationSetup, fitted: Fitted) -> dict[str, float]:
        """Save, load into a fresh base, compare predictions on the first test items.

        Raises:
            CellError: when the reloaded model predicts differently.
        """
        s = setup
        items = s.test.subset(np.arange(min(RELOAD_ITEMS, len(s.test))))
        folder = Path(tempfile.mkdtemp(prefix=scratch_prefix("reload")))
        try:
            fitted.save(folder)
            size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
            ctx = s.ctx if s.reload_model is None else replace(s.ctx, new_model=s.reload_model)
            again = s.method.load(ctx, folder)
            diff = float(np.abs(fitted.predict_proba(items) - again.predict_proba(items)).max())
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        if not diff <= RELOAD_TOLERANCE:
            raise CellError(f"reload check failed: saved and reloaded model differ (max |dp| = {diff:.2e})")
        return {"adapter_bytes": float(size), "reload_max_abs_diff": diff}

    def summary_line(self, metrics: dict[str, Any]) -> str:
        """``accuracy 91.40%, ECE 5.12%``."""
        return f"accuracy {100 * metrics['accuracy']:.2f}%, ECE {100 * metrics['ece']:.2f}%"


KIND = Classification()
