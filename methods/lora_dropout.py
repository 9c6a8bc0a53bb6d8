"""LoRA Dropout: Bernoulli masks on the input columns of A and output rows of B, test-time ensemble."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from bench.sdk import (
    CausalFitted,
    CellError,
    Encoded,
    FitContext,
    ModelFitted,
    head_names,
    load_peft,
    predict_logits,
    register_method,
    softmax,
    train,
    train_causal,
    val_curve_hook,
    wrap_causal_lora,
    wrap_lora,
)

Masks = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class LoraDropoutConfig:
    """LoRA Dropout (Lin et al., arXiv 2404.09610; METHODS.md §3) on a plain peft LoRA host.

    The mask formula is [3rd] (a public reimplementation), the sparsity 2p − p² is [3rd]; the
    defaults of p, N, the mask granularity and the rescaling are [proposed] (METHODS.md §3.2),
    since the paper's values could not be read offline.
    """

    r: int = 8
    """Rank of A and B."""
    alpha: float = 16.0
    """Scale numerator: the update is (alpha / r) * B A."""
    target_modules: tuple[str, ...] | None = None
    """Module names to adapt; None takes peft's default for the architecture."""
    p: float = 0.1
    """Dropout rate on the input columns of A and the output rows of B [proposed]."""
    ensemble: int = 8
    """Test-time ensemble size N of the headline prediction; N=1 is the deterministic pass.
    On a generation task, N of the model lm-eval scores (N times the evaluation's compute)."""
    ensemble_sizes: tuple[int, ...] = (1, 2, 4, 8, 16)
    """Ensemble sizes scored as prediction variants (``ensemble_n{N}``)."""
    rescale: bool = True
    """Scale both masks by 1/(1−p), so the deterministic pass uses the unmasked adapter."""
    per_example: bool = False
    """Training masks per example; default one mask per module per forward pass."""

    def __post_init__(self) -> None:
        if self.r < 1:
            raise ValueError(f"Invalid rank: {self.r}")
        if not 0.0 <= self.p < 1.0:
            raise ValueError(f"Invalid p: {self.p}")
        if self.ensemble < 1:
            raise ValueError(f"Invalid ensemble: {self.ensemble}")
        sizes = self.ensemble_sizes
        if not sizes or min(sizes) < 1 or len(set(sizes)) != len(sizes):
            raise ValueError(f"Invalid ensemble_sizes: {self.ensemble_sizes}")


