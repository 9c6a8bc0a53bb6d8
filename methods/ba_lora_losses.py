"""BA-LoRA's output regularisers (METHODS.md §5.1, §5.3) and the loss hook that combines them.

The regularisers are pure torch functions. NLU forms take classifier logits ``z`` of shape
``[B, C]``; NLG forms take token logits ``[B, T, V]`` and a boolean position mask ``[B, T]``
(see :func:`nlg_mask`). Each computes in float32 with autocast off, whatever the caller's
precision, and returns a scalar *loss* (to be minimised): the SVD terms return the negative
top-k share. :class:`Objective` is the ``train_loop`` hook (NLU or NLG) with per-epoch logging.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from torch import nn

from bench.sdk import SftData, target_labels

#: The authors' entropy guard: ``H(P) = -sum P log(P + 1e-10)`` [code].
ENTROPY_EPS = 1e-10
#: Response-token label convention of HF causal-LM losses.
IGNORE_INDEX = -100


def _fp32(device: torch.device) -> AbstractContextManager[None]:
    return torch.autocast(device_type=device.type, enabled=False)


def consistency_loss(z: torch.Tensor, z0: torch.Tensor) -> torch.Tensor:
    """NLU consistency: MSE between row-L2-normalised logits and reference logits.

    Args:
        z: trainable-model logits ``[B, C]``.
        z0: reference (initial-model) logits ``[B, C]``, without gradient.

    Returns:
        ``mean((z/|z| - z0/|z0|)^2)`` over all ``B*C`` entries.
    """
    with _fp32(z.device):
        return F.mse_loss(F.normalize(z.float(), dim=1), F.normalize(z0.float(), dim=1))


def diversity_loss(z: torch.Tensor) -> torch.Tensor:
    """NLU diversity (decorrelation): ``(1/C) * sum_{j != k} Cov_jk^2`` over the batch.

    ``Cov = Zc^T Zc / (B - 1)`` with ``Zc`` the batch-centred logits. A batch of one row has no
    unbiased covariance (division by ``B - 1 = 0``); it happens for the last batch of an epoch,
    so it contributes 0 instead of NaN.

    Args:
        z: logits ``[B, C]``.

    Returns:
        The scalar loss (0 for ``B < 2``).
    """
    batch, classes = z.shape
    if batch < 2:
        return z.new_zeros((), dtype=torch.float32)
    with _fp32(z.device):
        zc = z.float() - z.float().mean(dim=0, keepdim=True)
        cov = zc.T @ zc / (batch - 1)
        off = cov - torch.diag(torch.diagonal(cov))
        return (off**2).sum() / classes


def topk_share(sigma: torch.Tensor, k: int) -> torch.Tensor:
    """``sum_{i<=k} sigma_i / sum_i sigma_i`` along the last axis (sigma sorted descending)."""
    return sigma[..., :k].sum(dim=-1) / sigma.sum(dim=-1).clamp_min(1e-12)


def svd_loss(z: torch.Tensor, k: int) -> torch.Tensor:
    """NLU SVD term: minus the top-k share of the singular values of the batch logits.

    METHODS.md §5.3 defect 1: the released code indexes 1-D singular values as if batched and
    crashes; this is the intent, on the ``[B, C]`` matrix, in float32. ``svdvals`` has stable
    gradients even for repeated singular values.

    Args:
        z: logits ``[B, C]``.
        k: number of top singular values.

    Returns:
        ``-sum_{i<=k} sigma_i / sum_i sigma_i`` (in ``[-1, 0]``).
    """
    with _fp32(z.device):
        return -topk_share(torch.linalg.svdvals(z.float()), k)


def nlg_mask(labels: torch.Tensor, reg_mask: str = "response") -> torch.Tensor:
    """Logit positions the NLG regularisers cover (METHODS.md §5.3 defect 2).

    Logits at position ``t`` predict token ``t + 1`` (the HF causal-LM shift), so a position is
    a response position when ``labels[:, t + 1] != -100``.

    Args:
        labels: token labels ``[B, T]`` with ``-100`` on prompt and padding.
        reg_mask: ``response`` (default) or ``all`` (every position, as the released code).

    Returns:
        A boolean mask ``[B, T]``.

    Raises:
        ValueError: for an unknown ``reg_mask``.
    """
    if reg_mask == "all":
        return torch.ones_like(labels, dtype=torch.bool)
    if reg_mask != "response":
        raise ValueError(f"Invalid reg_mask: {reg_mask!r} (use 'response' or 'all')")
    mask = torch.zeros_like(labels, dtype=torch.bool)
    mask[:, :-1] = labels[:, 1:] != IGNORE_INDEX
    return mask


def kl_consistency(logits: torch.Tensor, ref_logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """NLG consistency: ``KL(P0 || P)`` summed over vocabulary and masked positions, / batch.

    Args:
        logits: trainable-model token logits ``[B, T, V]``.
        ref_logits: reference token logits ``[B, T, V]``.
        mask: positions to include ``[B, T]``.

    Returns:
        The ``batchmean`` KL divergence.
    """
    with _fp32(logits.device):
        logp = F.log_softmax(logits.float(), dim=-1)
        logp0 = F.log_softmax(ref_logits.float(), dim=-1)
        per_position = F.kl_div(logp, logp0, reduction="none", log_target=True).sum(dim=-1)
        return (per_position * mask).sum() / logits.shape[0]


def entropy_diversity(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """NLG diversity: minus the mean entropy of the token distributions over masked positions.

    Args:
        logits: token logits ``[B, T, V]``.
        mask: positions to include ``[B, T]``.

    Returns:
        ``-mean H(P)`` with ``H(P) = -sum_v P_v log(P_v + 1e-10)`` (0 for an empty mask).
    """
    with _fp32(logits.device):
        p = F.softmax(logits.float(), dim=-1)
        entropy = -(p * torch.log(p + ENTROPY_EPS)).sum(dim=-1)
        return -(entropy * mask).sum() / mask.sum().clamp_min(1)


def singular_values_gram(matrix: torch.Tensor) -> torch.Tensor:
    """Singular values of ``L [T, V]`` (``T <= V``) as ``sqrt(eigvalsh(L L^T))``, descending.

    Cheap for a vocabulary-wide ``L``: the Gram matrix is ``T x T``. Eigenvalues below 0
    (round-off) become 0, with a zero gradient there instead of ``sqrt``'s infinite one.
    """
    with _fp32(matrix.device):
        eig = torch.linalg.eigvalsh(matrix.float() @ matrix.float().T).flip(-1)
        return torch.where(eig > 0, eig.clamp_min(1e-30).sqrt(), torch.zeros_like(eig))


def svd_share_batched(logits: torch.Tensor, mask: torch.Tensor, k: int) -> torch.Tensor:
    """NLG SVD term: minus the top-k share of each example's ``[T_resp, V]`` logits, batch mean.

    METHODS.md §5.3 defects 1 and 2: one SVD per example (not one over ``[B, T*V]``), over the
    masked positions only. Examples without a masked position are left out of the mean.

    Args:
        logits: token logits ``[B, T, V]``.
        mask: positions to include ``[B, T]`` (see :func:`nlg_mask`).
        k: number of top singular values.

    Returns:
        ``-mean_b share_b`` (0 when no example has a masked position).
    """
    shares = [topk_share(singular_values_gram(logits[b][mask[b]]), k)
              for b in range(logits.shape[0]) if bool(mask[b].any())]
    if not shares:
        return logits.new_zeros((), dtype=torch.float32)
    return -torch.stack(shares).mean()


class _Timer:
    """Seconds spent in a block: CUDA events on GPU (no sync per step), else wall clock."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.events: list[tuple[Any, Any]] = []

    @contextmanager
    def __call__(self, device: torch.device) -> Iterator[None]:
        if device.type != "cuda":
            start = time.perf_counter()
            yield
            self.seconds += time.perf_counter() - start
            return
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
        begin.record()
        yield
        end.record()
        self.events.append((begin, end))

    def take(self) -> float:
        """Seconds since the last call (synchronises once on GPU)."""
        if self.events:
            torch.cuda.synchronize()
            self.seconds += sum(b.elapsed_time(e) for b, e in self.events) / 1000
            self.events.clear()
        seconds, self.seconds = self.seconds, 0.0
        return seconds


