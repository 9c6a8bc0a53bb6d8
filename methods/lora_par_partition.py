"""LoRA-PAR (METHODS.md §4, steps 2-6): per-element LoRA importance, the S1/S2 partition, element-wise masks.

Elements are the entries of every ``lora_A``/``lora_B`` weight of a peft model, concatenated in
:func:`lora_parameters` order (the model's ``named_parameters`` order, as the authors' code).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray
from torch import nn
from torch.utils.hooks import RemovableHandle

from bench.sdk import Encoded, SftData, collate, target_labels

IMPORTANCE_KINDS = ("taylor2", "grad_fisher")
_LORA_WEIGHT = re.compile(r"\.lora_(A|B)\.[^.]+\.weight$")
_NAME_PARTS = re.compile(r"([^.]+)\.lora_(A|B)\.")
_LAYER = re.compile(r"\.(\d+)\.")
MODULE_ORDER = ("q", "k", "v", "o", "gate", "up", "down")
BoolArray = NDArray[np.bool_]


def lora_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """Every ``lora_A``/``lora_B`` weight of a peft model, name -> parameter, in ``named_parameters`` order."""
    return {name: p for name, p in model.named_parameters() if _LORA_WEIGHT.search(name)}


def reinit_normal(model: nn.Module, std: float = 0.01, *, seed: int) -> None:
    """LoRA(θ) init: redraw every A and B element from N(0, std²): 0.01 is the standard deviation.

    METHODS.md writes N(0, 0.01); the authors' ``example.py`` calls ``torch.nn.init.normal_(param.data,
    mean=0.0, std=0.01)`` on every lora_A/lora_B weight. Draws are float32 on the CPU from a generator
    seeded with ``seed``, in :func:`lora_parameters` order, so they do not depend on device or dtype.

    Raises:
        ValueError: a non-positive ``std`` or a model without LoRA weights.
    """
    if not std > 0:
        raise ValueError(f"Invalid std: {std}")
    params = lora_parameters(model)
    if not params:
        raise ValueError("the model has no lora_A/lora_B weights")
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in params.values():
            p.copy_(torch.empty(p.shape, dtype=torch.float32).normal_(0.0, std, generator=generator))


def _example_gradients(model: nn.Module, data: SftData, encoded: Encoded, item: int, params: list[nn.Parameter], *,
                       device: torch.device, precision: str, pad_id: int) -> list[torch.Tensor]:
    if not data.target_masks[item][1:].any():
        raise ValueError(f"item {item} has no answer token after its first position (its loss is undefined)")
    index = np.array([item], dtype=np.int64)
    inputs = collate(encoded, index, pad_id, device)
    labels = torch.from_numpy(target_labels(data, index, inputs["input_ids"].shape[1])).to(device)
    with torch.enable_grad():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss: torch.Tensor = model(**inputs, labels=labels).loss
        grads = torch.autograd.grad(loss.float(), params, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for g, p in zip(grads, params, strict=True)]


def importance(model: nn.Module, data: SftData, index: ArrayLike, *, kind: str = "taylor2", device: torch.device,
               precision: str, pad_id: int) -> dict[str, torch.Tensor]:
    """Per-element importance of every LoRA weight over the items ``index`` of ``data`` (step 3).

    Batch size 1, the model's causal-LM loss on the answer tokens (labels -100 elsewhere), eval mode
    (dropout off), gradients for the LoRA weights only, by ``torch.autograd.grad`` (no ``.grad`` is set);
    sums of g and g² in float64 on the CPU. ``taylor2`` (authors' code): ``|mean_k(g φ) − ½ mean_k((g φ)²)|``;
    ``grad_fisher`` (seed summary): ``|mean_k g| · mean_k g²``. Modes and ``requires_grad`` are restored.
    Score before registering a :class:`MaskKeeper`: its hooks zero masked gradients here too.

    Returns:
        name -> float64 CPU tensor shaped like the parameter.

    Raises:
        ValueError: an unknown ``kind``, no items, no LoRA weights, an item without a scored token.
    """
    if kind not in IMPORTANCE_KINDS:
        raise ValueError(f"Invalid importance kind: {kind!r} (expected one of {IMPORTANCE_KINDS})")
    rows = np.asarray(index, dtype=np.int64).reshape(-1)
    params = lora_parameters(model)
    if rows.size == 0 or not params:
        raise ValueError("importance needs at least one item and a model with lora_A/lora_B weights")
    sums = {n: torch.zeros(p.shape, dtype=torch.float64) for n, p in params.items()}
    squares = {n: torch.zeros(p.shape, dtype=torch.float64) for n, p in params.items()}
    modes, flags = [(m, m.training) for m in model.modules()], [(p, p.requires_grad) for p in params.values()]
    encoded = Encoded(data.input_ids, np.zeros(len(data), np.int64), data.ids)
    model.eval()
    try:
        for p in params.values():
            p.requires_grad_(True)
        for item in rows:
            grads = _example_gradients(model, data, encoded, int(item), list(params.values()), device=device,
                                       precision=precision, pad_id=pad_id)
            for name, g in zip(params, grads, strict=True):
                g64 = g.detach().to("cpu", torch.float64)
                sums[name], squares[name] = sums[name] + g64, squares[name] + g64 * g64
    finally:
        for module, training in modes:
            module.training = training
        for p, flag in flags:
            p.requires_grad_(flag)
    out = {}
    for name, p in params.items():
        mean_g, mean_g2 = sums[name] / rows.size, squares[name] / rows.size
        phi = p.detach().to("cpu", torch.float64)
        # mean_k(g φ) = φ mean_k g and mean_k((g φ)²) = φ² mean_k g², φ being fixed while scoring
        out[name] = (phi * mean_g - 0.5 * phi * phi * mean_g2).abs() if kind == "taylor2" else mean_g.abs() * mean_g2
    return out


def flat_scores(importances: Mapping[str, torch.Tensor]) -> NDArray[np.float64]:
    """Importances concatenated into one float64 vector (the element order of :class:`Partition`)."""
    parts = [v.detach().to("cpu", torch.float64).reshape(-1).numpy() for v in importances.values()]
    return np.concatenate(parts) if parts else np.zeros(0)


@dataclass(frozen=True, eq=False)
class Partition:
    """Flat bool masks over all LoRA elements in :func:`lora_parameters` order (``names``, ``shapes``)."""

    s1: BoolArray
    s2: BoolArray
    s1only: BoolArray
    s2only: BoolArray
    shared: BoolArray
    stage1: BoolArray
    stage2: BoolArray
    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]

    def __post_init__(self) -> None:
        if len(self.names) != len(self.shapes) or self.total == 0:
            raise ValueError(f"{len(self.names)} names, {len(self.shapes)} shapes, {self.total} elements")
        for field in ("s1", "s2", "s1only", "s2only", "shared", "stage1", "stage2"):
            mask = getattr(self, field)
            if mask.dtype != np.bool_ or mask.shape != (self.total,):
                raise ValueError(f"mask {field} must be a flat bool array of {self.total} elements")

    @property
    def total(self) -> int:
        """The number of LoRA elements."""
        return sum(int(np.prod(shape, dtype=np.int64)) for shape in self.shapes)

    def masks(self, stage: int) -> dict[str, torch.Tensor]:
        """Bool tensors shaped like each parameter, True = trainable in ``stage`` (1 or 2)."""
        if stage not in (1, 2):
            raise ValueError(f"Invalid stage: {stage} (expected 1 or 2)")
        flat, out, start = self.stage1 if stage == 1 else self.stage2, {}, 0
        for name, shape in zip(self.names, self.shapes, strict=True):
            size = int(np.prod(shape, dtype=np.int64))
            out[name] = torch.from_numpy(flat[start : start + size].copy()).reshape(shape)
            start += size
        return out

    def stats(self) -> dict[str, float | int]:
        """Set sizes, their shares of all elements, Jaccard |S1∩S2|/|S1∪S2| (0 if empty), per-stage activity."""
        total, union = self.total, int((self.s1 | self.s2).sum())
        out: dict[str, float | int] = {"total": total, "union": union}
        for field in ("s1", "s2", "s1only", "s2only", "shared"):
            count = int(getattr(self, field).sum())
            out[field], out[f"{field}_share"] = count, count / total
        out["jaccard"] = out["shared"] / union if union else 0.0
        for field in ("s1only", "s2only"):  # METHODS.md §4.4's table may be shares of the union
            out[f"{field}_of_union"] = out[field] / union if union else 0.0
        for stage, mask in (("stage1", self.stage1), ("stage2", self.stage2)):
            out[f"{stage}_active"], out[f"{stage}_fraction"] = int(mask.sum()), int(mask.sum()) / total
        trained = int((self.stage1 | self.stage2).sum())
        out["trained"], out["trained_fraction"] = trained, trained / total
        return out


def top_share(scores: ArrayLike, theta: float) -> BoolArray:
    """The smallest set of top elements holding a share ``theta`` of the total importance (step 4).

    L2-normalise, sort descending (stable: ties keep index order), keep the shortest prefix whose cumulative
    sum is ≥ θ × total (total = the last cumulative sum: θ = 1 keeps every non-zero element, no zero one).

    Raises:
        ValueError: θ outside (0, 1]; empty, negative or non-finite scores; all scores zero.
    """
    if not 0.0 < theta <= 1.0:
        raise ValueError(f"Invalid theta: {theta} (must be in (0, 1])")
    values = np.asarray(scores, dtype=np.float64).reshape(-1)
    if values.size == 0 or not np.isfinite(values).all() or (values < 0).any():
        raise ValueError("importance scores must be a non-empty vector of finite, non-negative numbers")
    norm = float(np.linalg.norm(values))
    if norm == 0.0:
        raise ValueError("every importance score is zero, so the LoRA elements cannot be partitioned (with the "
                         "usual B = 0 init, A gets no gradient and φ·g = 0 for B: re-initialise A and B, e.g. "
                         "reinit_normal, or use PiSSA init)")
    normed = values / norm
    order = np.argsort(-normed, kind="stable")
    cumsum = np.cumsum(normed[order])
    count = int(np.searchsorted(cumsum, theta * cumsum[-1], side="left")) + 1
    mask = np.zeros(values.size, dtype=bool)
    mask[order[:count]] = True
    return mask


def _top_of(candidates: BoolArray, scores: NDArray[np.float64], count: int) -> BoolArray:
    index = np.flatnonzero(candidates)
    mask = np.zeros(candidates.size, dtype=bool)
    mask[index[np.argsort(-scores[index], kind="stable")][:count]] = True
    return mask


def partition(imp1: ArrayLike, imp2: ArrayLike, *, theta: float, alpha: float, beta: float, names: Sequence[str],
              shapes: Sequence[Sequence[int]]) -> Partition:
    """Steps 4-6: S1/S2 by :func:`top_share`; stage k = Sk-only ∪ the top ``int(α|shared|)`` (β) shared by imp k.

    Raises:
        ValueError: α or β outside [0, 1], θ outside (0, 1], sizes that do not match ``shapes``,
            invalid or all-zero scores.
    """
    for label, value in (("alpha", alpha), ("beta", beta)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"Invalid {label}: {value} (must be in [0, 1])")
    shape_tuple = tuple(tuple(int(d) for d in s) for s in shapes)
    total = sum(int(np.prod(s, dtype=np.int64)) for s in shape_tuple)
    a, b = (np.asarray(x, dtype=np.float64).reshape(-1) for x in (imp1, imp2))
    if a.size != total or b.size != total:
        raise ValueError(f"importance sizes {a.size} and {b.size} do not match the {total} elements of shapes")
    s1, s2 = top_share(a, theta), top_share(b, theta)
    shared = s1 & s2
    n_shared = int(shared.sum())
    stage1 = (s1 & ~s2) | _top_of(shared, a, int(alpha * n_shared))
    stage2 = (s2 & ~s1) | _top_of(shared, b, int(beta * n_shared))
    return Partition(s1, s2, s1 & ~s2, s2 & ~s1, shared, stage1, stage2, tuple(names), shape_tuple)


def random_partition(like: Partition, seed: int) -> Partition:
    """The "Rand." control: ``like``'s masks moved to uniformly random element positions.

    One seeded permutation (``numpy.random.default_rng(seed)``) relabels the elements of all seven masks:
    stage1 (stage2) is a uniformly random set of |stage1| (|stage2|) elements, and every set and every
    intersection keeps its size, so :meth:`Partition.stats` equals ``like``'s (S-sets are relabelled too).
    """
    perm = np.random.default_rng(seed).permutation(like.total)

    def moved(mask: BoolArray) -> BoolArray:
        out = np.zeros(like.total, dtype=bool)
        out[perm[mask]] = True
        return out

    return Partition(moved(like.s1), moved(like.s2), moved(like.s1only), moved(like.s2only), moved(like.shared),
                     moved(like.stage1), moved(like.stage2), like.names, like.shapes)


def name_key(name: str) -> tuple[int, str, str]:
    """(layer index or -1, module such as ``q`` or ``gate`` (``_proj`` dropped), ``A`` or ``B``) of a peft name."""
    parts = _NAME_PARTS.search(name)
    if parts is None:
        raise ValueError(f"not a LoRA weight name: {name}")
    layer = _LAYER.search(name)
    return (int(layer.group(1)) if layer else -1, parts.group(1).removesuffix("_proj"), parts.group(2))


def breakdown(importances: Mapping[str, torch.Tensor]) -> list[dict[str, Any]]:
    """Rows per (layer, module, matrix): count, sum, mean, max, share of the L2-normalised importance.

    The L2 norm is over all elements together (all-zero importance stays zero). Rows are ordered by layer,
    then q/k/v/o/gate/up/down, then A/B.
    """
    norm = float(np.linalg.norm(flat_scores(importances))) or 1.0
    groups: dict[tuple[int, str, str], list[NDArray[np.float64]]] = {}
    for name, value in importances.items():
        groups.setdefault(name_key(name), []).append(value.detach().to("cpu", torch.float64).reshape(-1).numpy() / norm)
    grand = sum(float(v.sum()) for vs in groups.values() for v in vs) or 1.0
    rows = []
    for key in sorted(groups, key=lambda k: (k[0], MODULE_ORDER.index(k[1]) if k[1] in MODULE_ORDER else 99, k)):
        values = np.concatenate(groups[key])
        rows.append({"layer": key[0], "module": key[1], "matrix": key[2], "count": int(values.size),
                     "sum": float(values.sum()), "mean": float(values.mean()), "max": float(values.max()),
                     "share": float(values.sum()) / grand})
    return rows


def _zero_frozen(trainable: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    frozen = ~trainable
    return lambda grad: grad.masked_fill(frozen, 0.0)


class MaskKeeper:
    """Element-wise freezing for one stage: gradient hooks plus exact restoring of frozen elements.

    ``register(model)`` (at the stage's start) saves every LoRA weight and hooks a gradient mask on it (as
    the authors: ``grad.masked_fill(~mask, 0)``). Hooks alone do not stop AdamW's decoupled weight decay
    from moving frozen elements: call :meth:`restore` after every optimizer step. Masks: True = trainable.
    """

    def __init__(self, masks: Mapping[str, torch.Tensor]) -> None:
        self.masks = {name: m.detach().to(torch.bool) for name, m in masks.items()}
        self._params: dict[str, nn.Parameter] = {}
        self._saved: dict[str, torch.Tensor] = {}
        self._handles: list[RemovableHandle] = []

    def register(self, model: nn.Module) -> MaskKeeper:
        """Save the LoRA weights of ``model`` and hook the masks on their gradients (sets ``requires_grad``).

        Raises:
            ValueError: masks whose names or shapes do not match the model's LoRA weights.
            RuntimeError: already registered.
        """
        if self._handles:
            raise RuntimeError("MaskKeeper is already registered; remove() it first")
        params = lora_parameters(model)
        if set(params) != set(self.masks):
            raise ValueError(f"masks cover {len(self.masks)} weights, the model has {len(params)} other ones")
        for name, p in params.items():
            if self.masks[name].shape != p.shape:
                raise ValueError(f"mask of {name} has shape {tuple(self.masks[name].shape)}, not {tuple(p.shape)}")
            self.masks[name] = self.masks[name].to(p.device)
        self._params = params
        self._saved = {name: p.detach().clone() for name, p in params.items()}
        for name, p in params.items():
            p.requires_grad_(True)
            self._handles.append(p.register_hook(_zero_frozen(self.masks[name])))  # type: ignore[no-untyped-call]
        return self

    def remove(self) -> None:
        """Remove the gradient hooks (the saved copy stays for :meth:`frozen_unchanged`)."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def restore(self) -> None:
        """Copy the saved values back into every frozen element, bit for bit."""
        if not self._params:
            raise RuntimeError("MaskKeeper.restore before register")
        with torch.no_grad():
            for name, p in self._params.items():
                p.copy_(torch.where(self.masks[name], p, self._saved[name]))

    def frozen_unchanged(self) -> bool:
        """Whether every frozen element is bitwise equal to its saved value."""
        if not self._params:
            raise RuntimeError("MaskKeeper.frozen_unchanged before register")
        for name, p in self._params.items():
            frozen = ~self.masks[name]
            now, saved = p.detach()[frozen].contiguous(), self._saved[name][frozen].contiguous()
            if not torch.equal(now.view(torch.uint8), saved.view(torch.uint8)):
                return False
        return True