@dataclass
class MaskState:
    """Mask settings and state shared by the hooks of one model (no global state).

    Masks are drawn fresh per forward pass in train mode; in eval mode they are off unless
    ``fixed`` holds an ensemble member's masks (raw 0/1, one pair per layer index).
    """

    p: float
    rescale: bool
    per_example: bool
    fixed: dict[int, Masks] | None = None
    zero_sum: Any = 0.0
    draws: int = 0
    pending: dict[int, torch.Tensor] = field(default_factory=dict)

    def mask(self, layer: int, side: int, x: torch.Tensor, training: bool) -> torch.Tensor | None:
        """The (scaled) mask for ``x``'s last dim: side 0 = A's input, 1 = B's output; None = off."""
        if self.fixed is not None:
            raw = self.fixed[layer][side].to(x.device)
            if raw.dim() == 2:  # an ensemble batch (CausalEnsemble): rows n*B .. (n+1)*B-1 are member n's
                rows = raw.repeat_interleave(x.shape[0] // raw.shape[0], dim=0)
                raw = rows.view(x.shape[0], *[1] * (x.dim() - 2), x.shape[-1])
        elif training and self.p > 0:
            shape = (x.shape[0], *[1] * (x.dim() - 2), x.shape[-1]) if self.per_example else (x.shape[-1],)
            raw = torch.bernoulli(torch.full(shape, 1.0 - self.p, device=x.device))
        elif training:
            raw = torch.ones(x.shape[-1], device=x.device)  # p=0: no draw, the RNG stream is LoRA's
        else:
            return None
        self._record(layer, side, raw)
        scale = 1.0 / (1.0 - self.p) if self.rescale else 1.0
        return (raw * scale).to(x.dtype)

    def _record(self, layer: int, side: int, raw: torch.Tensor) -> None:
        keep = raw.detach().float().mean(dim=-1)
        if side == 0:
            self.pending[layer] = keep
            return
        zero = 1.0 - self.pending.pop(layer) * keep  # zero fraction of m_B m_Aᵀ
        self.zero_sum = self.zero_sum + zero.mean()
        self.draws += 1

    def pop_sparsity(self) -> float:
        """Mean realised zero fraction of ΔW's mask since the last call (NaN if none drawn)."""
        value = float(self.zero_sum) / self.draws if self.draws else float("nan")
        self.zero_sum, self.draws = 0.0, 0
        return value


def lora_layers(model: nn.Module) -> list[Any]:
    """The peft LoRA layers of ``model`` carrying the ``default`` adapter, in module order."""
    from peft.tuners.lora import LoraLayer

    return [m for m in model.modules() if isinstance(m, LoraLayer) and "default" in m.lora_A]


def attach_masks(model: nn.Module, config: LoraDropoutConfig) -> MaskState:
    """Register the mask hooks on every LoRA layer's A (input) and B (output); return their state."""
    state = MaskState(p=config.p, rescale=config.rescale, per_example=config.per_example)
    for index, layer in enumerate(lora_layers(model)):

        def pre_a(module: nn.Module, args: tuple[Any, ...], i: int = index) -> Any:
            mask = state.mask(i, 0, args[0], module.training)
            return None if mask is None else (args[0] * mask, *args[1:])

        def post_b(module: nn.Module, args: tuple[Any, ...], out: torch.Tensor, i: int = index) -> Any:
            mask = state.mask(i, 1, out, module.training)
            return None if mask is None else out * mask

        layer.lora_A["default"].register_forward_pre_hook(pre_a)
        layer.lora_B["default"].register_forward_hook(post_b)
    return state


def member_masks(model: nn.Module, p: float, seed: int) -> dict[int, Masks]:
    """Raw masks of one ensemble member, drawn on the CPU from ``seed`` (device-independent)."""
    gen = torch.Generator().manual_seed(seed)
    out: dict[int, Masks] = {}
    for index, layer in enumerate(lora_layers(model)):
        d_in, d_out = layer.lora_A["default"].in_features, layer.lora_B["default"].out_features
        out[index] = (torch.bernoulli(torch.full((d_in,), 1.0 - p), generator=gen),
                      torch.bernoulli(torch.full((d_out,), 1.0 - p), generator=gen))
    return out


def member_seed(base: int, member: int) -> int:
    """Seed of ensemble member ``member``: distinct streams for every (base, member)."""
    return int(np.random.SeedSequence([base, member]).generate_state(1)[0])


#: Forward arguments of a causal LM that carry the batch axis; the ensemble repeats them N times.
BATCHED_INPUTS = ("input_ids", "attention_mask", "position_ids", "inputs_embeds", "token_type_ids")


def stacked_members(model: nn.Module, p: float, seed: int, n: int, device: torch.device) -> dict[int, Masks]:
    """Raw masks of members 0..n−1 stacked per layer (``[n, d_in]``, ``[n, d_out]``), as in :func:`member_masks`."""
    members = [member_masks(model, p, member_seed(seed, k)) for k in range(n)]
    return {i: (torch.stack([m[i][0] for m in members]).to(device), torch.stack([m[i][1] for m in members]).to(device))
            for i in members[0]}


def log_mean_softmax(logits: torch.Tensor, n: int) -> torch.Tensor:
    """``log((1/n) Σ_k softmax(z_k))`` in float32 for ``[n·B, …]`` logits whose rows k·B..(k+1)·B−1 are member k's.

    Members are folded in one at a time (``logaddexp``), so at most two float32 ``[B, T, V]``
    tensors exist beside the members' logits.
    """
    out: torch.Tensor | None = None
    for member in logits.reshape(n, -1, *logits.shape[1:]):
        logp = torch.log_softmax(member.float(), dim=-1)
        out = logp if out is None else torch.logaddexp(out, logp)
    assert out is not None
    return out - math.log(n)


def _repeat(value: Any, n: int) -> Any:
    return value.repeat(n, *[1] * (value.dim() - 1)) if isinstance(value, torch.Tensor) else value


def attach_causal_ensemble(model: nn.Module, state: MaskState, masks: dict[int, Masks]) -> None:
    """Make every eval-mode forward of the causal LM inside ``model`` the N-member ensemble (METHODS.md §3.1 step 7).

    A pre-hook on the transformers model (under peft's wrappers) repeats the batch N times
    (member k's rows are k·B..(k+1)·B−1, each with its own fixed masks through ``state``) and a
    post-hook replaces the logits ``[N·B, T, V]`` by ``log`` of the members' mean softmax
    ``[B, T, V]`` (float32). Whatever calls the model sees one model whose next-token
    distribution is the ensemble's: lm-eval's loglikelihood (``model(ids).logits``) and
    ``generate`` alike, where the KV cache holds the N·B member rows (members keep their masks for
    the whole sequence) and greedy decoding takes the argmax of the mean. Training (train
    mode) is untouched. Costs N times a plain forward in time and activation memory.
    """
    n = next(iter(masks.values()))[0].shape[0]
    inner: nn.Module = model.get_base_model()  # type: ignore[operator]

    def pre(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if module.training:
            return None
        if kwargs.get("labels") is not None:
            raise CellError("lora-dropout: the test-time ensemble returns probabilities, not a loss; "
                            "pass no labels in eval mode")
        state.fixed = masks
        return (tuple(_repeat(a, n) for a in args[:1]) + args[1:],
                {k: _repeat(v, n) if k in BATCHED_INPUTS else v for k, v in kwargs.items()})

    def post(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> Any:
        if module.training:
            return None
        state.fixed = None
        output.logits = log_mean_softmax(output.logits, n)
        return output

    inner.register_forward_pre_hook(pre, with_kwargs=True)
    inner.register_forward_hook(post, with_kwargs=True)


@dataclass(kw_only=True)
class LoraDropoutFitted(ModelFitted):
    """A LoRA Dropout model: deterministic pass, or the mean softmax of N seeded masked passes.

    Parameter counts and ``save`` (a plain peft adapter) come from :class:`ModelFitted`.
    """

    state: MaskState
    config: LoraDropoutConfig
    seed: int
    _members: tuple[Encoded, list[NDArray[np.float64]]] | None = field(default=None, repr=False)
    """The member passes of the last data scored: the runner's headline prediction (N=8) and
    its variants (N up to 16) share them instead of running the first 8 members twice."""

    def _pass(self, data: Encoded, member: int | None) -> NDArray[np.float64]:
        """Softmax of one pass: deterministic (``member=None``) or with member's fixed masks."""
        if member is not None:
            self.state.fixed = member_masks(self.model, self.config.p, member_seed(self.seed, member))
        try:
            logits = predict_logits(self.model, data, batch_size=self.batch_size, device=self.device,
                                    precision=self.precision, pad_id=self.pad_id)
        finally:
            self.state.fixed = None
        return softmax(logits)

    def members(self, data: Encoded, n: int) -> list[NDArray[np.float64]]:
        """Probabilities of ensemble members 0..n−1 (passes already run on ``data`` are reused)."""
        done = self._members[1] if self._members is not None and self._members[0] is data else []
        done = done + [self._pass(data, k) for k in range(len(done), n)]
        self._members = (data, done)
        return done[:n]

    def predict_proba(self, data: Encoded) -> NDArray[np.float64]:
        """N=``ensemble`` prediction: the deterministic pass for N=1, else the member mean."""
        if self.config.ensemble == 1:
            return self._pass(data, None)
        return np.asarray(np.mean(self.members(data, self.config.ensemble), axis=0))

    def predict_variants(self, data: Encoded) -> dict[str, NDArray[np.float64]]:
        """``ensemble_n{N}`` for every size (max(sizes) passes, prefix means) and ``masked_n1``."""
        largest = max(self.config.ensemble_sizes)
        members = self.members(data, largest) if largest > 1 else []
        cumulative, out = (np.cumsum(members, axis=0) if members else np.zeros((0,))), {}
        for n in sorted(self.config.ensemble_sizes):
            out[f"ensemble_n{n}"] = self._pass(data, None) if n == 1 else cumulative[n - 1] / n
        if members:
            out["masked_n1"] = members[0]
        return out

@register_method("lora-dropout", config=LoraDropoutConfig, version="2", kinds=("classification", "generation"))
class LoraDropoutAdapter:
    """LoRA whose A columns and B rows are dropped while training; a test-time mask ensemble.

    On a generation task the same masks train a causal LM with the SFT loss
    (``bench.sdk.causal``), and the fitted model is the ``ensemble``-member ensemble of
    :func:`attach_causal_ensemble` (the deterministic pass for ``ensemble=1``); lm-eval scores
    that one model, so ``ensemble_sizes`` apply to classification only.
    """

    def __init__(self, config: LoraDropoutConfig) -> None:
        self.config = config

    def _fitted(self, model: nn.Module, state: MaskState, ctx: FitContext) -> LoraDropoutFitted:
        expected = 2 * self.config.p - self.config.p ** 2
        return LoraDropoutFitted(model=model, state=state, config=self.config, seed=ctx.seed,
                                 device=ctx.device, precision=ctx.precision, pad_id=ctx.tokenizer.pad_token_id,
                                 batch_size=ctx.train_config.eval_batch_size,
                                 diagnostics={"mask_sparsity_expected": expected})

    def _causal_fitted(self, model: nn.Module, state: MaskState, ctx: FitContext) -> CausalFitted:
        c = self.config
        model.eval()
        if c.ensemble > 1:
            attach_causal_ensemble(model, state, stacked_members(model, c.p, ctx.seed, c.ensemble, ctx.device))
        return CausalFitted(model, ctx.tokenizer, ctx.device, ctx.precision,
                            diagnostics={"mask_sparsity_expected": 2 * c.p - c.p ** 2, "ensemble": c.ensemble})

    def fit(self, ctx: FitContext) -> LoraDropoutFitted | CausalFitted:
        """Wrap (peft dropout 0), attach the masks, train with cross-entropy (or SFT), log sparsity."""
        if ctx.kind == "generation":
            return self._fit_causal(ctx)
        base = ctx.new_model()
        head = head_names(base)
        cfg = asdict(self.config)
        model = wrap_lora(base, head=head, r=cfg["r"], alpha=cfg["alpha"], dropout=0.0,
                          target_modules=cfg["target_modules"])
        state = attach_masks(model, self.config)
        per_epoch: list[float] = []

        def log(row: dict[str, Any]) -> None:
            per_epoch.append(state.pop_sparsity())
            ctx.log({**row, "mask_sparsity": per_epoch[-1]})

        train(model, ctx, head=head, on_epoch_end=val_curve_hook(replace(ctx, log=log), model))
        fitted = self._fitted(model, state, ctx)
        fitted.diagnostics["mask_sparsity_train"] = float(np.mean(per_epoch)) if per_epoch else None
        return fitted

    def _fit_causal(self, ctx: FitContext) -> CausalFitted:
        c = self.config
        model = wrap_causal_lora(ctx.new_model(), r=c.r, alpha=c.alpha, dropout=0.0, target_modules=c.target_modules)
        state = attach_masks(model, c)
        per_epoch: list[float] = []

        def row() -> dict[str, Any]:
            per_epoch.append(state.pop_sparsity())
            return {"mask_sparsity": per_epoch[-1]}

        train_causal(ctx, model, epoch_row=row)
        fitted = self._causal_fitted(model, state, ctx)
        fitted.diagnostics["mask_sparsity_train"] = float(np.mean(per_epoch)) if per_epoch else None
        return fitted

    def load(self, ctx: FitContext, directory: Path) -> LoraDropoutFitted | CausalFitted:
        """Load the saved adapter (and head) onto a fresh base and re-attach the mask hooks."""
        model = load_peft(ctx.new_model(), directory)
        if ctx.kind == "generation":
            model = model.to(ctx.device)
            return self._causal_fitted(model, attach_masks(model, self.config), ctx)
        return self._fitted(model, attach_masks(model, self.config), ctx)
