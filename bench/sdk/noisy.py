"""Shared pieces of the noisy-label methods: per-sample losses, loss-based splits, RCE.

A method that selects samples reports them in its diagnostics (the runner scores them
against the truth mask, which methods never see):

- ``selected_clean``: bool per training sample, the final selection;
- ``clean_score``: float per training sample, higher = more likely clean (for AUROC);
- ``selection_history``: one dict per epoch with ``epoch`` and the same two arrays, plus
  optional per-sample float arrays (their means per truly-clean/noisy group become curves)
  and ``pred_<model>`` int arrays (train accuracy against observed and true labels).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from torch import nn

from bench.data.tokens import Encoded
from bench.sdk.loop import predict_logits


def per_sample_loss(model: nn.Module, data: Encoded, *, batch_size: int, device: torch.device, precision: str,
                    pad_id: int) -> tuple[NDArray[np.float64], NDArray[np.float32]]:
    """Cross-entropy of every item against ``data.labels`` in eval mode, and the logits."""
    logits = predict_logits(model, data, batch_size=batch_size, device=device, precision=precision, pad_id=pad_id)
    return cross_entropy_np(logits, data.labels), logits


def cross_entropy_np(logits: NDArray[np.floating[Any]], labels: NDArray[np.int64]) -> NDArray[np.float64]:
    """Per-row ``logsumexp(z) - z_y`` in float64."""
    z = logits.astype(np.float64)
    top = z.max(axis=1, keepdims=True)
    lse = top[:, 0] + np.log(np.exp(z - top).sum(axis=1))
    return np.asarray(lse - z[np.arange(len(labels)), labels])


def gmm_clean_probability(losses: NDArray[np.float64], seed: int) -> NDArray[np.float64]:
    """Posterior of the low-loss component of a 2-component GMM on min-max normalised losses.

    As in DivideMix / SelfMix (METHODS.md §6.2): ``GaussianMixture(2, max_iter=10, tol=1e-2,
    reg_covar=5e-4)``.
    """
    from sklearn.mixture import GaussianMixture

    x = np.asarray(losses, dtype=np.float64)
    span = x.max() - x.min()
    if len(x) < 2 or span <= 0:
        return np.ones(len(x))
    x = ((x - x.min()) / span).reshape(-1, 1)
    gmm = GaussianMixture(n_components=2, max_iter=10, tol=1e-2, reg_covar=5e-4, random_state=seed).fit(x)
    clean = int(np.argmin(gmm.means_[:, 0]))
    return np.asarray(gmm.predict_proba(x)[:, clean])


def smallest_fraction(losses: NDArray[np.float64], keep: float) -> NDArray[np.bool_]:
    """Mask of the ``ceil(keep * n)`` smallest losses (ties broken by position)."""
    n = len(losses)
    k = min(n, max(0, math.ceil(keep * n)))
    mask = np.zeros(n, dtype=bool)
    mask[np.argsort(losses, kind="stable")[:k]] = True
    return mask


def reverse_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, log_zero: float = -4.0) -> torch.Tensor:
    """Per-sample RCE ``-sum_k p_k log q_k`` with q one-hot and ``log 0`` clipped to ``log_zero``.

    Equals ``-log_zero * (1 - p_y)`` (Wang et al. 2019, symmetric cross-entropy; METHODS.md §2.1).
    """
    p_true = F.softmax(logits.float(), dim=-1).gather(1, labels[:, None])[:, 0]
    return -log_zero * (1.0 - p_true)


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` where ``mask``; 0 (with a graph) when the mask is empty."""
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp_min(1.0)
