"""The method contract: ``Method.fit(ctx) -> Fitted`` (DESIGN.md, "Method adapters").

Both sides are Protocols: a method is any class with these attributes, registered with
:func:`bench.sdk.registry.register_method`. Shared behaviour lives in helper functions
(:mod:`bench.sdk.loop`, :mod:`bench.sdk.fitted`), not in base classes. What the harness reads
from a fitted model beyond the Protocol is typed here too: :class:`Diagnostics` (the keys it
scores) and :class:`VariantPredictor` (extra prediction modes).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypedDict, runtime_checkable

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from bench.data.tokens import Encoded
from bench.spec.suite import TrainConfig

Progress = Callable[..., Any]
"""``progress(total=..., desc=...)`` returns a tqdm-like bar (a no-op one under --quiet)."""


@dataclass(frozen=True)
class FitContext:
    """What a method sees. The truth mask of injected noise is never in here."""

    task: str
    """Task name, e.g. ``trec``."""
    kind: str
    """``classification`` or ``generation`` (a causal LM fine-tuned on prompt -> answer pairs)."""
    label_names: list[str]
    new_model: Callable[[], nn.Module]
    """A fresh base model each call: pretrained body, head initialised from the seed."""
    tokenizer: Any
    train: Encoded
    """Training split with its *observed* (possibly noisy) labels."""
    val: Encoded
    """Validation split (gold labels; for curves, never for selection by default)."""
    train_config: TrainConfig
    seed: int
    device: torch.device
    precision: str
    """Resolved precision: ``bf16`` (autocast) or ``fp32``."""
    log: Callable[[dict[str, Any]], None]
    """Record one row of per-epoch curves (keys become curve names)."""
    progress: Progress
    train_texts: tuple[str, ...] = field(default=(), repr=False)
    """Raw texts of the training items, in ``train`` order (for plug-ins that read text)."""
    train_targets: tuple[NDArray[np.bool_], ...] = field(default=(), repr=False)
    """Generation: per training item, True on the tokens that carry the loss (the answer)."""
    val_targets: tuple[NDArray[np.bool_], ...] = field(default=(), repr=False)
    """Generation: the same for the validation items."""
    train_answers: tuple[str, ...] = field(default=(), repr=False)
    """Generation: the reference answer text of each training item, in ``train`` order."""

    @property
    def n_classes(self) -> int:
        """Number of classes."""
        return len(self.label_names)


class Diagnostics(TypedDict, total=False):
    """The keys of ``Fitted.diagnostics`` that the harness reads; a method may add its own.

    Per-training-sample arrays (in ``ctx.train`` order) go to the run's ``.npz`` file as
    ``train_<key>``; every other value is kept in the record's ``diagnostics`` (so it must be
    JSON-able). ``selection_history`` is turned into ``detect_*`` curves and not stored as is.
    """

    selected_clean: NDArray[np.bool_]
    """Per training sample: True where the method kept the sample as clean (detection P/R/F1)."""
    clean_score: NDArray[np.float64]
    """Per training sample: higher = more likely clean (detection AUROC)."""
    selection_history: list[dict[str, Any]]
    """Per selection epoch: ``epoch``, ``selected_clean``, ``clean_score`` and any per-sample
    arrays (``loss``, ``pred_<model>``) the curves summarise over truly clean/noisy samples."""
    relabels: NDArray[np.int64]
    """Per training sample: the method's new label, -1 where it kept the observed one."""


#: The per-training-sample keys of :class:`Diagnostics` that the harness checks for length.
SAMPLE_KEYS = ("selected_clean", "clean_score", "relabels")


class Fitted(Protocol):
    """A trained method, as the harness evaluates and stores it."""

    diagnostics: dict[str, Any]
    """Optional per-method diagnostics, e.g. ``clean_score`` (per training sample)."""

    def predict_proba(self, data: Encoded) -> NDArray[np.float64]:
        """Class probabilities ``[n, K]`` for every item of ``data``, in order."""
        ...

    def trainable_parameters(self) -> int:
        """Number of parameters the method trained."""
        ...

    def total_parameters(self) -> int:
        """Number of parameters of the model used for prediction."""
        ...

    def save(self, directory: Path) -> None:
        """Write what :meth:`Method.load` needs to rebuild this model on a fresh base."""
        ...



@runtime_checkable
class VariantPredictor(Protocol):
    """Optional on a classification ``Fitted``: other prediction modes, each scored in full.

    E.g. a test-time ensemble at several sizes (``{"ensemble_n1": ..., "ensemble_n16": ...}``);
    each variant's metrics go under ``metrics["variants"][name]``.
    """

    def predict_variants(self, data: Encoded) -> Mapping[str, NDArray[np.float64]]:
        """Class probabilities ``[n, K]`` per variant name."""
        ...


class Method(Protocol):
    """A method adapter: a registered class with a frozen config."""

    name: ClassVar[str]
    version: ClassVar[str]

    def fit(self, ctx: FitContext) -> Fitted:
        """Train on ``ctx.train`` and return the fitted model."""
        ...

    def load(self, ctx: FitContext, directory: Path) -> Fitted:
        """Rebuild what :meth:`Fitted.save` wrote, on ``ctx.new_model()``."""
        ...
