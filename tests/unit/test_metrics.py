"""Unit tests for bench.metrics: hand-computed values on tiny inputs, plus sklearn cross-checks."""

from __future__ import annotations

import ast
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import f1_score, roc_auc_score

import bench.metrics as metrics
from bench.metrics import get_metric, higher_is_better, metric_names, register_metric
from bench.metrics.accuracy import (
    accuracy,
    class_accuracies,
    confusion_matrix,
    macro_f1,
    worst_class_accuracy,
)
from bench.metrics.calibration import (
    _bin_indices,
    brier_score,
    expected_calibration_error,
    negative_log_likelihood,
    reliability_bins,
)
from bench.metrics.detection import auroc, detection_scores

# Shared calibration example, K = 2, n = 4:
#   sample  probs        label  conf  pred  correct
#   s1      [0.9, 0.1]   0      0.9   0     yes
#   s2      [0.2, 0.8]   0      0.8   1     no
#   s3      [0.3, 0.7]   1      0.7   1     yes
#   s4      [0.6, 0.4]   1      0.6   0     no
CAL_PROBS = np.array([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7], [0.6, 0.4]])
CAL_LABELS = np.array([0, 0, 1, 1])


# --------------------------------------------------------------------------- accuracy


def test_accuracy_hand_computed() -> None:
    # preds  0 1 2 1 0
    # labels 0 1 1 1 2   -> equal at positions 0, 1, 3 -> 3 / 5 = 0.6
    assert accuracy([0, 1, 2, 1, 0], [0, 1, 1, 1, 2]) == pytest.approx(0.6)


def test_macro_f1_hand_computed_with_absent_class() -> None:
    preds = [0, 0, 1, 2]
    labels = [0, 1, 1, 1]
    # class 0: tp=1 (s0), fp=1 (s1: true 1 predicted 0), fn=0 -> 2*1/(2+1+0) = 2/3
    # class 1: tp=1 (s2), fp=0, fn=2 (s1, s3)                -> 2*1/(2+0+2) = 1/2
    # class 2: tp=0, fp=1 (s3), fn=0                          -> 0
    # class 3 (only with n_classes=4): tp=fp=fn=0             -> excluded
    # macro = (2/3 + 1/2 + 0) / 3 = 7/18
    assert macro_f1(preds, labels) == pytest.approx(7 / 18)
    assert macro_f1(preds, labels, n_classes=4) == pytest.approx(7 / 18)
    assert f1_score(labels, preds, average="macro") == pytest.approx(7 / 18)


def test_macro_f1_class_absent_in_middle_is_excluded() -> None:
    # labels = preds = [0, 2] with 3 classes: classes 0 and 2 have F1 = 1, class 1 has
    # tp=fp=fn=0 and is excluded -> mean(1, 1) = 1.0 (not (1 + 0 + 1) / 3)
    assert macro_f1([0, 2], [0, 2], n_classes=3) == 1.0
    assert macro_f1([0, 2], [0, 2]) == 1.0


def test_worst_class_accuracy_hand_computed() -> None:
    # preds  0 0 0 1 | 1 1 | 0 2 2
    # labels 0 0 0 0 | 1 1 | 2 2 2  -> class 0: 3/4, class 1: 2/2, class 2: 2/3 -> worst 2/3
    preds, labels = [0, 0, 0, 1, 1, 1, 0, 2, 2], [0, 0, 0, 0, 1, 1, 2, 2, 2]
    assert class_accuracies(preds, labels, 3) == pytest.approx([3 / 4, 1.0, 2 / 3])
    assert worst_class_accuracy(preds, labels) == pytest.approx(2 / 3)
    assert worst_class_accuracy(preds, labels, n_classes=3) == pytest.approx(2 / 3)


def test_worst_class_accuracy_of_a_majority_predictor_is_zero() -> None:
    # 9:1 test set, everything predicted as class 1: accuracy 0.9, worst class (0) 0/1
    labels = [0] + [1] * 9
    assert accuracy([1] * 10, labels) == pytest.approx(0.9)
    assert worst_class_accuracy([1] * 10, labels) == 0.0


