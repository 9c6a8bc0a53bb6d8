"""Unit tests for bench.data.noise (METHODS.md §1)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from bench.data.noise import (
    NOISE_KINDS,
    NoiseSpec,
    apply_noise,
    asymmetric_noise,
    instance_noise_confusion,
    instance_noise_xia,
    resolve_pair_map,
    symmetric_noise,
    transition_counts,
)


def _labels(n: int, k: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, k, size=n)


def _blobs(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Four 2-D Gaussian blobs; classes 0 and 1 sit close together, 2 and 3 far away."""
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0, 0.0], [1.0, 0.0], [8.0, 8.0], [-8.0, 8.0]])
    y = rng.integers(0, 4, size=n)
    x = centres[y] + rng.normal(0.0, 0.6, size=(n, 2))
    return y, x


def _unit_features(n: int, s: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, s))
    out: np.ndarray = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


# --- symmetric (§1.1) -------------------------------------------------------------------


def test_symmetric_rate_and_uniform_off_diagonal() -> None:
    y = _labels(20000, 6)
    res = apply_noise(NoiseSpec("symmetric", 0.4), y, 6, seed=1)
    assert abs(res.realised_rate - 0.4) <= 0.015
    matrix = np.array(res.matrix)
    assert np.allclose(matrix.sum(axis=1), 1.0)
    off = matrix[~np.eye(6, dtype=bool)]
    assert np.all(np.abs(off - 0.4 / 5) <= 0.02)
    assert np.array_equal(res.truly_clean, res.observed == y)
    assert sum(map(sum, res.counts)) == 20000


def test_symmetric_never_redraws_the_true_label() -> None:
    # At r = 0.99 nearly every sample is flipped. Uniform over all K classes would keep
    # about 1/6 of them; uniform over the other K-1 keeps about 1 %.
    y = _labels(6000, 6)
    observed = symmetric_noise(y, 6, 0.99, np.random.default_rng(3))
    assert np.mean(observed == y) < 0.03
    assert observed.dtype == np.int64


# --- asymmetric (§1.2) ------------------------------------------------------------------


def test_asymmetric_default_flips_to_next_class() -> None:
    y = _labels(10000, 5)
    res = apply_noise(NoiseSpec("asymmetric", 0.3), y, 5, seed=2)
    changed = res.observed != y
    assert np.array_equal(res.observed[changed], (y[changed] + 1) % 5)
    assert abs(res.realised_rate - 0.3) <= 0.02
    assert res.info["pair_map"] == "(y+1) mod K"


def test_asymmetric_named_maps() -> None:
    assert resolve_pair_map("sst5", 5) == {0: (1,), 1: (2,), 2: (3,), 3: (4,), 4: (3,)}
    assert resolve_pair_map("sst2", 2) == {0: (1,), 1: (0,)}
    assert (
        resolve_pair_map("agnews", 4)
        == resolve_pair_map(None, 4)
        == {0: (1,), 1: (2,), 2: (3,), 3: (0,)}
    )
    y = np.full(2000, 4)
    observed = asymmetric_noise(y, 5, 0.5, np.random.default_rng(0), "sst5")
    assert set(observed.tolist()) == {3, 4}


def test_asymmetric_trec_selfmix_sends_class_5_to_0_to_4() -> None:
    y = np.repeat(np.arange(6), 500)
    res = apply_noise(NoiseSpec("asymmetric", 0.6, pair_map="trec_selfmix"), y, 6, seed=4)
    counts = np.array(res.counts)
    assert counts[5, 5] > 0 and set(np.flatnonzero(counts[5, :5])) == {0, 1, 2, 3, 4}
    for source in range(5):
        assert set(np.flatnonzero(counts[source])) == {source, source + 1}
    assert res.info["pair_targets"] == {**{s: [s + 1] for s in range(5)}, 5: [0, 1, 2, 3, 4]}


def test_asymmetric_dict_map_with_yaml_string_keys() -> None:
    pair_map = {"0": 2, "1": 0, "2": 1}
    assert resolve_pair_map(pair_map, 3) == {0: (2,), 1: (0,), 2: (1,)}
    y = _labels(3000, 3)
    res = apply_noise(NoiseSpec("asymmetric", 0.5, pair_map=pair_map), y, 3, seed=0)  # type: ignore[arg-type]
    changed = res.observed != y
    assert np.array_equal(res.observed[changed], np.array([2, 0, 1])[y[changed]])
    assert res.info["pair_map"] == "custom"


