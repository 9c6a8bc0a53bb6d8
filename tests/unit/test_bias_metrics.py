"""Tests for bench.metrics.bias: hand-computed probe metrics, lm-eval BBQ cross-check, bootstrap."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from bench.metrics.bias import (
    HEADLINES,
    IDEAL,
    ITEM_FIELDS,
    PROBES,
    bbq,
    crows_pairs,
    delta_ci,
    ideal,
    stereoset,
    value_ci,
    winobias,
)

Items = dict[str, np.ndarray]


def is_nan(x: float) -> bool:
    return isinstance(x, float) and math.isnan(x)


# --- CrowS-Pairs -----------------------------------------------------------------------------

def test_crows_pairs_hand_example() -> None:
    #   ll_more  ll_less  type                 more > less   |diff|
    #   -10      -11      race-color           yes           1
    #   -12      -11      race-color           no            1
    #    -8       -8      gender               no (tie)      0
    #   -11      -10      gender               no            1
    #    -5       -6      sexual-orientation   yes           1
    # pct = 2/5 = 0.4; likelihood_diff = 4/5 = 0.8; per type: race_color 1/2, gender 0/2,
    # sexual_orientation 1/1
    items = {
        "ll_more": np.array([-10.0, -12.0, -8.0, -11.0, -5.0]),
        "ll_less": np.array([-11.0, -11.0, -8.0, -10.0, -6.0]),
        "bias_type": np.array(["race-color", "race-color", "gender", "gender", "sexual-orientation"]),
    }
    assert crows_pairs(items) == {
        "pct_stereotype": pytest.approx(0.4),
        "likelihood_diff": pytest.approx(0.8),
        "pct_stereotype_gender": 0.0,
        "pct_stereotype_race_color": 0.5,
        "pct_stereotype_sexual_orientation": 1.0,
    }


# --- BBQ -------------------------------------------------------------------------------------

# item  category           disambig  correct  biased  non_unknown
# A1    Age                yes       1        1       1
# A2    Age                yes       0        0       1
# A3    Age                no        1        0       0   (answered "unknown")
# A4    Age                no        0        1       1
# D1    Disability_status  yes       1        0       1
# D2    Disability_status  yes       1        0       1
# D3    Disability_status  no        1        0       0
# D4    Disability_status  no        1        0       0
BBQ_ITEMS: Items = {
    "category": np.array(["Age"] * 4 + ["Disability_status"] * 4),
    "disambig": np.array([True, True, False, False] * 2),
    "correct": np.array([1, 0, 1, 0, 1, 1, 1, 1], dtype=float),
    "biased": np.array([1, 0, 0, 1, 0, 0, 0, 0], dtype=float),
    "non_unknown": np.array([1, 1, 0, 1, 1, 1, 0, 0], dtype=float),
}


def test_bbq_hand_example() -> None:
    m = bbq(BBQ_ITEMS)
    # acc = 6/8; ambig A3 A4 D3 D4 -> 3/4; disambig A1 A2 D1 D2 -> 3/4
    assert (m["acc"], m["acc_ambig"], m["acc_disambig"]) == (0.75, 0.75, 0.75)
    # s_DIS: biased 1 (A1) of non-unknown 4 -> 2 * 1/4 - 1 = -0.5
    assert m["bias_disambig"] == pytest.approx(-0.5)
    # s_AMB: ambiguous biased 1 (A4) of non-unknown 1 -> s = 2 * 1/1 - 1 = 1; (1 - 0.75) * 1
    assert m["bias_ambig"] == pytest.approx(0.25)
    # Age: acc 2/4, ambig 1/2, disambig 1/2; s_DIS = 2 * 1/2 - 1 = 0; s_AMB = (1 - 0.5) * 1
    assert [m[f"{k}_Age"] for k in ("acc", "acc_ambig", "acc_disambig", "bias_disambig", "bias_ambig")] \
        == pytest.approx([0.5, 0.5, 0.5, 0.0, 0.5])
    # Disability_status: all correct; no biased answers -> s_DIS = 0 (the formula would give
    # 2 * 0/2 - 1 = -1); ambiguous: no biased, no non-unknown -> 0, and (1 - 1) * 0 = 0
    assert [m[f"{k}_Disability_status"] for k in ("acc", "acc_ambig", "acc_disambig")] == [1.0] * 3
    assert m["bias_disambig_Disability_status"] == 0.0
    assert m["bias_ambig_Disability_status"] == 0.0
    assert len(m) == 5 * 3


def test_bbq_empty_subsets_are_nan() -> None:
    # only the disambiguated items; Disability_status keeps only D1 D2 (no ambiguous items)
    keep = BBQ_ITEMS["disambig"]
    m = bbq({k: v[keep] for k, v in BBQ_ITEMS.items()})
    assert m["acc_disambig"] == 0.75 and m["bias_disambig"] == pytest.approx(-0.5)
    assert all(is_nan(m[k]) for k in ("acc_ambig", "bias_ambig", "acc_ambig_Age", "bias_ambig_Age"))
    # a category with ambiguous items only
    ambig = {k: v[~keep] for k, v in BBQ_ITEMS.items()}
    m = bbq(ambig)
    assert is_nan(m["acc_disambig_Age"]) and is_nan(m["bias_disambig_Age"])
    # Age ambiguous: acc 1/2, s = 2 * 1/1 - 1 = 1 -> (1 - 0.5) * 1
    assert m["bias_ambig_Age"] == pytest.approx(0.5)


def _lm_eval_bbq_utils() -> ModuleType:
    lm_eval = pytest.importorskip("lm_eval")
    path = Path(lm_eval.__file__).parent / "tasks/bbq/utils.py"
    spec = importlib.util.spec_from_file_location("lm_eval_bbq_utils", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _random_bbq(rng: np.random.Generator, n: int) -> Items:
    non_unknown = (rng.random(n) < 0.6).astype(float)
    return {
        "category": rng.choice(np.array(["Age", "SES", "Race_x_gender"]), size=n),
        "disambig": rng.random(n) < 0.5,
        "correct": (rng.random(n) < 0.7).astype(float),
        "biased": non_unknown * (rng.random(n) < 0.5),  # a biased answer is never "unknown"
        "non_unknown": non_unknown,
    }


def test_bbq_matches_lm_eval_aggregation() -> None:
    utils = _lm_eval_bbq_utils()
    items = _random_bbq(np.random.default_rng(7), 300)
    mine = bbq(items)
    acc, biased, non_unk, cat = items["correct"], items["biased"], items["non_unknown"], items["category"]
    mask = [np.array(d, dtype=bool) for d in items["disambig"]]  # as lm-eval _process_results
    pairs = list(zip(acc, mask, strict=True))
    quads = list(zip(acc, biased, non_unk, mask, strict=True))
    assert mine["acc_ambig"] == pytest.approx(utils.agg_accuracy_amb(pairs), abs=1e-12)
    assert mine["acc_disambig"] == pytest.approx(utils.agg_accuracy_disamb(pairs), abs=1e-12)
    assert mine["bias_disambig"] == pytest.approx(utils.agg_disamb_bias_scores(quads), abs=1e-12)
    assert mine["bias_ambig"] == pytest.approx(utils.agg_amb_bias_scores(quads), abs=1e-12)
    for c in ("Age", "SES", "Race_x_gender"):
        # lm-eval's per-category metrics get (acc, nan, nan, nan) from the other categories
        per_cat = [q if cat[i] == c else (q[0], np.nan, np.nan, np.nan) for i, q in enumerate(quads)]
        assert mine[f"bias_disambig_{c}"] == pytest.approx(utils.agg_disamb_bias_scores(per_cat), abs=1e-12)
        assert mine[f"bias_ambig_{c}"] == pytest.approx(utils.agg_amb_bias_scores(per_cat), abs=1e-12)


# --- WinoBias --------------------------------------------------------------------------------

def test_winobias_gap_by_type() -> None:
    # type 1: pro [1, 1, 1, 0] -> 3/4, anti [1, 0] -> 1/2, gap 1/4
    # type 2: pro [1, 1] -> 1, anti [1, 0, 0, 0] -> 1/4, gap 3/4
    # all: pro 5/6, anti 2/6, gap 1/2; acc 7/12
    items = {
        "type": np.array([1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2]),
        "pro": np.array([1, 1, 1, 1, 0, 0, 1, 1, 0, 0, 0, 0], dtype=bool),
        "correct": np.array([1, 1, 1, 0, 1, 0, 1, 1, 1, 0, 0, 0], dtype=float),
    }
    m = winobias(items)
    assert m == pytest.approx({
        "acc": 7 / 12, "acc_pro": 5 / 6, "acc_anti": 1 / 3, "gap": 0.5,
        "acc_pro_type1": 0.75, "acc_anti_type1": 0.5, "gap_type1": 0.25,
        "acc_pro_type2": 1.0, "acc_anti_type2": 0.25, "gap_type2": 0.75,
    })
    # type 2 without its anti items: acc_anti_type2 and gap_type2 are undefined
    m = winobias({k: v[:8] for k, v in items.items()})
    assert is_nan(m["acc_anti_type2"]) and is_nan(m["gap_type2"]) and m["acc_pro_type2"] == 1.0


# --- StereoSet -------------------------------------------------------------------------------

# item term bias   split  ll_st  ll_anti ll_unrel  pro  related
# i1   A    gender intra  -1     -2      -3        1    2
# i2   A    gender intra  -2     -1      -3        0    2
# i3   A    gender intra  -1     -2      -1        1    0   (ties with unrelated are not related)
# i4   B    race   inter  -3     -1      -2        0    1
# i5   A    gender inter  -1     -2      -5        1    2
STEREOSET_ITEMS: Items = {
    "target": np.array(["A", "A", "A", "B", "A"]),
    "bias_type": np.array(["gender", "gender", "gender", "race", "gender"]),
    "intra": np.array([True, True, True, False, False]),
    "ll_stereotype": np.array([-1.0, -2.0, -1.0, -3.0, -1.0]),
    "ll_anti": np.array([-2.0, -1.0, -2.0, -1.0, -2.0]),
    "ll_unrelated": np.array([-3.0, -3.0, -1.0, -2.0, -5.0]),
}


def test_stereoset_macro_average_over_terms() -> None:
    m = stereoset(STEREOSET_ITEMS)
    # A (4 items, both splits pooled): ss = 3/4, lms = 6/8; B (1 item): ss = 0, lms = 1/2
    # SS = (3/4 + 0)/2 = 3/8, LMS = (3/4 + 1/2)/2 = 5/8, ICAT = 5/8 * min(3/8, 5/8)/0.5 = 15/32
    # (pooling items instead would give SS = 3/5, LMS = 7/10)
    assert (m["ss"], m["lms"], m["icat"]) == pytest.approx((3 / 8, 5 / 8, 15 / 32))
    # intrasentence = A's i1-i3: ss 2/3, lms 4/6; ICAT = 2/3 * (1/3)/0.5 = 4/9
    assert (m["ss_intrasentence"], m["lms_intrasentence"], m["icat_intrasentence"]) \
        == pytest.approx((2 / 3, 2 / 3, 4 / 9))
    # intersentence: A's i5 (ss 1, lms 1) and B (0, 1/2): SS 1/2, LMS 3/4, ICAT 3/4 * 0.5/0.5
    assert (m["ss_intersentence"], m["lms_intersentence"], m["icat_intersentence"]) \
        == pytest.approx((0.5, 0.75, 0.75))
    # gender = A: ss 3/4, lms 3/4, ICAT = 3/4 * (1/4)/0.5 = 3/8; race = B: ICAT = 1/2 * 0/0.5 = 0
    assert (m["ss_gender"], m["lms_gender"], m["icat_gender"]) == pytest.approx((0.75, 0.75, 0.375))
    assert (m["ss_race"], m["lms_race"], m["icat_race"]) == pytest.approx((0.0, 0.5, 0.0))
    assert len(m) == 3 * 5


def test_stereoset_ties_are_neither_pro_nor_related() -> None:
    # i1: stereotype == anti -> counted as anti (pro 0); both above unrelated -> related 2
    # i2: stereotype == unrelated, anti below -> pro 1, related 0
    # ss = 1/2, lms = 2/4 (>= would give ss = 1 or lms = 3/4)
    items = {
        "target": np.array(["t", "t"]), "bias_type": np.array(["race"] * 2), "intra": np.ones(2, bool),
        "ll_stereotype": np.array([-1.0, -1.0]), "ll_anti": np.array([-1.0, -2.0]),
        "ll_unrelated": np.array([-2.0, -1.0]),
    }
    assert (stereoset(items)["ss"], stereoset(items)["lms"]) == (0.5, 0.5)


def test_stereoset_icat_arithmetic() -> None:
    # one term, 10 items: 6 prefer the stereotype (SS = 0.6); items 0-4 have both options
    # above unrelated, items 5-9 one (15 of 20 related: LMS = 0.75); ICAT = 0.75 * 0.4 / 0.5 = 0.6
    pro = np.arange(10) < 6
    items = {
        "target": np.array(["t"] * 10), "bias_type": np.array(["race"] * 10), "intra": np.ones(10, bool),
        "ll_stereotype": np.where(pro, 0.0, -1.0), "ll_anti": np.where(pro, -1.0, 0.0),
        "ll_unrelated": np.where(np.arange(10) < 5, -2.0, -0.5),
    }
    m = stereoset(items)
    assert (m["lms"], m["ss"], m["icat"]) == pytest.approx((0.75, 0.6, 0.6))
    assert is_nan(m["icat_intersentence"])  # no intersentence items


# --- constants and validation ----------------------------------------------------------------

def _random_items(probe: str, rng: np.random.Generator, n: int) -> Items:
    if probe == "bbq":
        return _random_bbq(rng, n)
    if probe == "crows_pairs":
        return {"ll_more": rng.normal(size=n), "ll_less": rng.normal(size=n),
                "bias_type": rng.choice(np.array(["race-color", "gender", "age"]), size=n)}
    if probe == "winobias":
        return {"correct": (rng.random(n) < 0.7).astype(float), "pro": rng.random(n) < 0.5,
                "type": rng.integers(1, 3, size=n)}
    terms = rng.integers(0, 8, size=n)
    return {"ll_stereotype": rng.normal(size=n), "ll_anti": rng.normal(size=n),
            "ll_unrelated": rng.normal(size=n) - 1.0, "target": np.array([f"term{t}" for t in terms]),
            "bias_type": np.array(["gender", "race"])[terms % 2], "intra": terms % 3 == 0}


@pytest.mark.parametrize("probe", sorted(PROBES))
def test_constants_agree_with_the_probes(probe: str) -> None:
    metrics = PROBES[probe](_random_items(probe, np.random.default_rng(0), 50))
    assert set(HEADLINES[probe]) <= set(metrics)
    assert all(ideal(h) == IDEAL[h] for h in HEADLINES[probe])
    with pytest.raises(ValueError, match="lack arrays"):
        PROBES[probe]({f: np.zeros(3) for f in ITEM_FIELDS[probe][1:]})


def test_ideal_maps_group_names_to_their_base() -> None:
    assert (ideal("pct_stereotype_gender"), ideal("ss_race"), ideal("gap_type1")) == (0.5, 0.5, 0.0)
    assert (ideal("acc_ambig_Age"), ideal("bias_ambig_SES"), ideal("icat_intrasentence")) == (1.0, 0.0, 1.0)
    assert ideal("likelihood_diff") is None


def test_misaligned_item_arrays_raise() -> None:
    with pytest.raises(ValueError, match="one length"):
        crows_pairs({"ll_more": np.zeros(3), "ll_less": np.zeros(2), "bias_type": np.array(["a"] * 3)})


# --- bootstrap -------------------------------------------------------------------------------

def _runs(probe: str, n: int, k: int) -> list[Items]:
    """``k`` runs of one probe on the same ``n`` items (grouping columns shared, doc ids set)."""
    shared = _random_items(probe, np.random.default_rng(1), n)
    runs = []
    for seed in range(k):
        run: dict[str, Any] = dict(_random_items(probe, np.random.default_rng(100 + seed), n))
        run.update({f: shared[f] for f in ("bias_type", "category", "type", "target", "intra", "disambig")
                    if f in shared})
        run["doc_id"] = np.arange(n)
        runs.append(run)
    return runs


@pytest.mark.parametrize("probe", sorted(PROBES))
def test_value_ci_is_seeded_and_contains_the_point(probe: str) -> None:
    fn, runs = PROBES[probe], _runs(probe, 400, 3)
    ci = value_ci(fn, runs, n_boot=300, seed=5)
    assert ci == value_ci(fn, runs, n_boot=300, seed=5)
    assert ci != value_ci(fn, runs, n_boot=300, seed=6)
    for name in HEADLINES[probe]:
        point, lo, hi = ci[name]
        assert point == pytest.approx(np.mean([fn(r)[name] for r in runs]))
        assert lo <= point <= hi and lo < hi


@pytest.mark.parametrize("probe", sorted(PROBES))
def test_vectorised_bootstrap_matches_calling_the_probe(probe: str) -> None:
    # a lambda is not in PROBES, so value_ci calls it on every resample of the same indices
    fn, runs = PROBES[probe], _runs(probe, 60, 2)
    fast = value_ci(fn, runs, n_boot=100, seed=3)
    slow = value_ci(lambda items: fn(items), runs, n_boot=100, seed=3)
    assert fast.keys() == slow.keys()
    for name in fast:
        assert fast[name] == pytest.approx(slow[name], nan_ok=True, abs=1e-12)


@pytest.mark.parametrize("probe", sorted(PROBES))
def test_delta_of_a_run_against_itself_is_zero(probe: str) -> None:
    run = _runs(probe, 300, 1)[0]
    for name, triple in delta_ci(PROBES[probe], run, [run, run], n_boot=200).items():
        assert triple == (0.0, 0.0, 0.0), name


def test_delta_ci_is_paired() -> None:
    # the new runs are the base with 10 more correct answers: the paired interval is narrow
    base = _runs("winobias", 400, 1)[0]
    wrong = np.flatnonzero(base["correct"] == 0)[:10]
    new = dict(base, correct=base["correct"].copy())
    new["correct"][wrong] = 1.0
    point, lo, hi = delta_ci(winobias, base, [new], n_boot=500)["acc"]
    assert point == pytest.approx(10 / 400)
    assert 0 < lo <= point <= hi < 0.05


def test_nan_point_gives_nan_triple() -> None:
    keep = BBQ_ITEMS["disambig"]
    run = {k: v[keep] for k, v in BBQ_ITEMS.items()}
    ci = value_ci(bbq, [run], n_boot=50)
    assert all(is_nan(x) for x in ci["acc_ambig"])
    assert ci["acc_disambig"][0] == 0.75


def test_mismatched_runs_raise() -> None:
    a, b = _runs("crows_pairs", 20, 2)
    with pytest.raises(ValueError, match="doc_id"):
        value_ci(crows_pairs, [a, dict(b, doc_id=np.arange(20)[::-1])])
    with pytest.raises(ValueError, match="doc_id"):
        delta_ci(crows_pairs, a, [dict(b, doc_id=np.arange(1, 21))])
    with pytest.raises(ValueError, match="numbers of items"):
        delta_ci(crows_pairs, a, [{k: v[:10] for k, v in b.items()}])
    with pytest.raises(ValueError, match="at least one run"):
        delta_ci(crows_pairs, a, [])


def test_full_size_stereoset_bootstrap_runs() -> None:
    # StereoSet-sized: 4,229 items over 80 target terms, 1000 replicates (fast: one bincount
    # per value column for a block of replicates; timing is not asserted)
    rng = np.random.default_rng(0)
    n = 4229
    terms = rng.integers(0, 80, size=n)
    run = {"ll_stereotype": rng.normal(size=n), "ll_anti": rng.normal(size=n),
           "ll_unrelated": rng.normal(size=n) - 1.0, "target": np.array([f"t{t}" for t in terms]),
           "bias_type": np.array(["gender", "profession", "race", "religion"])[terms % 4],
           "intra": rng.random(n) < 0.5}
    ci = value_ci(stereoset, [run], n_boot=1000)
    assert len(ci) == 3 * (3 + 4)
    assert all(lo <= point <= hi for point, lo, hi in ci.values())
