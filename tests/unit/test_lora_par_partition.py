"""LoRA-PAR partition: top-share sets, stage masks, importance against per-example gradients, MaskKeeper."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from bench.data.sft import SftData
from bench.sdk import wrap_causal_lora
from methods.lora_par_partition import (
    MaskKeeper,
    Partition,
    breakdown,
    flat_scores,
    importance,
    lora_parameters,
    partition,
    random_partition,
    reinit_normal,
    top_share,
)

CPU = torch.device("cpu")
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@pytest.fixture(scope="module")
def base() -> torch.nn.Module:
    """A 2-layer random Llama (vocab 16, hidden 8): small enough for per-example gradients in milliseconds."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=16, hidden_size=8, intermediate_size=16, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=32,
                         tie_word_embeddings=True, pad_token_id=0)
    torch.manual_seed(0)
    return LlamaForCausalLM(config).eval()


def _lora(base: torch.nn.Module, *, normal: bool = True, dropout: float = 0.2) -> torch.nn.Module:
    """A peft LoRA (r=2, with LoRA dropout so that eval mode matters) on a copy of ``base``."""
    model = wrap_causal_lora(copy.deepcopy(base), r=2, alpha=4, dropout=dropout, target_modules=TARGETS)
    if normal:
        reinit_normal(model, std=0.2, seed=3)
    return model


def _data() -> SftData:
    """Three sequences: prompt tokens (mask False) then answer tokens (mask True)."""
    ids = [[2, 6, 7, 8, 9, 3, 13, 1], [2, 6, 7, 10, 3, 11, 4, 1], [2, 5, 3, 12, 1]]
    masks = [[0, 0, 0, 0, 0, 1, 1, 1], [0, 0, 0, 0, 0, 0, 1, 1], [0, 0, 1, 1, 1]]
    return SftData([np.asarray(i, np.int64) for i in ids], [np.asarray(m, bool) for m in masks], np.arange(3))


def _reference(model: torch.nn.Module, data: SftData, index: list[int], kind: str) -> dict[str, torch.Tensor]:
    """Independent importance: per-example autograd.grad of a hand-written answer-token loss, then the formula."""
    params = lora_parameters(model)
    model.eval()
    per_example: list[list[torch.Tensor]] = []
    for i in index:
        ids, mask = torch.from_numpy(data.input_ids[i]), torch.from_numpy(data.target_masks[i])
        logits = model(input_ids=ids[None]).logits[0]
        scored = mask[1:]  # token t+1 is predicted at position t; only answer tokens count
        loss = torch.nn.functional.cross_entropy(logits[:-1][scored], ids[1:][scored])
        per_example.append([g.double() for g in torch.autograd.grad(loss, list(params.values()))])
    out = {}
    for j, (name, p) in enumerate(params.items()):
        g = torch.stack([grads[j] for grads in per_example])  # (N, *shape)
        phi = p.detach().double()
        if kind == "taylor2":
            out[name] = ((g * phi).mean(0) - 0.5 * ((g * phi) ** 2).mean(0)).abs()
        else:
            out[name] = g.mean(0).abs() * (g**2).mean(0)
    return out


# ---------------------------------------------------------------- top_share


def test_top_share_basic_and_theta_edges() -> None:
    scores = np.array([3.0, 4.0, 0.0, 0.0])
    # L2 norm 5 -> [0.6, 0.8, 0, 0]; sorted: 0.8 (#1), 0.6 (#0), 0, 0; cumsum 0.8, 1.4, 1.4, 1.4; total 1.4
    assert top_share(scores, 0.5).tolist() == [False, True, False, False]  # 0.7 <= 0.8: one element
    assert top_share(scores, 0.6).tolist() == [True, True, False, False]  # 0.84 > 0.8: two
    # theta = 1: the first prefix reaching 1.4 is #1, #0 - zero scores are never needed
    assert top_share(scores, 1.0).tolist() == [True, True, False, False]
    # tiny theta: the single largest element
    assert top_share(scores, 1e-9).tolist() == [False, True, False, False]