@pytest.mark.parametrize(
    ("pair_map", "k", "message"),
    [
        ({0: 1, 1: 0}, 3, r"does not cover classes \[2\]"),
        ({0: 1, 1: 5, 2: 0}, 3, "out of range"),
        ({0: 1, "0": 2, 1: 0}, 2, "twice"),
        ({0: "x", 1: 0}, 2, "class index"),
        ("sst5", 4, "needs 5 classes"),
        ("trec_selfmix", 5, "needs 6 classes"),
        ("imdb", 2, "Unknown pair map 'imdb'"),
        ([1, 0], 2, "a name or a dict"),
    ],
)
def test_bad_pair_maps_raise(pair_map: object, k: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        resolve_pair_map(pair_map, k)  # type: ignore[arg-type]


# --- instance-dependent (§1.3) ----------------------------------------------------------


def test_confusion_rate_is_exact_and_flips_follow_the_runner_up() -> None:
    y, x = _blobs(2000)
    rate = 0.15
    res = apply_noise(NoiseSpec("instance", rate), y, 4, seed=5, features=x)
    assert res.realised_rate == round(rate * 2000) / 2000
    counts = np.array(res.counts)
    flips = counts.sum() - np.trace(counts)
    assert counts[0, 1] + counts[1, 0] >= 0.95 * flips  # the confusable pair
    # An independently fitted weak classifier names the same runner-up class.
    proba = LogisticRegression(max_iter=1000).fit(x, y).predict_proba(x)
    proba[np.arange(y.size), y] = -np.inf
    changed = ~res.truly_clean
    agree = np.mean(proba.argmax(axis=1)[changed] == res.observed[changed])
    assert agree >= 0.95
    assert str(res.info["weak_classifier"]).startswith("sklearn LogisticRegression")
    assert res.info["fit_size"] == 200 and res.info["generator"] == "confusion"


def test_confusion_ties_are_broken_by_the_seed() -> None:
    y = np.tile(np.arange(3), 100)
    x = np.tile(np.eye(3), (100, 1))  # three exact points: every sample of a class ties
    first = instance_noise_confusion(y, x, 3, 0.1, np.random.default_rng(0))
    again = instance_noise_confusion(y, x, 3, 0.1, np.random.default_rng(0))
    other = instance_noise_confusion(y, x, 3, 0.1, np.random.default_rng(1))
    assert np.sum(first != y) == np.sum(other != y) == 30
    assert np.array_equal(first, again) and not np.array_equal(first, other)


def test_xia_rate_close_to_target() -> None:
    y = _labels(5000, 5)
    x = _unit_features(5000, 16)
    res = apply_noise(NoiseSpec("instance", 0.3, generator="xia"), y, 5, seed=6, features=x)
    assert abs(res.realised_rate - 0.3) <= 0.03
    assert res.info["generator"] == "xia"
    assert np.trace(np.array(res.counts)) == int(res.truly_clean.sum())


def test_xia_rate_zero_and_direct_call() -> None:
    y = _labels(50, 3)
    x = _unit_features(50, 4)
    assert np.array_equal(instance_noise_xia(y, x, 3, 0.0, np.random.default_rng(0)), y)
    noisy = instance_noise_xia(y, x, 3, 0.5, np.random.default_rng(0))
    assert noisy.dtype == np.int64 and noisy.min() >= 0 and noisy.max() < 3


# --- determinism, bookkeeping, edge cases -----------------------------------------------

SPECS = [
    NoiseSpec("symmetric", 0.2),
    NoiseSpec("asymmetric", 0.4),
    NoiseSpec("instance", 0.2),
    NoiseSpec("instance", 0.2, generator="xia"),
]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.label())
def test_same_seed_same_labels_different_seed_different(spec: NoiseSpec) -> None:
    y, x = _blobs(1000)
    first = apply_noise(spec, y, 4, seed=11, features=x)
    again = apply_noise(spec, y, 4, seed=11, features=x)
    other = apply_noise(spec, y, 4, seed=12, features=x)
    assert np.array_equal(first.observed, again.observed)
    assert first.counts == again.counts and first.info == again.info
    assert not np.array_equal(first.observed, other.observed)


def test_transition_counts_hand_made() -> None:
    true = [0, 0, 1, 1, 1, 2]
    observed = [0, 1, 1, 2, 1, 0]
    # rows = true, columns = observed:
    #   true 0 -> [1, 1, 0]
    #   true 1 -> [0, 2, 1]
    #   true 2 -> [1, 0, 0]
    expected = np.array([[1, 1, 0], [0, 2, 1], [1, 0, 0]])
    assert np.array_equal(transition_counts(true, observed, 3), expected)
    assert np.array_equal(transition_counts(true, observed, 4)[3], [0, 0, 0, 0])
    with pytest.raises(ValueError, match="differ in length"):
        transition_counts([0, 1], [0], 2)