def test_worst_class_accuracy_leaves_out_classes_without_items() -> None:
    # class 1 has no true item (predicted once, wrongly): nan per class, not counted as 0
    acc = class_accuracies([0, 1, 2], [0, 0, 2], 3)
    assert acc[0] == 0.5 and math.isnan(acc[1]) and acc[2] == 1.0
    assert worst_class_accuracy([0, 1, 2], [0, 0, 2], n_classes=3) == 0.5
    assert math.isnan(worst_class_accuracy([], []))
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        worst_class_accuracy([0, 2], [0, 1], n_classes=2)


def test_macro_f1_matches_sklearn_on_random_data() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, 200)
    preds = np.where(rng.random(200) < 0.6, labels, rng.integers(0, 5, 200))
    assert macro_f1(preds, labels) == pytest.approx(f1_score(labels, preds, average="macro"))


def test_confusion_matrix_hand_computed() -> None:
    # (true, pred) pairs: (0,0) (1,0) (1,1) (1,2)
    # row 0 (true 0): [1, 0, 0]; row 1 (true 1): [1, 1, 1]; row 2 (true 2): [0, 0, 0]
    cm = confusion_matrix([0, 0, 1, 2], [0, 1, 1, 1], n_classes=3)
    assert cm.dtype == np.int64
    np.testing.assert_array_equal(cm, [[1, 0, 0], [1, 1, 1], [0, 0, 0]])
    np.testing.assert_array_equal(confusion_matrix([], [], 2), np.zeros((2, 2)))


# ------------------------------------------------------------------------ calibration


def test_ece_two_bins_hand_computed() -> None:
    # 5 bins: (0,.2] (.2,.4] (.4,.6] (.6,.8] (.8,1]
    # bin 2 (.4,.6]: s4            -> n=1, acc 0,   conf .6  -> |0 - .6|   = .6
    # bin 3 (.6,.8]: s2 (0.8 is the upper edge), s3
    #                               -> n=2, acc 1/2, conf .75 -> |.5 - .75| = .25
    # bin 4 (.8, 1]: s1            -> n=1, acc 1,   conf .9  -> |1 - .9|   = .1
    # ECE = 1/4 * .6 + 2/4 * .25 + 1/4 * .1 = .15 + .125 + .025 = 0.3
    assert expected_calibration_error(CAL_PROBS, CAL_LABELS, n_bins=5) == pytest.approx(0.3)


def test_ece_default_15_bins_hand_computed() -> None:
    # Width 1/15: .9 in (13/15, 14/15], .8 in (11/15, 12/15], .7 in (10/15, 11/15],
    # .6 in (8/15, 9/15] -> each sample alone in its bin, so
    # ECE = (|1-.9| + |0-.8| + |1-.7| + |0-.6|) / 4 = (.1 + .8 + .3 + .6) / 4 = 0.45
    assert expected_calibration_error(CAL_PROBS, CAL_LABELS) == pytest.approx(0.45)


def test_ece_perfectly_calibrated_is_zero() -> None:
    # four samples at confidence .75 (one bin), three of them correct: acc .75 = conf .75
    probs = np.tile([0.75, 0.25], (4, 1))
    assert expected_calibration_error(probs, [0, 0, 0, 1]) == pytest.approx(0.0)
    # confident and always right: bin (14/15, 1] has acc 1 = conf 1
    assert expected_calibration_error([[1.0, 0.0], [0.0, 1.0]], [0, 1]) == 0.0


def test_ece_matches_reference_loop() -> None:
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(300, 4)) * 2
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = rng.integers(0, 4, 300)
    conf, correct = probs.max(axis=1), probs.argmax(axis=1) == labels
    expected = 0.0
    for b in range(15):
        lo, hi = b / 15, (b + 1) / 15
        in_bin = (conf > lo) & (conf <= hi)
        if in_bin.any():
            expected += in_bin.mean() * abs(correct[in_bin].mean() - conf[in_bin].mean())
    assert expected_calibration_error(probs, labels) == pytest.approx(expected)


def test_bin_indices_edges() -> None:
    # bin b = (b/5, (b+1)/5]: 0 -> bin 0 (documented), .2 -> bin 0 (upper edge),
    # just above .2 -> bin 1, .7 -> bin 3, 1.0 -> bin 4
    got = _bin_indices(np.array([0.0, 0.2, 0.2000001, 0.7, 1.0]), 5)
    np.testing.assert_array_equal(got, [0, 0, 1, 3, 4])
    # 10 bins: 0.7 is the upper edge of (.6, .7] -> bin 6 (not 7 from 0.7 * 10 rounding)
    assert _bin_indices(np.array([0.7]), 10)[0] == 6