class Objective:
    """The ``train_loop`` hook ``L_task + sum_i lambda_i * L_i``, with per-epoch means.

    NLU (``sft=None``): ``L_task`` is the cross-entropy of classifier logits ``[B, C]`` and the
    regularisers are the NLU forms. NLG (``sft`` given; a ``with_index`` hook): ``L_task`` is the
    causal LM's own loss on the batch's answer tokens (labels -100 elsewhere, as
    ``bench.sdk.causal.sft_loss``) and the regularisers are the token forms over the positions of
    :func:`nlg_mask` (``reg_mask``).

    Besides the terms it accumulates (detached, on device, no sync per step) the top-k share,
    the mean output entropy and, with a reference, the KL to it and the time of the reference
    pass (METHODS.md §5.4).

    Args:
        weights: lambda of each switched-on term among ``consistency``, ``diversity``, ``svd``;
            a term not in here is not computed (ablation).
        top_k: k of the SVD term.
        reference: ``inputs -> logits`` of the initial model (no grad; ``[B, C]`` or
            ``[B, T, V]``); needed for ``consistency``.
        sft: the SFT data the batches index (NLG), or None (NLU).
        reg_mask: NLG positions the regularisers cover, ``response`` or ``all``.
    """

    def __init__(self, weights: dict[str, float], top_k: int,
                 reference: Callable[[dict[str, torch.Tensor]], torch.Tensor] | None, *,
                 sft: SftData | None = None, reg_mask: str = "response") -> None:
        if "consistency" in weights and reference is None:
            raise ValueError("the consistency term needs a reference")
        nlg_mask(torch.zeros(1, 1, dtype=torch.long), reg_mask)  # validates reg_mask
        self.weights, self.top_k, self.reference = dict(weights), top_k, reference
        self.sft, self.reg_mask = sft, reg_mask
        self.sums: dict[str, torch.Tensor] = {}
        self.steps = 0
        self.timer = _Timer()

    def __call__(self, model: nn.Module, inputs: dict[str, torch.Tensor], labels: torch.Tensor,
                 index: NDArray[np.int64] | None = None) -> torch.Tensor:
        """The total loss of one batch; records each term."""
        if self.sft is None:
            z = model(**inputs).logits.float()
            task = F.cross_entropy(z, labels)
            raw, extra = self.regularisers(z, inputs)
        else:
            if index is None:
                raise ValueError("the NLG objective needs the batch index (train_loop(with_index=True))")
            width = inputs["input_ids"].shape[1]
            targets = torch.from_numpy(target_labels(self.sft, index, width)).to(inputs["input_ids"].device)
            out = model(**inputs, labels=targets)
            task = out.loss.float()
            raw, extra = self.token_regularisers(out.logits, inputs, nlg_mask(targets, self.reg_mask))
        total = task
        for name, value in raw.items():
            total = total + self.weights[name] * value
        for key, value in {"task": task, **raw, **extra}.items():
            self.sums[key] = self.sums[key] + value.detach() if key in self.sums else value.detach()
        self.steps += 1
        return total

    def regularisers(self, z: torch.Tensor, inputs: dict[str, torch.Tensor],
                     ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """(switched-on regularisers, detached monitoring values) for logits ``z`` ``[B, C]``."""
        raw: dict[str, torch.Tensor] = {}
        ones = torch.ones(z.shape[0], 1, dtype=torch.bool, device=z.device)
        extra = {"entropy": -entropy_diversity(z.detach()[:, None], ones)}
        if "consistency" in self.weights and self.reference is not None:
            with self.timer(z.device):
                z0 = self.reference(inputs)
            raw["consistency"] = consistency_loss(z, z0)
            extra["kl_to_reference"] = kl_consistency(z.detach()[:, None], z0[:, None], ones)
        if "diversity" in self.weights:
            raw["diversity"] = diversity_loss(z)
        if "svd" in self.weights:
            raw["svd"] = svd_loss(z, self.top_k)
        extra["topk_share"] = -(raw["svd"] if "svd" in raw else svd_loss(z.detach(), self.top_k))
        return raw, extra

    def token_regularisers(self, z: torch.Tensor, inputs: dict[str, torch.Tensor], mask: torch.Tensor,
                           ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """(switched-on NLG regularisers, detached monitoring values) for token logits ``[B, T, V]``."""
        raw: dict[str, torch.Tensor] = {}
        if "consistency" in self.weights and self.reference is not None:
            with self.timer(z.device):
                z0 = self.reference(inputs)
            raw["consistency"] = kl_consistency(z, z0, mask)
        if "diversity" in self.weights:
            raw["diversity"] = entropy_diversity(z, mask)
        if "svd" in self.weights:
            raw["svd"] = svd_share_batched(z, mask, self.top_k)
        with torch.no_grad():
            extra = {"entropy": -(raw["diversity"] if "diversity" in raw else entropy_diversity(z, mask)),
                     "topk_share": -(raw["svd"] if "svd" in raw else svd_share_batched(z, mask, self.top_k))}
            if "consistency" in raw:
                extra["kl_to_reference"] = raw["consistency"]
        return raw, {k: v.detach() for k, v in extra.items()}

    def epoch_row(self) -> dict[str, float]:
        """Means since the last call: task loss; each term raw, weighted and weighted / task."""
        means = {k: float(v) / max(1, self.steps) for k, v in self.sums.items()}
        task = means.pop("task", float("nan"))
        row = {"task_loss": task}
        for name, weight in self.weights.items():
            value = means.pop(name, float("nan"))
            row |= {f"{name}_raw": value, f"{name}_weighted": weight * value,
                    f"{name}_ratio": weight * value / max(task, 1e-12)}
        row |= means
        if self.reference is not None:
            row["reference_pass_s"] = self.timer.take()
        self.sums, self.steps = {}, 0
        return row
