"""Synthetic label noise for the training split (METHODS.md §1).

Symmetric (§1.1 [code: SelfMix]), asymmetric / pair-flip (§1.2 [code]; dataset maps
[proposed]) and instance-dependent noise (§1.3: model-confusion I-a, the default, [code: SelfMix
README] + [proposed]; Xia et al. I-b [3rd]). :func:`apply_noise` seeds its own generator, keeps
true and observed labels side by side and records the realised rate and the K×K transition
matrix (§1 common rules [proposed]).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import ArrayLike, NDArray

NOISE_KINDS: tuple[str, ...] = ("none", "symmetric", "asymmetric", "instance")
INSTANCE_GENERATORS: tuple[str, ...] = ("confusion", "xia")
PAIR_MAPS: tuple[str, ...] = ("trec_selfmix", "sst2", "sst5", "agnews", "ag_news", "20ng", "trec")
WEAK_CLASSIFIER = "sklearn LogisticRegression (multinomial, lbfgs, C=1.0, max_iter=1000)"
XIA_Q_STD = 0.1
XIA_Q_TRUNCATION = "resample draws outside (0, 1)"

RawPairMap = str | Mapping[int, object] | Mapping[str, object] | None
PairTargets = dict[int, tuple[int, ...]]
_MAP_SIZES = {"trec_selfmix": 6, "sst2": 2, "sst5": 5}
_PREFIX = {"symmetric": "sym", "asymmetric": "asym", "instance": "inst"}


@dataclass(frozen=True)
class NoiseSpec:
    """One synthetic-noise setting (METHODS.md §1).

    Attributes:
        kind: one of :data:`NOISE_KINDS`. ``none`` takes rate 0.
        rate: target noise rate in [0, 1); rate 0 leaves the labels unchanged.
        pair_map: asymmetric only: a name from :data:`PAIR_MAPS` or ``{class: target}`` (keys
            may be str, as from YAML; a target may be a list, drawn uniformly). ``None`` means
            ``(y+1) mod K``. Ignored by the other kinds.
        generator: instance only: ``confusion`` (§1.3 I-a, default) or ``xia`` (§1.3 I-b).
        fit_fraction: instance/confusion only: share of samples fitting the weak classifier.
    """

    kind: str = "none"
    rate: float = 0.0
    pair_map: str | dict[int, int] | None = None
    generator: str = "confusion"
    fit_fraction: float = 0.1

    def __post_init__(self) -> None:
        _check_choice(self.kind, NOISE_KINDS, "noise kind")
        object.__setattr__(self, "rate", _check_fraction(self.rate, "noise rate", False))
        if self.kind == "none" and self.rate != 0.0:
            raise ValueError(f"noise kind 'none' takes rate 0, got {self.rate}")
        _check_choice(self.generator, INSTANCE_GENERATORS, "instance-noise generator")
        _check_fraction(self.fit_fraction, "fit_fraction", True)
        if isinstance(self.pair_map, str):
            _check_choice(self.pair_map, PAIR_MAPS, "pair map")

    def label(self) -> str:
        """Short display label: ``clean``, ``sym-20%``, ``asym-40%``, ``inst-40%``.

        The non-default Xia generator shows as ``inst-xia-40%``.
        """
        if self.kind == "none":
            return "clean"
        prefix = _PREFIX[self.kind]
        if self.kind == "instance" and self.generator != "confusion":
            prefix += f"-{self.generator}"
        return f"{prefix}-{self.rate * 100:g}%"


@dataclass(frozen=True)
class NoiseResult:
    """Noisy labels plus what §1 asks the harness to log.

    Attributes:
        observed: the labels the method trains on.
        truly_clean: ``observed == true`` per sample.
        realised_rate: fraction of samples whose observed label is wrong.
        counts: K×K raw transition counts (row = true class, column = observed class).
        matrix: ``counts`` row-normalised; rows with no samples are all 0.0.
        info: generator details (kind, rate, seed, pair map, weak classifier, ...).
    """

    observed: NDArray[np.int64]
    truly_clean: NDArray[np.bool_]
    realised_rate: float
    counts: list[list[int]]
    matrix: list[list[float]]
    info: dict[str, object]


def symmetric_noise(
    labels: ArrayLike, n_classes: int, rate: float, rng: np.random.Generator
) -> NDArray[np.int64]:
    """Symmetric noise (METHODS.md §1.1 [code: SelfMix ``read_data.py``]).

    Each label is kept with probability ``1 - rate``, else replaced by one drawn uniformly
    from the other ``K - 1`` classes (never the true one).
    """
    y, k = _check_labels(labels, n_classes)
    flip = rng.random(y.size) < _check_fraction(rate, "noise rate", False)
    shift = rng.integers(1, k, size=y.size)
    return np.where(flip, (y + shift) % k, y).astype(np.int64)


def asymmetric_noise(
    labels: ArrayLike,
    n_classes: int,
    rate: float,
    rng: np.random.Generator,
    pair_map: RawPairMap = None,
) -> NDArray[np.int64]:
    """Pair-flip noise (METHODS.md §1.2 [code: SelfMix ``data/corrupt.py``], maps [proposed]).

    With probability ``rate`` a label becomes ``π(y)`` (see :func:`resolve_pair_map`); a class
    with several targets (``trec_selfmix`` class 5) draws one uniformly per flipped sample.
    """
    y, k = _check_labels(labels, n_classes)
    targets = resolve_pair_map(pair_map, k)
    flip = rng.random(y.size) < _check_fraction(rate, "noise rate", False)
    out = y.copy()
    for source, choices in targets.items():
        idx = np.flatnonzero(flip & (y == source))
        out[idx] = rng.choice(np.asarray(choices, dtype=np.int64), size=idx.size)
    return out


def resolve_pair_map(pair_map: RawPairMap, n_classes: int) -> PairTargets:
    """Resolve a pair map to ``{class: (targets, ...)}`` (METHODS.md §1.2).

    ``None``/``agnews``/``ag_news``/``20ng``/``trec``: ``(y+1) mod K``. ``sst2``: ``1-y``.
    ``sst5``: ``y+1``, ``4 → 3``. ``trec_selfmix``: ``y+1`` for 0–4, ``5 →`` uniform over
    0–4 [code]. A dict must cover every class; keys may be int or str, values a class or a list.

    Raises:
        ValueError: unknown name, wrong K for a named map, or a dict that misses or repeats
            a class or points out of range.
    """
    k = _check_labels([], n_classes)[1]
    if pair_map is None or pair_map in ("agnews", "ag_news", "20ng", "trec"):
        return {y: ((y + 1) % k,) for y in range(k)}
    if isinstance(pair_map, str):
        _check_choice(pair_map, PAIR_MAPS, "pair map")
        if k != _MAP_SIZES[pair_map]:
            raise ValueError(f"pair map {pair_map!r} needs {_MAP_SIZES[pair_map]} classes, K={k}")
        if pair_map == "sst2":
            return {0: (1,), 1: (0,)}
        if pair_map == "sst5":
            return {y: (y + 1 if y < 4 else 3,) for y in range(5)}
        return {**{y: (y + 1,) for y in range(5)}, 5: (0, 1, 2, 3, 4)}
    if not isinstance(pair_map, Mapping):
        raise ValueError(f"pair_map must be a name or a dict, got {pair_map!r}")
    out: PairTargets = {}
    for key, value in pair_map.items():
        source = _as_class(key, k, "pair_map key")
        if source in out:
            raise ValueError(f"pair_map lists class {source} twice")
        many = isinstance(value, Sequence) and not isinstance(value, str)
        values = list(value) if isinstance(value, Sequence) and many else [value]
        if not values:
            raise ValueError(f"pair_map[{source}] has no target")
        out[source] = tuple(_as_class(v, k, f"pair_map[{source}] target") for v in values)
    missing = sorted(set(range(k)) - set(out))
    if missing:
        raise ValueError(f"pair_map does not cover classes {missing} (K={k})")
    return dict(sorted(out.items()))


def instance_noise_confusion(
    labels: ArrayLike,
    features: ArrayLike,
    n_classes: int,
    rate: float,
    rng: np.random.Generator,
    fit_fraction: float = 0.1,
) -> NDArray[np.int64]:
    """Model-confusion instance noise (METHODS.md §1.3 I-a, [code: SelfMix] + [proposed]).

    :data:`WEAK_CLASSIFIER` is fitted on a random ``fit_fraction`` of the samples with their
    true labels. Each sample scores ``c_i = max_{k≠y*} p_k(x_i)``; the ``round(rate·N)``
    top scorers (ties broken by a seeded permutation) flip to ``argmax_{k≠y*} p_k(x_i)``, so
    the realised rate is exactly ``round(rate·N)/N`` (Python ``round``: halves to even).
    """
    y, k = _check_labels(labels, n_classes)
    x = _check_features(features, y.size)
    n_flip = int(round(_check_fraction(rate, "noise rate", False) * y.size))
    fraction = _check_fraction(fit_fraction, "fit_fraction", True)
    if n_flip == 0:
        return y.copy()
    subset = rng.choice(y.size, size=_fit_size(y.size, k, fraction), replace=False)
    if np.unique(y[subset]).size < 2:
        raise ValueError("the weak-classifier subset holds < 2 classes; raise fit_fraction")
    # imported here, not at module level: bench.spec.suite imports this module, and the training loop
    # (bench.sdk.loop) must import where scikit-learn is absent (benchmarks/gpu.py's GPU machine)
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(C=1.0, max_iter=1000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(x[subset], y[subset])
    proba = np.zeros((y.size, k))
    proba[:, np.asarray(clf.classes_, dtype=np.int64)] = clf.predict_proba(x)
    rows = np.arange(y.size)
    proba[rows, y] = -np.inf
    runner_up = proba.argmax(axis=1)
    chosen = np.lexsort((rng.permutation(y.size), -proba[rows, runner_up]))[:n_flip]
    out = y.copy()
    out[chosen] = runner_up[chosen]
    return out


def instance_noise_xia(
    labels: ArrayLike, features: ArrayLike, n_classes: int, rate: float, rng: np.random.Generator
) -> NDArray[np.int64]:
    """Xia et al. (2020) instance-dependent noise (METHODS.md §1.3 I-b [3rd]).

    ``q_i ~ N(rate, 0.1²)`` truncated to (0, 1) by resampling; one ``W ~ N(0,1)^{S×K}``;
    ``z = x_i W`` with ``z_{y*} = −inf``; ``p = q_i·softmax(z)``, ``p_{y*} = 1 − q_i``;
    ``ỹ ~ Categorical(p)``. The realised rate is about ``rate``.
    """
    y, k = _check_labels(labels, n_classes)
    x = _check_features(features, y.size)
    rate = _check_fraction(rate, "noise rate", False)
    if rate == 0.0 or y.size == 0:
        return y.copy()
    q = rng.normal(rate, XIA_Q_STD, size=y.size)
    while (bad := (q <= 0.0) | (q >= 1.0)).any():
        q[bad] = rng.normal(rate, XIA_Q_STD, size=int(bad.sum()))
    z = x @ rng.standard_normal((x.shape[1], k))
    rows = np.arange(y.size)
    z[rows, y] = -np.inf
    expz = np.exp(z - z.max(axis=1, keepdims=True))
    p = q[:, None] * expz / expz.sum(axis=1, keepdims=True)
    p[rows, y] = 1.0 - q
    draw = (p.cumsum(axis=1) < rng.random(y.size)[:, None]).sum(axis=1)
    out: NDArray[np.int64] = np.minimum(draw, k - 1).astype(np.int64)
    return out


def transition_counts(true: ArrayLike, observed: ArrayLike, n_classes: int) -> NDArray[np.int64]:
    """K×K counts of (true class, observed class) pairs: rows true, columns observed."""
    t, k = _check_labels(true, n_classes, "true labels")
    o = _check_labels(observed, n_classes, "observed labels")[0]
    if t.shape != o.shape:
        raise ValueError(f"true and observed labels differ in length: {t.size} vs {o.size}")
    counts = np.zeros((k, k), dtype=np.int64)
    np.add.at(counts, (t, o), 1)
    return counts


def apply_noise(
    spec: NoiseSpec,
    labels: ArrayLike,
    n_classes: int,
    *,
    seed: int,
    features: ArrayLike | None = None,
) -> NoiseResult:
    """Apply ``spec`` to training labels with ``np.random.default_rng(seed)`` (METHODS.md §1).

    Args:
        spec: the noise setting. Kind ``none`` or rate 0 returns the labels unchanged.
        labels: true training labels, integers in ``[0, n_classes)``.
        n_classes: number of classes K (at least 2).
        seed: the per-run noise seed; the same seed gives the same labels.
        features: ``[N, S]`` feature vectors, required for instance-dependent noise.

    Raises:
        ValueError: bad labels or K, or instance noise without feature vectors.
    """
    y, k = _check_labels(labels, n_classes)
    if spec.kind == "instance" and features is None:
        raise ValueError("instance-dependent noise needs feature vectors")
    rng = np.random.default_rng(seed)
    info = _describe(spec, y.size, k, seed)
    if spec.kind == "none" or spec.rate == 0.0:
        observed = y.copy()
    elif spec.kind == "symmetric":
        observed = symmetric_noise(y, k, spec.rate, rng)
    elif spec.kind == "asymmetric":
        observed = asymmetric_noise(y, k, spec.rate, rng, spec.pair_map)
    elif spec.generator == "confusion":
        assert features is not None
        observed = instance_noise_confusion(y, features, k, spec.rate, rng, spec.fit_fraction)
    else:
        assert features is not None
        observed = instance_noise_xia(y, features, k, spec.rate, rng)
    counts = transition_counts(y, observed, k)
    totals = counts.sum(axis=1, keepdims=True)
    matrix = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
    clean = observed == y
    return NoiseResult(
        observed=observed,
        truly_clean=clean,
        realised_rate=int(y.size - clean.sum()) / y.size if y.size else 0.0,
        counts=counts.tolist(),
        matrix=matrix.tolist(),
        info=info,
    )


def real_noise(result: NoiseResult, truth: ArrayLike, n_classes: int, source: str) -> NoiseResult:
    """``result`` (labels as given, noise kind none) described against the data's gold labels.

    A real-noise set's observed labels are wrong where they differ from ``truth``: the realised
    rate and the transition counts and matrix are measured from the data, and ``info`` says so.
    """
    y = np.asarray(truth, dtype=np.int64)
    counts = transition_counts(y, result.observed, n_classes)
    totals = counts.sum(axis=1, keepdims=True)
    matrix = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
    clean = result.observed == y
    return replace(result, truly_clean=clean, realised_rate=int(y.size - clean.sum()) / y.size if y.size else 0.0,
                   counts=counts.tolist(), matrix=matrix.tolist(), info={**result.info, "real": source})


def _describe(spec: NoiseSpec, n: int, k: int, seed: int) -> dict[str, object]:
    """The ``info`` record: kind, rate, seed and the generator's own settings."""
    info: dict[str, object] = {"kind": spec.kind, "rate": spec.rate, "seed": seed}
    if spec.kind == "asymmetric":
        name = "(y+1) mod K" if spec.pair_map is None else spec.pair_map
        info["pair_map"] = name if isinstance(name, str) else "custom"
        targets = resolve_pair_map(spec.pair_map, k)
        info["pair_targets"] = {source: list(choices) for source, choices in targets.items()}
    elif spec.kind == "instance" and spec.generator == "confusion":
        info.update(generator="confusion", weak_classifier=WEAK_CLASSIFIER)
        info.update(fit_fraction=spec.fit_fraction, fit_size=_fit_size(n, k, spec.fit_fraction))
    elif spec.kind == "instance":
        info.update(generator="xia", q_std=XIA_Q_STD, q_truncation=XIA_Q_TRUNCATION)
    return info