def test_reliability_bins_hand_computed() -> None:
    # Same binning as the 5-bin ECE test: counts [0, 0, 1, 2, 1]
    bins = reliability_bins(CAL_PROBS, CAL_LABELS, n_bins=5)
    assert bins["lower"] == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8])
    assert bins["upper"] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert bins["count"] == [0, 0, 1, 2, 1]
    assert sum(bins["count"]) == len(CAL_LABELS)
    assert bins["accuracy"][:2] == [None, None]
    assert bins["confidence"][:2] == [None, None]
    assert bins["accuracy"][2:] == pytest.approx([0.0, 0.5, 1.0])
    assert bins["confidence"][2:] == pytest.approx([0.6, 0.75, 0.9])


def test_reliability_bins_empty_input() -> None:
    bins = reliability_bins(np.empty((0, 3)), [], n_bins=4)
    assert bins["count"] == [0, 0, 0, 0]
    assert bins["accuracy"] == [None] * 4


def test_brier_hand_computed() -> None:
    # s1 [.7 .2 .1], y=0: (.7-1)^2 + .2^2 + .1^2 = .09 + .04 + .01 = .14
    # s2 [.1 .5 .4], y=2: .1^2 + .5^2 + (.4-1)^2 = .01 + .25 + .36 = .62
    # mean = (.14 + .62) / 2 = 0.38
    probs = [[0.7, 0.2, 0.1], [0.1, 0.5, 0.4]]
    assert brier_score(probs, [0, 2]) == pytest.approx(0.38)
    # worst case: all mass on a wrong class -> 1^2 + 1^2 = 2
    assert brier_score([[0.0, 1.0]], [0]) == pytest.approx(2.0)


def test_nll_hand_computed_and_eps_clipping() -> None:
    # (-ln .5 - ln .75) / 2 = (0.693147 + 0.287682) / 2 = 0.490415
    probs = [[0.5, 0.5], [0.25, 0.75]]
    assert negative_log_likelihood(probs, [0, 1]) == pytest.approx(0.490415, abs=1e-6)
    # p_y = 0 is clipped to eps: -ln(1e-12) = 12 ln 10 = 27.631021; eps=1e-3 -> 6.907755
    assert negative_log_likelihood([[1.0, 0.0]], [1]) == pytest.approx(27.631021, abs=1e-6)
    got = negative_log_likelihood([[1.0, 0.0]], [1], eps=1e-3)
    assert got == pytest.approx(6.907755, abs=1e-6)


# -------------------------------------------------------------------------- detection


def test_detection_scores_both_conventions() -> None:
    truly_clean = np.array([True, True, True, True, False, False])
    selected = np.array([True, True, True, False, False, False])
    s = detection_scores(selected, truly_clean)
    # noisy positive: D^_n = {3, 4, 5}, D*_n = {4, 5}, overlap {4, 5}
    #   P_n = 2/3, R_n = 2/2 = 1, F1_n = 2*2 / (2*2 + 1 + 0) = 4/5
    assert s["precision_noisy"] == pytest.approx(2 / 3)
    assert s["recall_noisy"] == 1.0
    assert s["f1_noisy"] == pytest.approx(0.8)
    # clean positive: selected {0, 1, 2}, truly clean {0, 1, 2, 3}, overlap {0, 1, 2}
    #   P_c = 3/3 = 1, R_c = 3/4, F1_c = 2*3 / (2*3 + 0 + 1) = 6/7
    assert s["precision_clean"] == 1.0
    assert s["recall_clean"] == pytest.approx(0.75)
    assert s["f1_clean"] == pytest.approx(6 / 7)
    assert (s["n_selected_clean"], s["n_truly_clean"]) == (3, 4)
    assert get_metric("f1_noisy").fn(selected, truly_clean) == pytest.approx(0.8)


