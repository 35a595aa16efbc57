"""Statistics of `medtl compare`: tests match scipy, Holm by hand, DeLong vs the slow formula,
bootstrap CI coverage by simulation."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from medtl.stats.compare import (
    bootstrap_diff_ci,
    bootstrap_mean_ci,
    cliffs_delta,
    cohens_d,
    cohens_dz,
    compare_arms,
    compare_pair,
    describe,
    hodges_lehmann,
    holm,
    paired_tests,
    unpaired_tests,
)
from medtl.stats.delong import delong_test

A = np.array([0.861, 0.874, 0.855, 0.869, 0.880, 0.858, 0.866, 0.871, 0.852, 0.877])
B = np.array([0.851, 0.866, 0.858, 0.860, 0.869, 0.849, 0.861, 0.859, 0.857, 0.870])
C = np.array([0.842, 0.851, 0.848, 0.839, 0.860, 0.845, 0.853, 0.840, 0.856])


# ---------------------------------------------------------------------------- tests vs scipy

def test_paired_tests_equal_scipy():
    r = paired_tests(A, B)
    w = stats.wilcoxon(A, B)
    t = stats.ttest_rel(A, B)
    assert r["wilcoxon"]["statistic"] == pytest.approx(w.statistic, abs=1e-12)
    assert r["wilcoxon"]["p"] == pytest.approx(w.pvalue, abs=1e-12)
    assert r["ttest_rel"]["statistic"] == pytest.approx(t.statistic, abs=1e-12)
    assert r["ttest_rel"]["p"] == pytest.approx(t.pvalue, abs=1e-12)


def test_unpaired_tests_equal_scipy():
    r = unpaired_tests(A, C)
    u = stats.mannwhitneyu(A, C, alternative="two-sided")
    t = stats.ttest_ind(A, C, equal_var=False)
    assert r["mannwhitneyu"]["statistic"] == pytest.approx(u.statistic, abs=1e-12)
    assert r["mannwhitneyu"]["p"] == pytest.approx(u.pvalue, abs=1e-12)
    assert r["welch_t"]["statistic"] == pytest.approx(t.statistic, abs=1e-12)
    assert r["welch_t"]["p"] == pytest.approx(t.pvalue, abs=1e-12)


def test_degenerate_tests():
    r = paired_tests(A, A.copy())
    assert r["wilcoxon"]["p"] == 1.0 and r["ttest_rel"]["p"] == 1.0
    r = paired_tests(A[:1], B[:1])
    assert math.isnan(r["wilcoxon"]["p"]) and r["note"]
    r = unpaired_tests(np.ones(4), np.ones(5))
    assert r["welch_t"]["p"] == 1.0 and r["mannwhitneyu"]["p"] == pytest.approx(1.0)


def test_compare_pair_paired_and_unpaired():
    a = dict(enumerate(A))
    b = dict(enumerate(B))
    r = compare_pair(a, b, n_resamples=2000)
    assert r["paired"] and r["test"] == "wilcoxon" and r["secondary_test"] == "ttest_rel"
    assert r["p"] == pytest.approx(stats.wilcoxon(A, B).pvalue, abs=1e-12)
    assert r["diff"] == pytest.approx(np.mean(A - B), abs=1e-15)
    d = A - B
    assert r["effect_size"] == pytest.approx(d.mean() / d.std(ddof=1), abs=1e-12)
    assert r["diff_ci_low"] < r["diff"] < r["diff_ci_high"]
    # seed sets differ -> unpaired
    c = {s + 100: v for s, v in enumerate(C)}
    r = compare_pair(a, c, n_resamples=2000)
    assert not r["paired"] and r["seed_sets_differ"] and r["test"] == "mannwhitneyu"
    assert r["p"] == pytest.approx(stats.mannwhitneyu(A, C).pvalue, abs=1e-12)
    assert r["secondary_p"] == pytest.approx(stats.ttest_ind(A, C, equal_var=False).pvalue, abs=1e-12)
    assert r["diff"] == pytest.approx(A.mean() - C.mean(), abs=1e-15)
    assert r["diff_ci_low"] < r["diff"] < r["diff_ci_high"]


def test_effect_sizes():
    sp = math.sqrt(((len(A) - 1) * A.var(ddof=1) + (len(C) - 1) * C.var(ddof=1)) / (len(A) + len(C) - 2))
    assert cohens_d(A, C) == pytest.approx((A.mean() - C.mean()) / sp, abs=1e-12)
    assert cohens_dz(A, B) == pytest.approx((A - B).mean() / (A - B).std(ddof=1), abs=1e-12)
    assert cliffs_delta([1, 2, 3], [2, 2]) == 0.0  # 3>2 twice, 1<2 twice, 2=2 twice
    assert cliffs_delta([1, 3, 3], [2, 2]) == pytest.approx(2 / 6)
    assert cliffs_delta([5, 6], [1, 2]) == 1.0
    assert hodges_lehmann([1, 2, 3], [0]) == 2.0


# ---------------------------------------------------------------------------- Holm

def test_holm_hand_example():
    adj = holm([0.01, 0.04, 0.03, 0.005])
    np.testing.assert_allclose(adj, [0.03, 0.06, 0.06, 0.02], atol=1e-15)


def test_holm_monotone_cap_and_nan():
    adj = holm([0.5, 0.4, 0.9])  # 3*0.4=1.2 -> capped; monotone
    np.testing.assert_allclose(adj, [1.0, 1.0, 1.0])
    adj = holm([0.01, float("nan"), 0.02])  # NaN does not count towards m
    assert math.isnan(adj[1])
    np.testing.assert_allclose(adj[[0, 2]], [0.02, 0.02])
    assert holm([]).size == 0


# ---------------------------------------------------------------------------- bootstrap

def test_describe_and_ci_fallbacks():
    d = describe(A, n_resamples=2000, seed=0)
    assert d["n"] == 10 and d["mean"] == pytest.approx(A.mean()) and d["sd"] == pytest.approx(A.std(ddof=1))
    assert d["median"] == pytest.approx(np.median(A)) and d["min"] == A.min() and d["max"] == A.max()
    assert d["ci_method"] == "bca" and d["ci_low"] < d["mean"] < d["ci_high"]
    # seeded: identical twice
    assert describe(A, n_resamples=2000, seed=0)["ci_low"] == d["ci_low"]
    # all-equal: BCa undefined -> percentile, recorded
    e = bootstrap_mean_ci([0.9] * 5, n_resamples=500)
    assert e["ci_method"] == "percentile" and e["ci_low"] == pytest.approx(0.9) and e["note"]
    # n < 2 -> NaN + note
    one = describe([0.9, float("nan")])
    assert one["n"] == 1 and one["n_missing"] == 1 and math.isnan(one["ci_low"]) and one["note"]
    p = bootstrap_mean_ci(A, n_resamples=2000, method="percentile")
    assert p["ci_method"] == "percentile"
    u = bootstrap_diff_ci(A, C, paired=False, n_resamples=2000)
    assert u["ci_method"] == "bca" and u["ci_low"] < A.mean() - C.mean() < u["ci_high"]


def test_bootstrap_ci_coverage_simulation():
    rng = np.random.default_rng(20240601)
    mu, sigma, n, reps = 0.8, 0.05, 30, 300
    hits = 0
    for i in range(reps):
        x = rng.normal(mu, sigma, n)
        ci = bootstrap_mean_ci(x, n_resamples=2000, seed=i)
        hits += ci["ci_low"] <= mu <= ci["ci_high"]
    assert 0.90 <= hits / reps <= 0.99


def test_compare_arms_holm_family_and_sentences():
    arms = {"test.auc": {"a": dict(enumerate(A)), "b": dict(enumerate(B)), "c": {s + 50: v for s, v in enumerate(C)}},
            "test.acc": {"a": dict(enumerate(A - 0.1)), "b": dict(enumerate(B - 0.1)), "c": {0: 0.7}}}
    res = compare_arms(arms, n_resamples=1000)
    pairs = res["pairs"]
    assert len(pairs) == 6
    raw = [p["p"] for p in pairs]
    np.testing.assert_allclose([p["p_holm"] for p in pairs], holm(raw), equal_nan=True)
    assert res["holm"]["m_primary"] == 4  # the two pairs with arm c of n=1 are untestable
    for p in pairs:
        assert p["sentence"].startswith(f"{p['a']} vs {p['b']} on {p['metric']}:")
    ab = pairs[0]
    assert "Wilcoxon p=" in ab["sentence"] and "Holm-adjusted p=" in ab["sentence"]
    assert "significant difference at α=0.05" in ab["sentence"]
    assert "not tested" in pairs[-1]["sentence"]
    assert res["by_metric"]["test.acc"]["arms"]["c"]["n"] == 1


# ---------------------------------------------------------------------------- DeLong

def _slow_delong(y, pa, pb):
    """Independent reference: DeLong et al. (1988) structural components by the O(m*n) kernel."""
    y = np.asarray(y)
    out_auc, v10s, v01s = [], [], []
    for p in (pa, pb):
        x, z = p[y == 1], p[y == 0]
        psi = (x[:, None] > z[None, :]).astype(float) + 0.5 * (x[:, None] == z[None, :])
        out_auc.append(psi.mean())
        v10s.append(psi.mean(axis=1))  # per positive
        v01s.append(psi.mean(axis=0))  # per negative
    m, n = (y == 1).sum(), (y == 0).sum()
    s10, s01 = np.cov(np.vstack(v10s)), np.cov(np.vstack(v01s))
    s = s10 / m + s01 / n
    var = s[0, 0] + s[1, 1] - 2 * s[0, 1]
    z = (out_auc[0] - out_auc[1]) / math.sqrt(var)
    return out_auc, s, var, 2 * stats.norm.sf(abs(z))


def _example(n=200, seed=0, ties=True):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.35).astype(int)
    pa = 1 / (1 + np.exp(-(1.2 * y + rng.normal(size=n))))
    pb = 1 / (1 + np.exp(-(0.8 * y + rng.normal(size=n))))
    if ties:  # coarse scores so that midranks matter
        pa, pb = np.round(pa, 1), np.round(pb, 2)
    return y, pa, pb


@pytest.mark.parametrize("ties", [True, False])
def test_delong_matches_slow_reference_and_sklearn(ties):
    y, pa, pb = _example(ties=ties)
    r = delong_test(y, pa, pb)
    assert r["auc_a"] == pytest.approx(roc_auc_score(y, pa), abs=1e-12)
    assert r["auc_b"] == pytest.approx(roc_auc_score(y, pb), abs=1e-12)
    aucs, s, var, p = _slow_delong(y, pa, pb)
    assert r["var_a"] == pytest.approx(s[0, 0], rel=1e-10)
    assert r["var_b"] == pytest.approx(s[1, 1], rel=1e-10)
    assert r["cov"] == pytest.approx(s[0, 1], rel=1e-10)
    assert r["var_diff"] == pytest.approx(var, rel=1e-10)
    assert r["p"] == pytest.approx(p, rel=1e-9)
    assert r["diff_ci_low"] < r["diff"] < r["diff_ci_high"]


def test_delong_identical_and_clearly_different():
    y, pa, _ = _example(ties=False)
    r = delong_test(y, pa, pa.copy())
    assert r["p"] == 1.0 and r["z"] == 0.0 and r["diff"] == 0.0
    rng = np.random.default_rng(1)
    n = 400
    y = (rng.random(n) < 0.5).astype(int)
    good = 3.0 * y + rng.normal(size=n)
    noise = rng.normal(size=n)
    r = delong_test(y, good, noise)
    assert r["auc_a"] > 0.9 and r["p"] < 1e-6
    with pytest.raises(ValueError):
        delong_test([1, 0, 0], [0.1, 0.2, 0.3], [0.1, 0.2, 0.3])


def test_min_attainable_p_is_what_scipy_gives_at_complete_separation():
    from medtl.stats.compare import min_attainable_p

    for n in (3, 5, 7):
        a, b = np.arange(n) + 10.0, np.arange(n) * 0.5  # every a - b > 0, distinct magnitudes
        assert min_attainable_p({"paired": True, "n_pairs": n}) == pytest.approx(stats.wilcoxon(a, b).pvalue)
    a, b = np.array([5.0, 6, 7]), np.array([1.0, 2, 3, 4])
    assert min_attainable_p({"paired": False, "n_a": 3, "n_b": 4}) == pytest.approx(
        stats.mannwhitneyu(a, b, method="exact").pvalue)


def test_a_design_that_cannot_reach_significance_says_so():
    rng = np.random.default_rng(0)
    big = {f"m{k}": {"a": {s: 1.0 + s + rng.normal() * 1e-3 for s in range(5)},
                     "b": {s: float(s) for s in range(5)}} for k in range(3)}
    res = compare_arms(big, n_resamples=200)
    # a + 1 everywhere: every p is the floor 2/2**5 = 0.0625; Holm over 3 tests: nothing can pass
    assert all(p["p"] == pytest.approx(0.0625) and not p["significant"] for p in res["pairs"])
    assert "smallest two-sided p the test can give is 0.0625" in res["design_note"]
    assert "at least 7 paired seeds" in res["design_note"]  # 2/2**7 * 3 = 0.047 < 0.05
    ten = {"m": {"a": {s: 1.0 + s for s in range(10)}, "b": {s: float(s) for s in range(10)}}}
    res10 = compare_arms(ten, n_resamples=200)
    assert res10["design_note"] is None and res10["pairs"][0]["significant"]


def test_p_values_near_alpha_are_not_rounded_onto_it():
    from medtl.stats.compare import format_p

    assert format_p(0.0498) == "p=0.0498" and format_p(0.0512) == "p=0.0512"
    assert format_p(0.21) == "p=0.21" and format_p(0.004) == "p=0.004" and format_p(0.0004) == "p<0.001"