def _fit_size(n: int, k: int, fit_fraction: float) -> int:
    """Weak-classifier subset size: ``round(fit_fraction·N)``, at least K, at most N."""
    return min(n, max(k, int(round(fit_fraction * n))))


def _check_labels(
    labels: ArrayLike, n_classes: int, what: str = "labels"
) -> tuple[NDArray[np.int64], int]:
    """Check K >= 2 and labels as 1-D integers in ``[0, K)``; return them as int64, and K."""
    if isinstance(n_classes, bool) or not isinstance(n_classes, (int, np.integer)):
        raise ValueError(f"n_classes must be an integer, got {n_classes!r}")
    if n_classes < 2:
        raise ValueError(f"label noise needs at least 2 classes, got n_classes={n_classes}")
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise ValueError(f"{what} must be a 1-D array, got shape {arr.shape}")
    if arr.size and arr.dtype.kind not in "iu":
        raise ValueError(f"{what} must be integers, got dtype {arr.dtype}")
    y = arr.astype(np.int64)
    outside = np.unique(y[(y < 0) | (y >= n_classes)])
    if outside.size:
        raise ValueError(f"{what} must lie in [0, {n_classes}); found {outside[:10].tolist()}")
    return y, int(n_classes)


def _check_fraction(value: object, what: str, one_ok: bool) -> float:
    """Return ``value`` as a float in [0, 1) (``one_ok``: in (0, 1]), or raise ValueError."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{what} must be a number, got {value!r}")
    number = float(value)
    inside = 0.0 < number <= 1.0 if one_ok else 0.0 <= number < 1.0
    if not inside:
        raise ValueError(f"{what} must be in {'(0, 1]' if one_ok else '[0, 1)'}, got {value}")
    return number


def _check_features(features: ArrayLike, n: int) -> NDArray[np.float64]:
    """Check ``[N, S]`` finite feature vectors; return them as float64."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] != n:
        raise ValueError(f"features must have shape [N={n}, S], got {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("features contain NaN or inf")
    return x


def _as_class(value: object, k: int, what: str) -> int:
    """Read a class index from an int or an integer string (YAML keys); check its range."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        index = int(value)
    elif isinstance(value, str) and value.strip().lstrip("-").isdigit():
        index = int(value)
    else:
        raise ValueError(f"{what} must be a class index, got {value!r}")
    if not 0 <= index < k:
        raise ValueError(f"{what} {index} is out of range for K={k}")
    return index


def _check_choice(value: str, choices: tuple[str, ...], what: str) -> None:
    """Raise ``ValueError("Unknown <what> 'x'; expected one of ...")`` for unknown names."""
    if value not in choices:
        raise ValueError(f"Unknown {what} {value!r}; expected one of {', '.join(choices)}")