def test_detection_scores_undefined_ratios_are_nan() -> None:
    # Method keeps everything: D^_n is empty -> P_n = 0/0 = nan; R_n = 0/2 = 0;
    # F1_n = 0 / (0 + 0 + 2) = 0
    s = detection_scores([True] * 4, [True, True, False, False])
    assert math.isnan(s["precision_noisy"])
    assert s["recall_noisy"] == 0.0 and s["f1_noisy"] == 0.0
    # Nothing noisy and nothing flagged: all noisy ratios are 0/0; clean ones are 1
    s = detection_scores([True] * 3, [True] * 3)
    assert all(math.isnan(s[k]) for k in ("precision_noisy", "recall_noisy", "f1_noisy"))
    assert s["f1_clean"] == 1.0


def test_auroc_ties_hand_computed() -> None:
    # positives: 0.4, 0.8; negatives: 0.1, 0.4, 0.4
    # pairs: 0.4 vs (0.1, 0.4, 0.4) -> 1 + .5 + .5 = 2; 0.8 vs all -> 3; AUROC = 5/6
    # ranks: 0.1 -> 1, the three 0.4 -> (2+3+4)/3 = 3, 0.8 -> 5; U = (3 + 5) - 2*3/2 = 5
    scores = [0.1, 0.4, 0.4, 0.8, 0.4]
    positives = [False, True, False, True, False]
    assert auroc(scores, positives) == pytest.approx(5 / 6)
    assert roc_auc_score(positives, scores) == pytest.approx(5 / 6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auroc_matches_sklearn_on_random_data(seed: int) -> None:
    rng = np.random.default_rng(seed)
    positives = rng.random(150) < 0.3
    scores = np.round(rng.normal(size=150) + positives, 1)  # rounding makes ties
    assert auroc(scores, positives) == pytest.approx(roc_auc_score(positives, scores))


def test_auroc_one_class_is_nan() -> None:
    assert math.isnan(auroc([0.1, 0.2], [True, True]))
    assert math.isnan(auroc([0.1, 0.2], [False, False]))


# ------------------------------------------------------------------- empty and errors


def test_empty_input_is_nan() -> None:
    empty_probs, no_labels = np.empty((0, 3)), np.array([], dtype=np.int64)
    assert math.isnan(accuracy([], []))
    assert math.isnan(macro_f1([], []))
    assert math.isnan(expected_calibration_error(empty_probs, no_labels))
    assert math.isnan(brier_score(empty_probs, no_labels))
    assert math.isnan(negative_log_likelihood(empty_probs, no_labels))
    assert math.isnan(auroc([], []))
    s = detection_scores([], [])
    assert all(math.isnan(v) for k, v in s.items() if not k.startswith("n_"))
    assert s["n_selected_clean"] == 0


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: accuracy([0, 1], [0]), "same length"),
        (lambda: accuracy([[0, 1]], [[0, 1]]), "1-D"),
        (lambda: accuracy([0.0, 1.0], [0, 1]), "integer"),
        (lambda: macro_f1([0, 3], [0, 1], n_classes=3), r"\[0, 3\)"),
        (lambda: macro_f1([0, -1], [0, 1]), "non-negative"),
        (lambda: confusion_matrix([0, 1], [0, 2], 2), "labels"),
        (lambda: expected_calibration_error([0.5, 0.5], [0]), "2-D"),
        (lambda: expected_calibration_error(CAL_PROBS, [0, 1]), "number of samples"),
        (lambda: brier_score(CAL_PROBS, [0, 1, 2, 0]), "labels"),
        (lambda: negative_log_likelihood(CAL_PROBS, [0, -1, 0, 0]), "labels"),
        (lambda: brier_score([[2.0, -1.0]], [0]), "probabilities"),
        (lambda: brier_score([[0.3, 0.3]], [0]), "sum to 1"),
        (lambda: reliability_bins(CAL_PROBS, CAL_LABELS, n_bins=0), "n_bins"),
        (lambda: negative_log_likelihood(CAL_PROBS, CAL_LABELS, eps=0.0), "eps"),
        (lambda: detection_scores([1, 0], [True, False]), "boolean"),
        (lambda: detection_scores([True], [True, False]), "same length"),
        (lambda: auroc([0.1, float("nan")], [True, False]), "finite"),
        (lambda: auroc([0.1], [True, False]), "match"),
    ],
)
def test_bad_input_raises_value_error(call: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()  # type: ignore[operator]


# --------------------------------------------------------------------------- registry


def test_registry_lists_all_metrics_with_directions() -> None:
    assert {"accuracy", "macro_f1", "ece", "brier", "nll", "auroc", "f1_noisy"} <= set(
        metric_names()
    )
    assert get_metric("ece").fn is expected_calibration_error
    assert get_metric("accuracy").higher_is_better and not get_metric("nll").higher_is_better
    with pytest.raises(TypeError):
        metrics.METRIC_DIRECTIONS["ece"] = True  # type: ignore[index]


def test_register_duplicate_and_bad_names_raise() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_metric("accuracy", higher_is_better=True)
    for bad in ("Accuracy", "macro-f1", "1st", "", "a__b"):
        with pytest.raises(ValueError, match="snake_case"):
            register_metric(bad, higher_is_better=True)


def test_register_new_metric_then_clean_up() -> None:
    name = "unit_test_only_metric"
    try:
        register_metric(name, higher_is_better=False, unit="s")(lambda: 0.0)
        assert get_metric(name).unit == "s"
        assert higher_is_better(name) is False
    finally:
        metrics._REGISTRY.pop(name, None)
        metrics._DIRECTIONS.pop(name, None)


def test_unknown_metric_suggests_close_name() -> None:
    with pytest.raises(KeyError, match="did you mean 'accuracy'"):
        get_metric("acuracy")
    with pytest.raises(KeyError, match="did you mean 'ece'"):
        higher_is_better("eca")


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("accuracy", True),
        ("ece", False),
        ("train_tokens_per_s", True),
        ("train_wall_s", False),
        ("peak_mem_gib", False),
        ("adapter_bytes", False),
        ("trainable_params", False),
        ("total_params", False),
    ],
)
def test_higher_is_better_knows_record_keys(key: str, expected: bool) -> None:
    assert higher_is_better(key) is expected