def test_top_share_ties_and_exact_boundary() -> None:
    ones = np.ones(4)
    # normalised 0.5 each, cumsum 0.5, 1.0, 1.5, 2.0; ties keep index order (stable sort)
    assert top_share(ones, 0.5).tolist() == [True, True, False, False]  # 1.0 >= 1.0 exactly
    assert top_share(ones, 0.51).tolist() == [True, True, True, False]  # 1.02 needs a third
    assert top_share(ones, 0.75).tolist() == [True, True, True, False]  # 1.5 >= 1.5
    # tie between #0 and #2 (both 2): sorted 5 (#1), 2 (#0), 2 (#2), 1 (#3); total 10, θ=0.7 -> 7 = 5 + 2
    assert top_share(np.array([2.0, 5.0, 2.0, 1.0]), 0.7).tolist() == [True, True, False, False]


@pytest.mark.parametrize("theta", [0.0, -0.1, 1.0001, math.nan])
def test_top_share_rejects_bad_theta(theta: float) -> None:
    with pytest.raises(ValueError, match="Invalid theta"):
        top_share(np.ones(3), theta)


def test_top_share_rejects_zero_and_negative_scores() -> None:
    with pytest.raises(ValueError, match="zero"):
        top_share(np.zeros(5), 0.9)
    with pytest.raises(ValueError, match="non-negative"):
        top_share(np.array([1.0, -1.0]), 0.9)


# ---------------------------------------------------------------- partition

IMP1 = np.array([8.0, 4.0, 2.0, 1.0, 1.0, 0.0, 0.0, 0.0])  # total 16
IMP2 = np.array([0.0, 4.0, 2.0, 8.0, 1.0, 1.0, 0.0, 0.0])  # total 16
NAMES, SHAPES = ("a", "b"), ((2, 2), (4,))


def _part(theta: float = 0.9, alpha: float = 1.0, beta: float = 1.0) -> Partition:
    return partition(IMP1, IMP2, theta=theta, alpha=alpha, beta=beta, names=NAMES, shapes=SHAPES)


def _idx(mask: np.ndarray) -> list[int]:
    return np.flatnonzero(mask).tolist()


def test_partition_sets_and_stats_by_hand() -> None:
    p = _part()
    # θ=0.9 -> 14.4 of 16. imp1 sorted 8(#0) 4(#1) 2(#2) 1(#3) 1(#4): cumsum 8, 12, 14, 15 -> S1 = {0,1,2,3}
    # imp2 sorted 8(#3) 4(#1) 2(#2) 1(#4) 1(#5): cumsum 8, 12, 14, 15 -> S2 = {1,2,3,4}
    assert _idx(p.s1) == [0, 1, 2, 3] and _idx(p.s2) == [1, 2, 3, 4]
    assert _idx(p.s1only) == [0] and _idx(p.s2only) == [4] and _idx(p.shared) == [1, 2, 3]
    # α = β = 1: every shared element in both stages
    assert _idx(p.stage1) == [0, 1, 2, 3] and _idx(p.stage2) == [1, 2, 3, 4]
    s = p.stats()
    assert (s["s1"], s["s2"], s["s1only"], s["s2only"], s["shared"], s["total"]) == (4, 4, 1, 1, 3, 8)
    assert s["jaccard"] == pytest.approx(3 / 5)  # |S1∩S2| = 3, |S1∪S2| = 5
    assert s["s1only_share"] == pytest.approx(1 / 8) and s["shared_share"] == pytest.approx(3 / 8)
    assert (s["stage1_active"], s["stage1_fraction"]) == (4, pytest.approx(0.5))
    masks = p.masks(1)
    assert masks["a"].dtype == torch.bool and masks["a"].tolist() == [[True, True], [True, True]]
    assert masks["b"].tolist() == [False, False, False, False]
    assert p.masks(2)["b"].tolist() == [True, False, False, False]
    with pytest.raises(ValueError, match="stage"):
        p.masks(3)


