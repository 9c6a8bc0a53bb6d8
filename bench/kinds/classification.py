"""Executing one cell in process: setup, train, evaluate, measure."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from numpy.typing import NDArray

from bench.sdk import train as train_mod
from bench.spec.cells import Cell
from bench.spec.config import build
from bench.data.noise import NoiseResult, apply_noise
from bench.data.task import TaskData, load_task
from bench.data.tokens import Encoded, encode
from bench.errors import CellError
from bench.sdk.method import FitContext, Fitted
from bench.models.encoder import base_model, load_tokenizer
from bench.run.profile import Phase
from bench.sdk.registry import get_method
from bench.spec.suite import TaskSpec
from bench.sdk.train import TrainStats, resolve_precision

#: Reload check: the largest |Δp| allowed between the fitted model and its reloaded copy.
RELOAD_TOLERANCE = 1e-5
RELOAD_ITEMS = 256


@lru_cache(maxsize=4)
def _task(spec: TaskSpec, data_dir: Path) -> TaskData:
    return load_task(spec, data_dir)


@lru_cache(maxsize=8)
def _encoded(spec: TaskSpec, data_dir: Path, model: str) -> tuple[Encoded, Encoded, Encoded]:
    data, tok = _task(spec, data_dir), load_tokenizer(model)
    return tuple(encode(s.texts, s.labels, s.ids, tok, spec.max_length)  # type: ignore[return-value]
                 for s in (data.train, data.val, data.test))


@lru_cache(maxsize=4)
def _features(spec: TaskSpec, data_dir: Path, model: str) -> NDArray[np.float64]:
    """L2-normalised mean-pooled embeddings of the frozen pretrained encoder (for I-noise)."""
    train = _encoded(spec, data_dir, model)[0]
    full = base_model(model, len(_task(spec, data_dir).label_names)).new(0)
    encoder = cast(torch.nn.Module, full.base_model)
    encoder.eval()
    pad = load_tokenizer(model).pad_token_id
    out = []
    with torch.no_grad():
        for i in range(0, len(train), 256):
            inputs = train_mod.collate(train, np.arange(i, min(i + 256, len(train))), pad, torch.device("cpu"))
            hidden = encoder(**inputs).last_hidden_state
            mask = inputs["attention_mask"].unsqueeze(-1).float()
            pooled = (hidden * mask).sum(1) / mask.sum(1)
            out.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
    return np.concatenate(out).astype(np.float64)


@dataclass
class Setup:
    """What :func:`setup` prepared for a cell."""

    data: TaskData
    train: Encoded
    val: Encoded
    test: Encoded
    noise: NoiseResult
    truly_clean: NDArray[np.bool_]
    ctx: FitContext
    method: Any


def device_for(cell: Cell) -> torch.device:
    """CUDA when available, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _noise(cell: Cell, data: TaskData, train: Encoded, data_dir: Path) -> tuple[NoiseResult, NDArray[np.bool_]]:
    features = _features(cell.task, data_dir, cell.model) if cell.noise.kind == "instance" else None
    spec = cell.noise
    task_map = getattr(cell.task, "pair_map", None)
    if spec.kind == "asymmetric" and spec.pair_map is None and task_map is not None:
        spec = type(spec)(**{**spec.__dict__, "pair_map": task_map})
    result = apply_noise(spec, train.labels, data.n_classes, seed=cell.seed, features=features)
    # real-noise sets: the observed labels are the data's, the truth its gold field
    truly_clean = np.asarray(result.observed == data.train.truth, dtype=bool)
    return result, truly_clean


def setup(cell: Cell, data_dir: Path, log: Any, progress: Any) -> Setup:
    """Load data, inject noise, build the method and its FitContext."""
    data = _task(cell.task, data_dir)
    train, val, test = _encoded(cell.task, data_dir, cell.model)
    noise, truly_clean = _noise(cell, data, train, data_dir)
    base = base_model(cell.model, data.n_classes)
    tokenizer = load_tokenizer(cell.model)
    device = device_for(cell)
    entry = get_method(cell.method.method)
    method = entry.adapter(build(entry.config, cell.method.config, f"methods.{cell.method.id}.config"))
    ctx = FitContext(
        task=data.name, kind="classification", label_names=data.label_names,
        new_model=lambda: base.new(cell.seed), tokenizer=tokenizer,
        train=train.with_labels(noise.observed), val=val, train_config=cell.train, seed=cell.seed,
        device=device, precision=resolve_precision(cell.train.precision, device), log=log,
        progress=progress, train_texts=tuple(data.train.texts),
    )
    return Setup(data, train, val, test, noise, truly_clean, ctx, method)


def fit(s: Setup) -> tuple[Fitted, list[TrainStats]]:
    """Run the method's ``fit``, collecting the stats of every training loop it runs."""
    sink: list[TrainStats] = []
    token = train_mod.STATS_SINK.set(sink)
    try:
        fitted = s.method.fit(s.ctx)
    except torch.cuda.OutOfMemoryError as err:
        raise CellError(f"out of GPU memory during training: {str(err).splitlines()[0]}") from None
    except MemoryError:
        raise CellError("out of CPU memory during training") from None
    finally:
        train_mod.STATS_SINK.reset(token)
    return fitted, sink


def reload_check(s: Setup, fitted: Fitted) -> dict[str, float]:
    """Save, load into a fresh base, compare predictions on the first test items.

    Raises:
        CellError: when the reloaded model predicts differently.
    """
    items = s.test.subset(np.arange(min(RELOAD_ITEMS, len(s.test))))
    folder = Path(tempfile.mkdtemp(prefix="peftbench-reload-"))
    try:
        fitted.save(folder)
        size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        again = s.method.load(s.ctx, folder)
        diff = float(np.abs(fitted.predict_proba(items) - again.predict_proba(items)).max())
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if not diff <= RELOAD_TOLERANCE:
        raise CellError(f"reload check failed: saved and reloaded model differ (max |dp| = {diff:.2e})")
    return {"adapter_bytes": float(size), "reload_max_abs_diff": diff}


def predict_variants(s: Setup, fitted: Fitted) -> dict[str, NDArray[np.float64]]:
    """Other prediction modes a method offers (``Fitted.predict_variants``, optional).

    E.g. a test-time ensemble scored at several sizes; each variant gets the full set of
    classification metrics under ``metrics["variants"][name]``.
    """
    extra = getattr(fitted, "predict_variants", None)
    return dict(extra(s.test)) if callable(extra) else {}


def predict(s: Setup, fitted: Fitted) -> tuple[NDArray[np.float64], dict[str, float | None]]:
    """Test-set probabilities and eval throughput."""
    with Phase("eval", s.ctx.device) as phase:
        probs = fitted.predict_proba(s.test)
    seconds = phase.figures["eval_wall_s"] or float("nan")
    return probs, {**phase.figures, "eval_samples_per_s": len(s.test) / seconds}


def split_diagnostics(diagnostics: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(JSON-able diagnostics for the record, per-training-sample arrays for the npz beside it)."""
    kept, arrays = {}, {}
    for key, value in diagnostics.items():
        if isinstance(value, np.ndarray):
            arrays[f"train_{key}"] = value
        elif key != "selection_history":
            kept[key] = value
    return kept, arrays
