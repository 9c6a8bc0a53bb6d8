"""Noisy-label methods: Delora's pieces against hand-computed values, selection helpers,
Co-Teaching's exchange, relabelers, and the runner's detection curves."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bench.errors import CellError
from bench.evaluate.classification import relabel_metrics, selection_curves
from bench.sdk.noisy import (
    cross_entropy_np,
    gmm_clean_probability,
    masked_mean,
    reverse_cross_entropy,
    smallest_fraction,
)
from bench.sdk.registry import get_method
from bench.spec.config import build
from methods.co_teaching import exchange_loss, keep_rate
from methods.delora import DeloraAdapter
from methods.delora_detector import (
    CLEAN,
    NOISY,
    DetectorObjective,
    clean_probability,
    detector_model,
    parameter_change,
    taus,
)
from methods.relabel import _option_scores, from_file, relabel, zero_shot
from methods.small_loss import SmallLossConfig, select_small_loss
from tests.helpers import make_ctx

# ---------------------------------------------------------------- Delora formulas


def test_clean_probability_is_the_softmax_of_negative_losses() -> None:
    lc, ln = torch.tensor([0.2, 1.5, 0.7]), torch.tensor([0.9, 0.3, 0.7])
    expected = torch.exp(-lc) / (torch.exp(-lc) + torch.exp(-ln))
    assert torch.allclose(clean_probability(lc, ln), expected)
    # p^c > 0.5 exactly when the clean loss is below the noisy-LoRA threshold
    assert (clean_probability(lc, ln) > 0.5).tolist() == [True, False, False]


def test_taus_grow_and_decay() -> None:
    assert taus(1, 1.0, 1.0) == (1.0, 1.0)
    assert taus(2, 1.0, 1.0) == (2.0, 0.5)
    assert taus(4, 0.5, 2.0) == (2.0, 1 / 16)


def test_parameter_change_is_the_frobenius_norm_over_all_tensors() -> None:
    params = [torch.nn.Parameter(torch.tensor([3.0, 0.0])), torch.nn.Parameter(torch.tensor([[4.0]]))]
    snapshot = [torch.zeros(2), torch.zeros(1, 1)]
    assert parameter_change(params, snapshot).item() == pytest.approx(5.0)
    assert parameter_change(params, [p.detach() for p in params]).item() == pytest.approx(1e-6)


def test_reverse_cross_entropy_clips_log_zero() -> None:
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
    labels = torch.tensor([0, 2])
    p = F.softmax(logits, -1)
    # -sum_k p_k log q_k with q one-hot and log 0 := -4: only the k != y terms remain
    by_hand = torch.stack([-(p[i] * torch.where(torch.arange(3) == labels[i], 0.0, -4.0)).sum() for i in range(2)])
    assert torch.allclose(reverse_cross_entropy(logits, labels), by_hand)
    assert reverse_cross_entropy(logits, labels)[1].item() == pytest.approx(4 * (1 - 1 / 3))


def _objective_batch(config: dict):
    entry = get_method("delora-nld")
    cfg = build(entry.config, {"r": 4, "alpha": 8, "dropout": 0.0, **config}, "delora-nld")
    ctx = make_ctx()
    model, _ = detector_model(ctx, cfg)
    with torch.no_grad():  # move the adapters off their zero init so the passes differ
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    objective = DetectorObjective(model, cfg)
    index = np.arange(8)
    from bench.sdk.loop import collate

    inputs = collate(ctx.train, index, 0, torch.device("cpu"))
    return model, objective, inputs, torch.from_numpy(ctx.train.labels[index]), index


def _passes(model, inputs, labels):
    from bench.sdk.adapters import selected

    out = {}
    for key, names in (("c", [CLEAN]), ("n", [NOISY]), ("b", [CLEAN, NOISY])):
        with selected(model, names):
            out[key] = F.cross_entropy(model(**inputs).logits, labels, reduction="none")
    return out


def test_detector_objective_matches_the_formula_in_warm_up_and_after() -> None:
    config = {"warmup_epochs": 1, "lambda_lora": 0.5, "t_mode": "epoch", "detector_targets": "self"}
    model, objective, inputs, labels, index = _objective_batch(config)
    model.eval()
    with torch.no_grad():  # change the clean adapter since the snapshot: Δσ_c = ||δ|| = 0.3 * sqrt(n)
        clean = objective.params[CLEAN]
        for p in clean:
            p.add_(0.3)
    n_clean = sum(p.numel() for p in clean)
    losses = _passes(model, inputs, labels)
    warm = objective(model, inputs, labels, index).item()  # epoch 1 = warm-up: τ1 = τ2 = 1, no L_Det
    assert warm == pytest.approx(losses["b"].mean().item() + 0.5 * 0.3 * math.sqrt(n_clean), rel=1e-5)
    objective.epoch = 2  # τ1 = 2, τ2 = 1/2, L_Det on
    after = objective(model, inputs, labels, index).item()
    target = (losses["c"] < losses["n"]).float()
    det = F.binary_cross_entropy(torch.sigmoid(losses["n"] - losses["c"]), target).item()
    expected = losses["b"].mean().item() + 0.5 * 2 * 0.3 * math.sqrt(n_clean) + det
    assert after == pytest.approx(expected, rel=1e-5)
    assert set(objective.epoch_means()) == {"loss_ce", "loss_lora", "loss_det"}


def test_detector_objective_uses_the_frozen_targets_when_given() -> None:
    # GMM targets (the default) are set once at the end of warm-up; L_Det is BCE of p^c towards them
    model, objective, inputs, labels, index = _objective_batch({"warmup_epochs": 1, "lambda_lora": 0.0})
    model.eval()
    objective.targets = torch.tensor([1.0, 0.0] * 4)
    objective.epoch = 2
    losses = _passes(model, inputs, labels)
    value = objective(model, inputs, labels, index).item()
    det = F.binary_cross_entropy(torch.sigmoid(losses["n"] - losses["c"]), objective.targets).item()
    assert value == pytest.approx(losses["b"].mean().item() + det, rel=1e-5)


def test_gmm_targets_are_fitted_once_at_the_end_of_warm_up(monkeypatch) -> None:
    calls: list[int] = []
    entry = get_method("delora-nld")
    assert entry.config().detector_targets == "gmm"

    def spy(self, model, ctx):
        calls.append(len(rows))
        return np.ones(len(ctx.train), dtype=np.float32)

    monkeypatch.setattr(DeloraAdapter, "_gmm_targets", spy)
    rows: list[dict] = []
    cfg = {"r": 4, "alpha": 8, "detector_epochs": 3, "warmup_epochs": 1, "classifier_epochs": 1}
    entry.adapter(build(entry.config, cfg, "d")).detect(make_ctx(log=rows.append))
    assert calls == [0]  # once, before epoch 1's row is logged, and never again
    assert ["loss_det" in r for r in rows if "detector_epoch" in r] == [False, True, True]


def test_detector_objective_separate_ce_mode() -> None:
    model, objective, inputs, labels, index = _objective_batch({"ce_mode": "separate", "lambda_lora": 0.0})
    model.eval()
    losses = _passes(model, inputs, labels)
    value = objective(model, inputs, labels, index).item()
    assert value == pytest.approx((losses["c"].mean() + losses["n"].mean()).item(), rel=1e-5)


def test_detector_trains_both_adapters_and_the_shared_head_only() -> None:
    entry = get_method("delora-nld")
    model, _ = detector_model(make_ctx(), build(entry.config, {"r": 4}, "delora-nld"))
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert any(f".{CLEAN}." in n for n in names) and any(f".{NOISY}." in n for n in names)
    assert all("lora_" in n or "classifier" in n or ".pooler." in n for n in names)
    # the head is what every other method trains: BERT's pooler too (it was frozen here, matched
    # only at the start of a name, while it sits at bert.pooler)
    head = [n for n, _ in model.named_parameters() if ".pooler." in n or n.split(".")[-2] == "classifier"]
    assert {n for n in head if "pooler" in n} and set(head) <= set(names)


def test_delora_without_detector_is_plain_lora() -> None:
    # ablation "no detector": the classifier stage alone must be the `lora` method
    ctx = make_ctx(epochs=3)
    delora = get_method("delora-nld")
    lora = get_method("lora")
    a = delora.adapter(build(delora.config, {"r": 4, "alpha": 8, "detector": False, "classifier_epochs": 3}, "d"))
    b = lora.adapter(build(lora.config, {"r": 4, "alpha": 8}, "lora"))
    pa, pb = a.fit(ctx).predict_proba(ctx.val), b.fit(ctx).predict_proba(ctx.val)
    assert np.abs(pa - pb).max() < 1e-6


def test_delora_classifier_loss_uses_rce_for_relabelled_items() -> None:
    entry = get_method("delora-nld")
    method = entry.adapter(build(entry.config, {}, "delora-nld"))
    loss = method._classifier_loss(3)
    logits = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]])

    class Fixed(torch.nn.Module):
        def forward(self, **_):
            return type("Out", (), {"logits": logits})()

    labels = torch.tensor([0, 1 + 3])  # item 2 was relabelled to class 1
    value = loss(Fixed(), {}, labels).item()
    p = F.softmax(logits, -1)
    expected = (-torch.log(p[0, 0]) + 4 * (1 - p[1, 1])) / 2
    assert value == pytest.approx(expected.item(), rel=1e-6)


def test_delora_records_its_selection_and_relabels() -> None:
    rows: list[dict] = []
    entry = get_method("delora-nld")
    cfg = {"r": 4, "alpha": 8, "detector_epochs": 2, "warmup_epochs": 1, "classifier_epochs": 1}
    fitted = entry.adapter(build(entry.config, cfg, "d")).fit(make_ctx(log=rows.append))
    d = fitted.diagnostics
    assert [e["epoch"] for e in d["selection_history"]] == [1, 2]
    assert np.array_equal(d["selected_clean"], d["selection_history"][-1]["selected_clean"])
    flagged = ~d["selected_clean"]
    assert ((d["relabels"] >= 0) == flagged).all()
    assert [r["detector_epoch"] for r in rows if "detector_epoch" in r] == [1, 2]
    assert fitted.trainable_parameters() == d["detector_params"] + d["classifier_params"]


def test_delora_config_rejects_bad_values() -> None:
    entry = get_method("delora-nld")
    for bad in ({"relabeler": "gpt4o"}, {"relabeler": "file"}, {"warmup_epochs": 9}, {"lambda_ce": 0, "lambda_det": 0},
                {"detector_targets": "gmm", "warmup_epochs": 0}):
        with pytest.raises(Exception, match="Invalid|needs"):
            build(entry.config, bad, "delora-nld")


# ---------------------------------------------------------------- selection helpers


def test_cross_entropy_np_matches_torch() -> None:
    logits = np.array([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]], dtype=np.float32)
    labels = np.array([2, 0])
    expected = F.cross_entropy(torch.from_numpy(logits), torch.from_numpy(labels), reduction="none").numpy()
    assert np.allclose(cross_entropy_np(logits, labels), expected, atol=1e-6)


def test_smallest_fraction_and_masked_mean() -> None:
    assert smallest_fraction(np.array([0.5, 0.1, 0.9, 0.3]), 0.5).tolist() == [False, True, False, True]
    assert smallest_fraction(np.array([0.5, 0.1, 0.9]), 0.5).tolist() == [True, True, False]  # ceil(1.5) = 2
    values = torch.tensor([1.0, 2.0, 4.0], requires_grad=True)
    assert masked_mean(values, torch.tensor([True, False, True])).item() == 2.5
    assert masked_mean(values, torch.tensor([False, False, False])).item() == 0.0


def test_gmm_separates_two_loss_modes() -> None:
    rng = np.random.default_rng(0)
    losses = np.concatenate([rng.normal(0.1, 0.02, 80), rng.normal(2.0, 0.2, 20)])
    p = gmm_clean_probability(losses, seed=0)
    assert (p[:80] > 0.5).all() and (p[80:] < 0.5).all()
    assert gmm_clean_probability(np.ones(5), seed=0).tolist() == [1.0] * 5  # no spread: all clean


def test_small_loss_ratio_selection_uses_given_or_estimated_rate() -> None:
    rng = np.random.default_rng(1)
    losses = np.concatenate([rng.normal(0.1, 0.02, 75), rng.normal(2.0, 0.2, 25)])
    keep, rate = select_small_loss(losses, SmallLossConfig(selection="ratio", noise_rate=0.1), seed=0)
    assert rate == 0.1 and keep.sum() == 90 and keep[:75].all()
    keep, rate = select_small_loss(losses, SmallLossConfig(selection="ratio"), seed=0)
    assert rate == pytest.approx(0.25) and keep.tolist() == [True] * 75 + [False] * 25
    keep, rate = select_small_loss(losses, SmallLossConfig(), seed=0)  # gmm
    assert keep.tolist() == [True] * 75 + [False] * 25 and rate == pytest.approx(0.25)


# ---------------------------------------------------------------- Co-Teaching


def test_keep_rate_schedule() -> None:
    assert keep_rate(0, 0.4, 2.0) == 1.0
    assert keep_rate(1, 0.4, 2.0) == pytest.approx(0.8)
    assert keep_rate(5, 0.4, 2.0) == pytest.approx(0.6)


def test_exchange_loss_trains_each_network_on_the_peers_easy_samples() -> None:
    a = torch.tensor([1.0, 2.0, 3.0, 4.0], requires_grad=True)
    b = torch.tensor([4.0, 3.0, 2.0, 1.0], requires_grad=True)
    total = exchange_loss(a, b, keep=0.5)
    assert total.item() == pytest.approx(3.5 + 3.5)  # a on b's easy {2, 3}; b on a's easy {0, 1}
    total.backward()
    assert a.grad.tolist() == [0.0, 0.0, 0.5, 0.5]
    assert b.grad.tolist() == [0.5, 0.5, 0.0, 0.0]


def test_co_teaching_averages_its_two_networks() -> None:
    entry = get_method("co-teaching")
    fitted = entry.adapter(build(entry.config, {"r": 4, "alpha": 8, "forget_rate": 0.2}, "ct")).fit(make_ctx(epochs=2))
    ctx = make_ctx()
    both = fitted.predict_variants(ctx.val)
    assert np.allclose(fitted.predict_proba(ctx.val), (both["net_default"] + both["net_peer"]) / 2)
    assert np.abs(both["net_default"] - both["net_peer"]).max() > 1e-4  # two different networks
    assert fitted.diagnostics["forget_rate"] == 0.2
    assert fitted.diagnostics["selected_clean"].sum() == math.ceil(0.8 * len(ctx.train))  # R after 2 of T_k=2


# ---------------------------------------------------------------- relabelers


def test_relabel_file_maps_ids_and_names(tmp_path: Path) -> None:
    ctx = make_ctx()
    path = tmp_path / "labels.jsonl"
    ids = ctx.train.ids
    path.write_text(json.dumps({"id": int(ids[3]), "value": "c2"}) + "\n" + json.dumps({"id": int(ids[5]), "value": 0}))
    assert from_file(str(path), ctx, np.array([3, 5])).tolist() == [2, 0]
    with pytest.raises(CellError, match="no label for 1"):
        from_file(str(path), ctx, np.array([3, 4]))
    path.write_text(json.dumps({"id": 0, "value": "sports"}))
    with pytest.raises(CellError, match="not one of 3 classes"):
        from_file(str(path), ctx, np.array([0]))


def test_relabel_drop_and_clean_lora() -> None:
    ctx = make_ctx()
    logits = np.array([[0.0, 1.0, 0.0], [2.0, 0.0, 0.0], [0.0, 0.0, 3.0]], dtype=np.float32)
    assert relabel("drop", ctx, np.array([0, 1]), logits) is None
    assert relabel("clean-lora", ctx, np.array([0, 2]), logits).tolist() == [1, 2]


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory: pytest.TempPathFactory) -> str:
    from transformers import LlamaConfig, LlamaForCausalLM

    from bench.models.encoder import load_tokenizer
    from tests.helpers import TINY

    folder = tmp_path_factory.mktemp("tiny-llama")
    tokenizer = load_tokenizer(TINY)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def test_option_scores_equal_one_pass_per_option(tiny_lm: str) -> None:
    from transformers import AutoModelForCausalLM

    lm = AutoModelForCausalLM.from_pretrained(tiny_lm).eval()
    prompt, options = [101, 2000, 2001, 2002], [[3000], [3001, 3002], [3003, 3004, 3005]]
    with torch.no_grad():
        batched = _option_scores(lm, prompt, options, torch.device("cpu"))
        for option, score in zip(options, batched, strict=True):
            ids = torch.tensor([prompt + option])
            logp = torch.log_softmax(lm(input_ids=ids).logits[0].float(), -1)
            by_hand = sum(logp[len(prompt) - 1 + j, tok].item() for j, tok in enumerate(option))
            assert score == pytest.approx(by_hand, abs=1e-4)


def test_zero_shot_relabels_with_a_local_causal_lm(tiny_lm: str) -> None:
    ctx = dataclasses.replace(make_ctx(), train_texts=tuple(f"text number {i}" for i in range(48)))
    labels = zero_shot(tiny_lm, ctx, np.array([0, 1, 2]))
    assert labels.shape == (3,) and ((labels >= 0) & (labels < 3)).all()
    # by hand: each option's summed log-probability, less its score on the content-free text
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from methods.relabel import CONTENT_FREE, PROMPT

    lm, tok = AutoModelForCausalLM.from_pretrained(tiny_lm).eval(), AutoTokenizer.from_pretrained(tiny_lm)
    options = [tok(" " + name, add_special_tokens=False)["input_ids"] for name in ctx.label_names]

    def by_hand(text: str) -> np.ndarray:
        prompt = tok(PROMPT.format(labels=", ".join(ctx.label_names), text=text))["input_ids"]
        with torch.no_grad():
            return np.array(_option_scores(lm, prompt, options, torch.device("cpu")))

    prior = by_hand(CONTENT_FREE)
    assert labels.tolist() == [int(np.argmax(by_hand(ctx.train_texts[i]) - prior)) for i in range(3)]
    assert zero_shot(tiny_lm, ctx, np.array([0, 1, 2])).tolist() == labels.tolist()
    with pytest.raises(CellError, match="could not be loaded"):
        zero_shot(str(Path(tiny_lm) / "missing"), ctx, np.array([0]))
    with pytest.raises(CellError, match="needs the training texts"):
        zero_shot(tiny_lm, make_ctx(), np.array([0]))


def test_zero_shot_relabels_with_the_embedded_smollm2() -> None:
    # the real 135M instruct model, by the harness's name for it; three clear cases of three topics
    texts = ("The striker scored twice in the second half and the team won the cup final.",
             "Stir the onions in butter, then add the flour and bake the bread for forty minutes.",
             "The central bank raised interest rates to fight inflation; stock markets fell.")
    ctx = dataclasses.replace(make_ctx(n_train=3), label_names=["sports", "cooking", "finance"], train_texts=texts)
    assert zero_shot("smollm2", ctx, np.array([0, 1, 2])).tolist() == [0, 1, 2]


# ---------------------------------------------------------------- runner side


def test_selection_curves_score_each_epoch_against_the_truth() -> None:
    truth = np.array([0, 1, 2, 0])
    observed = np.array([0, 1, 0, 1])  # items 2 and 3 are mislabelled
    truly_clean = observed == truth
    history = [
        {"epoch": 1, "selected_clean": np.array([True, True, True, True]), "clean_score": np.array([4, 3, 2, 1.0]),
         "loss": np.array([0.1, 0.3, 1.0, 2.0]), "pred_model": np.array([0, 1, 2, 1])},
        {"epoch": 2, "selected_clean": np.array([True, True, False, True]), "clean_score": np.array([4, 1, 3, 2.0])},
    ]
    curves = selection_curves(history, truly_clean, observed, truth)
    assert curves["detect_epoch"] == [1.0, 2.0]
    assert curves["detect_precision_clean"] == [0.5, pytest.approx(2 / 3)]
    assert curves["detect_recall_noisy"] == [0.0, 0.5]
    assert curves["detect_auroc"] == [1.0, 0.5]
    assert curves["detect_loss_mean_clean"][0] == pytest.approx(0.2)
    assert curves["detect_loss_mean_noisy"][0] == pytest.approx(1.5)
    assert math.isnan(curves["detect_loss_mean_clean"][1])
    assert curves["detect_train_acc_observed_model"][0] == 0.75  # [0,1,2,1] vs observed [0,1,0,1]
    assert curves["detect_train_acc_true_model"][0] == 0.75  # vs truth [0,1,2,0]


def test_relabel_metrics() -> None:
    metrics, confusion = relabel_metrics(np.array([-1, 2, 0, 1]), np.array([0, 2, 1, 1]), 3)
    assert metrics == {"n_relabelled": 3, "relabel_accuracy": pytest.approx(2 / 3)}
    assert confusion == [[0, 0, 0], [1, 1, 0], [0, 0, 1]]
    assert relabel_metrics(np.array([-1, -1]), np.array([0, 1]), 2) == ({}, [])


def test_detector_time_is_the_epoch_or_continuous() -> None:
    _, objective, *_ = _objective_batch({"t_mode": "epoch"})
    objective.epoch, objective.step = 3, 50
    assert objective.t == 3.0
    _, objective, *_ = _objective_batch({"t_mode": "continuous"})
    objective.steps_per_epoch = 20
    assert objective.t == 1 / 20  # from the first step: the noisy LoRA is held back 20x
    objective.step = 50
    assert objective.t == 2.5


def _det_only_grads(det_grad: str) -> dict[str, float]:
    """Gradient norms of each adapter after one backward of L_Det alone (L_ce and L_LoRA at 0)."""
    model, objective, inputs, labels, index = _objective_batch(
        {"det_grad": det_grad, "lambda_ce": 0.0, "lambda_lora": 0.0, "warmup_epochs": 0, "detector_targets": "self"})
    model.eval()  # no dropout: the passes are deterministic
    objective(model, inputs, labels, index).backward()
    norms = {}
    for adapter in (CLEAN, NOISY):
        grads = [p.grad for n, p in model.named_parameters() if f".{adapter}." in n and p.grad is not None]
        norms[adapter] = float(sum(float(g.norm()) ** 2 for g in grads) ** 0.5)
    return norms


def test_det_grad_threshold_trains_only_the_noisy_lora_through_l_det() -> None:
    both, threshold = _det_only_grads("both"), _det_only_grads("threshold")
    assert both[CLEAN] > 0 and both[NOISY] > 0          # the default: L_Det moves the clean LoRA too
    assert threshold[CLEAN] == 0 and threshold[NOISY] > 0  # only φ = ℓn learns from it
    assert threshold[NOISY] == pytest.approx(both[NOISY], rel=1e-6)  # ℓn's gradient is the same either way


def test_det_grad_at_its_default_leaves_the_run_id_as_it_was() -> None:
    from bench.run.runner import config_spec

    entry = get_method("delora-nld")
    default = config_spec(build(entry.config, {"r": 8}, "d"))
    assert "det_grad" not in default and "lambda_det" in default
    assert config_spec(build(entry.config, {"r": 8, "det_grad": "threshold"}, "d"))["det_grad"] == "threshold"
    with pytest.raises(Exception, match="det_grad"):
        build(entry.config, {"det_grad": "clean"}, "d")