def test_metrics_package_imports_only_numpy_and_stdlib() -> None:
    allowed = set(sys.stdlib_module_names) | {"bench", "numpy"}  # no torch, sklearn or pandas
    for path in Path(metrics.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                roots = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                roots = {(node.module or "").split(".")[0]}
            else:
                continue
            assert roots <= allowed, f"{path.name} imports {roots - allowed}"


def test_collapse_message_flags_one_class_runs_only() -> None:
    from bench.evaluate.classification import classification_metrics, collapse_message

    labels = np.array([0, 1, 2, 3, 0, 1, 2, 3, 0, 1])
    one_class = np.tile([0.1, 0.7, 0.1, 0.1], (10, 1))  # predicts class 1 everywhere; gold share 30 %
    message = collapse_message(one_class, labels, ["a", "b", "c", "d"])
    assert message == "predicts 'b' for 100.0 % of the test items (gold share 30.0 %): training collapsed"
    assert classification_metrics(one_class, labels)["pred_top_share"] == 1.0
    # 9 of 10 is still a collapse; 8 of 10 is not
    nine = one_class.copy()
    nine[0] = [0.7, 0.1, 0.1, 0.1]
    assert collapse_message(nine, labels, ["a", "b", "c", "d"]) == (
        "predicts 'b' for 90.0 % of the test items (gold share 30.0 %): training collapsed")
    eight = nine.copy()
    eight[4] = [0.7, 0.1, 0.1, 0.1]
    assert collapse_message(eight, labels, ["a", "b", "c", "d"]) is None
    assert classification_metrics(eight, labels)["pred_top_share"] == pytest.approx(0.8)
    # a class that really is the majority of the gold labels is not a collapse
    majority = np.array([1] * 9 + [0])
    assert collapse_message(one_class, majority, ["a", "b", "c", "d"]) is None


def test_validation_metrics_hand_computed() -> None:
    from bench.evaluate.classification import validation_metrics

    probs = np.array([[0.9, 0.1], [0.4, 0.6], [0.7, 0.3]])
    labels = np.array([0, 0, 1])
    out = validation_metrics(probs, labels)
    # predictions 0, 1, 0 against 0, 0, 1: one of three right
    assert out["val_accuracy"] == pytest.approx(1 / 3)
    # -(ln 0.9 + ln 0.4 + ln 0.3) / 3 = (0.10536 + 0.91629 + 1.20397) / 3 = 0.74187
    assert out["val_nll"] == pytest.approx(0.741874, abs=1e-6)