def test_partition_alpha_beta_truncation() -> None:
    # α = 0: stage 1 is S1only alone; β = 0.5: int(0.5 * 3) = 1 shared, the best by imp2 (#3: 8)
    p = _part(alpha=0.0, beta=0.5)
    assert _idx(p.stage1) == [0] and _idx(p.stage2) == [3, 4]
    # α = 0.5: int(1.5) = 1, the best shared by imp1 (#1: 4); β = 0.7: int(2.1) = 2 -> #3 (8), #1 (4)
    p = _part(alpha=0.5, beta=0.7)
    assert _idx(p.stage1) == [0, 1] and _idx(p.stage2) == [1, 3, 4]
    assert p.stats()["stage2_fraction"] == pytest.approx(3 / 8)


def test_partition_theta_one_keeps_all_non_zero() -> None:
    p = _part(theta=1.0)
    assert _idx(p.s1) == [0, 1, 2, 3, 4] and _idx(p.s2) == [1, 2, 3, 4, 5]
    assert p.stats()["jaccard"] == pytest.approx(4 / 6)


def test_partition_jaccard_zero_when_disjoint_or_empty() -> None:
    p = partition([1.0, 0.0], [0.0, 1.0], theta=0.5, alpha=1, beta=1, names=["x"], shapes=[(2,)])
    assert p.stats()["jaccard"] == 0.0 and p.stats()["shared"] == 0
    empty = np.zeros(2, bool)
    assert Partition(empty, empty, empty, empty, empty, empty, empty, ("x",), ((2,),)).stats()["jaccard"] == 0.0


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"alpha": -0.1}, "Invalid alpha"), ({"alpha": 1.5}, "Invalid alpha"), ({"beta": -1.0}, "Invalid beta"),
    ({"beta": 1.01}, "Invalid beta"), ({"theta": 0.0}, "Invalid theta"), ({"theta": 2.0}, "Invalid theta"),
])
def test_partition_rejects_bad_values(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _part(**kwargs)


def test_partition_rejects_size_mismatch_and_zero_importance() -> None:
    with pytest.raises(ValueError, match="do not match"):
        partition(IMP1[:7], IMP2, theta=0.9, alpha=1, beta=1, names=NAMES, shapes=SHAPES)
    with pytest.raises(ValueError, match="B = 0"):
        partition(np.zeros(8), IMP2, theta=0.9, alpha=1, beta=1, names=NAMES, shapes=SHAPES)


def test_random_partition_keeps_every_size() -> None:
    rng = np.random.default_rng(0)
    like = partition(rng.exponential(size=1000), rng.exponential(size=1000), theta=0.7, alpha=0.5, beta=1.0,
                     names=["w"], shapes=[(10, 100)])
    rand = random_partition(like, seed=1)
    assert rand.stats() == like.stats()
    assert rand.stage1.sum() == like.stage1.sum() and rand.stage2.sum() == like.stage2.sum()
    assert not np.array_equal(rand.stage1, like.stage1)
    assert np.array_equal(rand.s1only, rand.s1 & ~rand.s2) and np.array_equal(rand.shared, rand.s1 & rand.s2)
    assert np.array_equal(random_partition(like, seed=1).stage2, rand.stage2)
    assert not np.array_equal(random_partition(like, seed=2).stage1, rand.stage1)
    assert rand.masks(1)["w"].shape == (10, 100)


# ---------------------------------------------------------------- importance


def test_lora_parameters_order_and_names(base: torch.nn.Module) -> None:
    model = _lora(base)
    params = lora_parameters(model)
    assert len(params) == 2 * len(TARGETS) * 2  # layers x modules x (A, B)
    expected = [n for n, _ in model.named_parameters() if ".lora_A." in n or ".lora_B." in n]
    assert list(params) == expected
    assert list(params)[0].endswith("layers.0.self_attn.q_proj.lora_A.default.weight")


@pytest.mark.parametrize(("kind", "index"), [("taylor2", [0, 1, 2]), ("grad_fisher", [2, 0])])
def test_importance_matches_per_example_gradients(base: torch.nn.Module, kind: str, index: list[int]) -> None:
    model, data = _lora(base), _data()
    model.train()
    ours = importance(model, data, np.array(index), kind=kind, device=CPU, precision="fp32", pad_id=0)
    # modes restored (train, incl. LoRA dropout), no .grad left, requires_grad unchanged
    assert all(m.training for m in model.modules())
    assert all(p.grad is None for p in model.parameters())
    assert all(p.requires_grad for p in lora_parameters(model).values())
    ref = _reference(model, data, index, kind)
    assert list(ours) == list(ref)
    scale = max(float(v.max()) for v in ref.values())
    assert scale > 0
    for name in ref:
        assert ours[name].dtype == torch.float64 and ours[name].shape == ref[name].shape
        torch.testing.assert_close(ours[name], ref[name], rtol=1e-4, atol=1e-6 * scale)
    again = importance(model, data, np.array(index), kind=kind, device=CPU, precision="fp32", pad_id=0)
    assert all(torch.equal(again[n], ours[n]) for n in ours)  # eval mode: dropout off, deterministic


def test_importance_rejects_bad_kind_and_unscored_item(base: torch.nn.Module) -> None:
    model, data = _lora(base), _data()
    with pytest.raises(ValueError, match="kind"):
        importance(model, data, [0], kind="fisher", device=CPU, precision="fp32", pad_id=0)
    bad = SftData([np.array([2, 6, 7])], [np.array([True, False, False])], np.arange(1))
    with pytest.raises(ValueError, match="no answer token"):
        importance(model, bad, [0], device=CPU, precision="fp32", pad_id=0)


def test_zero_b_init_gives_zero_importance_and_reinit_fixes_it(base: torch.nn.Module) -> None:
    model, data = _lora(base, normal=False), _data()  # peft default: B = 0
    names = list(lora_parameters(model))
    shapes = [tuple(p.shape) for p in lora_parameters(model).values()]
    taylor = importance(model, data, [0, 1], device=CPU, precision="fp32", pad_id=0)
    assert all(float(v.abs().max()) == 0.0 for v in taylor.values())  # A: g = 0; B: φ = 0
    fisher = importance(model, data, [0, 1], kind="grad_fisher", device=CPU, precision="fp32", pad_id=0)
    assert all(float(v.max()) == 0.0 for n, v in fisher.items() if ".lora_A." in n)
    assert any(float(v.max()) > 0.0 for n, v in fisher.items() if ".lora_B." in n)
    with pytest.raises(ValueError, match="cannot be partitioned"):
        partition(flat_scores(taylor), flat_scores(taylor), theta=0.9, alpha=1, beta=1, names=names, shapes=shapes)
    reinit_normal(model, seed=0)
    taylor = importance(model, data, [0, 1], device=CPU, precision="fp32", pad_id=0)
    assert any(float(v.max()) > 0 for n, v in taylor.items() if ".lora_A." in n)
    assert any(float(v.max()) > 0 for n, v in taylor.items() if ".lora_B." in n)
    p = partition(flat_scores(taylor), flat_scores(taylor), theta=0.9, alpha=1, beta=1, names=names, shapes=shapes)
    assert 0 < p.stats()["s1"] < p.stats()["total"]


def test_reinit_normal_std_and_seed(base: torch.nn.Module) -> None:
    one, two = _lora(base, normal=False), _lora(base, normal=False)
    reinit_normal(one, seed=5)
    reinit_normal(two, seed=5)
    values = flat_scores({n: p.detach() for n, p in lora_parameters(one).items()})
    assert 0.008 < values.std() < 0.012 and abs(values.mean()) < 0.002  # std 0.01 (not variance 0.01: std 0.1)
    pairs = zip(lora_parameters(one).values(), lora_parameters(two).values(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)
    reinit_normal(two, seed=6)
    assert not torch.equal(next(iter(lora_parameters(one).values())), next(iter(lora_parameters(two).values())))


def test_breakdown_rows_by_hand_and_on_a_model(base: torch.nn.Module) -> None:
    head = "base_model.model.model.layers"
    rows = breakdown({f"{head}.1.mlp.down_proj.lora_B.default.weight": torch.tensor([[4.0, 0.0]]),
                      f"{head}.0.self_attn.q_proj.lora_A.default.weight": torch.tensor([[3.0]])})
    # L2 norm 5: q/A holds 0.6; down/B holds 0.8 and 0 (mean 0.4); shares 0.6 / 1.4 and 0.8 / 1.4
    assert [(r["layer"], r["module"], r["matrix"], r["count"]) for r in rows] == [(0, "q", "A", 1), (1, "down", "B", 2)]
    assert rows[0]["sum"] == pytest.approx(0.6) and rows[1]["mean"] == pytest.approx(0.4)
    assert rows[1]["max"] == pytest.approx(0.8) and rows[0]["share"] == pytest.approx(0.6 / 1.4)
    model = _lora(base)
    imp = importance(model, _data(), [0], device=CPU, precision="fp32", pad_id=0)
    rows = breakdown(imp)
    assert len(rows) == 2 * len(TARGETS) * 2
    assert set(rows[0]) == {"layer", "module", "matrix", "count", "sum", "mean", "max", "share"}
    assert [r["module"] for r in rows[:14:2]] == ["q", "k", "v", "o", "gate", "up", "down"]
    assert sum(r["count"] for r in rows) == flat_scores(imp).size
    assert sum(r["share"] for r in rows) == pytest.approx(1.0)


# ---------------------------------------------------------------- MaskKeeper


def _step_loss(model: torch.nn.Module, data: SftData) -> torch.Tensor:
    ids = torch.from_numpy(data.input_ids[0])[None]
    labels = torch.where(torch.from_numpy(data.target_masks[0])[None], ids, -100)
    out: torch.Tensor = model(input_ids=ids, labels=labels).loss
    return out


def test_mask_keeper_freezes_exactly_under_adamw_decay(base: torch.nn.Module) -> None:
    model, data = _lora(base, dropout=0.0), _data()
    params = lora_parameters(model)
    rng = np.random.default_rng(0)
    masks = {n: torch.from_numpy(rng.random(tuple(p.shape)) < 0.4) for n, p in params.items()}
    initial = {n: p.detach().clone() for n, p in params.items()}
    keeper = MaskKeeper(masks).register(model)
    optimizer = torch.optim.AdamW(params.values(), lr=1e-2, weight_decay=0.1)
    for step in range(4):
        optimizer.zero_grad()
        _step_loss(model, data).backward()
        assert all(float(p.grad[~masks[n]].abs().max()) == 0.0 for n, p in params.items())  # hooks zero them
        optimizer.step()
        if step == 0:
            assert not keeper.frozen_unchanged()  # decoupled weight decay moved frozen elements
        keeper.restore()
        assert keeper.frozen_unchanged()
    for n, p in params.items():
        assert torch.equal(p.detach()[~masks[n]], initial[n][~masks[n]])
        assert bool((p.detach() != initial[n])[masks[n]].all())  # every trainable element moved
    keeper.remove()
    optimizer.zero_grad()
    _step_loss(model, data).backward()
    assert any(float(p.grad[~masks[n]].abs().max()) > 0 for n, p in params.items())  # hooks gone


def test_mask_keeper_rejects_mismatched_masks(base: torch.nn.Module) -> None:
    model = _lora(base)
    params = lora_parameters(model)
    first = next(iter(params))
    with pytest.raises(ValueError, match="masks cover"):
        MaskKeeper({first: torch.ones(params[first].shape, dtype=torch.bool)}).register(model)
    wrong = {n: torch.ones(3, dtype=torch.bool) for n in params}
    with pytest.raises(ValueError, match="shape"):
        MaskKeeper(wrong).register(model)
    with pytest.raises(RuntimeError, match="before register"):
        MaskKeeper(wrong).restore()