def test_matrix_rows_normalised_and_empty_rows_zero() -> None:
    y = np.array([0, 0, 0, 1, 1])  # class 2 never occurs
    res = apply_noise(NoiseSpec("symmetric", 0.5), y, 3, seed=0)
    matrix = np.array(res.matrix)
    assert np.allclose(matrix[:2].sum(axis=1), 1.0)
    assert matrix[2].tolist() == [0.0, 0.0, 0.0]
    assert all(isinstance(v, int) for row in res.counts for v in row)


@pytest.mark.parametrize("spec", [NoiseSpec(), *(NoiseSpec(s.kind, 0.0) for s in SPECS[:3])])
def test_clean_specs_leave_labels_unchanged(spec: NoiseSpec) -> None:
    y, x = _blobs(300)
    res = apply_noise(spec, y, 4, seed=0, features=x)
    assert np.array_equal(res.observed, y) and res.observed is not y
    assert res.realised_rate == 0.0 and res.truly_clean.all()
    assert np.array_equal(np.array(res.matrix), np.eye(4))


def test_labels_and_display_names() -> None:
    assert NOISE_KINDS == ("none", "symmetric", "asymmetric", "instance")
    assert NoiseSpec().label() == "clean"
    assert NoiseSpec("symmetric", 0.2).label() == "sym-20%"
    assert NoiseSpec("asymmetric", 0.4).label() == "asym-40%"
    assert NoiseSpec("instance", 0.4).label() == "inst-40%"
    assert NoiseSpec("instance", 0.4, generator="xia").label() == "inst-xia-40%"
    assert NoiseSpec("symmetric", 0.125).label() == "sym-12.5%"


def test_empty_training_split() -> None:
    res = apply_noise(NoiseSpec("symmetric", 0.2), np.array([], dtype=np.int64), 3, seed=0)
    assert res.observed.size == 0 and res.realised_rate == 0.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "gaussian"}, "Unknown noise kind 'gaussian'; expected one of none, symmetric"),
        ({"kind": "symmetric", "rate": 1.0}, r"rate must be in \[0, 1\)"),
        ({"kind": "symmetric", "rate": -0.1}, r"rate must be in \[0, 1\)"),
        ({"kind": "symmetric", "rate": math.nan}, r"rate must be in \[0, 1\)"),
        ({"kind": "symmetric", "rate": "0.2"}, "rate must be a number"),
        ({"kind": "none", "rate": 0.2}, "takes rate 0"),
        ({"kind": "instance", "rate": 0.2, "generator": "lstm"}, "Unknown instance-noise"),
        ({"kind": "instance", "rate": 0.2, "fit_fraction": 0.0}, r"fit_fraction must be in"),
        ({"kind": "asymmetric", "rate": 0.2, "pair_map": "imdb"}, "Unknown pair map"),
    ],
)
def test_bad_specs_raise(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        NoiseSpec(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("labels", "k", "message"),
    [
        ([0, 1, 3], 3, r"must lie in \[0, 3\); found \[3\]"),
        ([0, -1], 3, r"found \[-1\]"),
        ([0, 1], 1, "at least 2 classes"),
        ([0, 1], 2.0, "n_classes must be an integer"),
        ([[0, 1]], 2, "1-D"),
        ([0.0, 1.0], 2, "must be integers"),
    ],
)
def test_bad_labels_raise(labels: object, k: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        apply_noise(NoiseSpec("symmetric", 0.2), labels, k, seed=0)  # type: ignore[arg-type]


def test_instance_noise_needs_valid_features() -> None:
    y = _labels(20, 2)
    spec = NoiseSpec("instance", 0.2)
    with pytest.raises(ValueError, match="instance-dependent noise needs feature vectors"):
        apply_noise(spec, y, 2, seed=0)
    with pytest.raises(ValueError, match=r"shape \[N=20, S\]"):
        apply_noise(spec, y, 2, seed=0, features=np.zeros((19, 3)))
    with pytest.raises(ValueError, match="NaN or inf"):
        apply_noise(spec, y, 2, seed=0, features=np.full((20, 3), np.nan))
    with pytest.raises(ValueError, match="< 2 classes"):
        instance_noise_confusion(
            np.zeros(20, dtype=np.int64), np.zeros((20, 2)), 2, 0.2, np.random.default_rng(0)
        )
