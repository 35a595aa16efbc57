"""Crossed seeds x test-cases inference: exact components, and coverage by simulation (each arm
with its own per-case errors; the full 2,000-replicate check is scripts/coverage_sim.py)."""
from __future__ import annotations

import numpy as np
import pytest

from sklearn.metrics import roc_auc_score

from medtl.stats.hierarchical import RunPredictions, diff_ci, mean_ci, same_cases, weighted_metric


def test_weighted_auc_equals_sklearn_on_the_expanded_sample():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 60)
    p = np.round(rng.random(60), 1)  # many ties
    counts = rng.multinomial(60, np.full(60, 1 / 60), size=5)
    got = weighted_metric(RunPredictions(y, p), "auc", counts)
    for k in range(5):
        idx = np.repeat(np.arange(60), counts[k])
        assert got[k] == pytest.approx(roc_auc_score(y[idx], p[idx]), abs=1e-12)
    ones = weighted_metric(RunPredictions(y, p), "auc", np.ones((1, 60), dtype=int))
    assert ones[0] == pytest.approx(roc_auc_score(y, p), abs=1e-12)


@pytest.mark.parametrize("metric", ["acc", "sensitivity", "specificity", "balanced_acc"])
def test_weighted_threshold_metrics(metric):
    rng = np.random.default_rng(1)
    y, p = rng.integers(0, 2, 40), rng.random(40)
    counts = rng.multinomial(40, np.full(40, 1 / 40), size=3)
    got = weighted_metric(RunPredictions(y, p, threshold=0.3), metric, counts)
    for k in range(3):
        idx = np.repeat(np.arange(40), counts[k])
        yy, pred = y[idx], (p[idx] >= 0.3).astype(int)
        sens, spec = np.mean(pred[yy == 1] == 1), np.mean(pred[yy == 0] == 0)
        want = {"acc": np.mean(pred == yy), "sensitivity": sens, "specificity": spec,
                "balanced_acc": (sens + spec) / 2}[metric]
        assert got[k] == pytest.approx(want, abs=1e-12)


def test_runs_on_other_test_sets_get_no_interval():
    a = RunPredictions(np.array([0, 1, 0, 1]), np.array([.1, .9, .2, .8]), ids=np.array(list("abcd")))
    b = RunPredictions(np.array([0, 1, 0, 1]), np.array([.1, .9, .2, .8]), ids=np.array(list("abce")))
    assert not same_cases([a, b])
    r = mean_ci([a, b], "auc")
    assert np.isnan(r["ci_low"]) and "test set" in r["note"]


def test_one_run_interval_is_delong():
    from medtl.stats.delong import delong_covariance

    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 120)
    p = np.round(1 / (1 + np.exp(-(1.5 * y + rng.normal(size=120)))), 2)
    r = mean_ci([RunPredictions(y, p)], "auc")
    aucs, cov = delong_covariance(y, p)
    assert r["estimate"] == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert r["se"] == pytest.approx(np.sqrt(cov[0, 0]), rel=1e-9)
    assert r["ci_low"] < r["estimate"] < r["ci_high"]


def test_components_add_up():
    """With identical runs there is no seed or interaction variance: the interval is the one run's
    case interval; a paired difference of a run with itself is exactly zero."""
    rng = np.random.default_rng(6)
    y = rng.integers(0, 2, 200)
    run = RunPredictions(y, y + rng.normal(size=200))
    one, five = mean_ci([run], "auc"), mean_ci([run] * 5, "auc")
    assert five["var_seed_term"] == 0 and five["var_interaction"] == pytest.approx(0, abs=1e-15)
    assert five["se"] == pytest.approx(one["se"], rel=1e-9)
    d = diff_ci([run] * 3, [run] * 3, "auc")
    assert d["estimate"] == 0 and d["ci_low"] == d["ci_high"] == 0
    # proportions: binomial case variance of the hits
    r = mean_ci([RunPredictions(y, y.astype(float), threshold=0.5)], "acc")
    assert r["estimate"] == 1.0 and r["se"] == 0.0


def test_seeds_only_is_the_t_interval():
    rng = np.random.default_rng(8)
    y = rng.integers(0, 2, 150)
    runs = [RunPredictions(y, y * (1 + 0.3 * rng.normal()) + rng.normal(size=150)) for _ in range(6)]
    aucs = np.array([roc_auc_score(y, r.p) for r in runs])
    r = mean_ci(runs, "auc", fraction=0.0)
    from scipy import stats

    ci = stats.ttest_1samp(aucs, 0).confidence_interval(0.95)
    assert (r["ci_low"], r["ci_high"]) == pytest.approx((ci.low, ci.high), abs=1e-12)


def test_coverage_at_realistic_settings(m=10):
    """AUC about 0.96 on 624 cases, each arm with its own per-case errors: the four intervals
    (mean and paired difference; seeds + cases and seeds only) cover about 95%.  300 replicates
    here (standard error about 0.013); scripts/coverage_sim.py runs 2,500 at 5, 10 and 30 seeds."""
    from medtl.stats.coverage import coverage

    r = coverage(m, 300, seed=7)
    for key, c in r["coverage"].items():
        assert 0.91 <= c <= 0.985, (key, c)


def test_finite_population_fraction_scales_only_the_case_term():
    """An attack scored on n of N test images: the case term is multiplied by 1 - n/N, the seed
    term is not (medtl.stats.robustness uses this for the attack subset)."""
    rng = np.random.default_rng(9)
    y = rng.integers(0, 2, 256)
    z = rng.standard_normal(256)
    runs = [RunPredictions(y, y * (1 + 0.2 * rng.normal()) + z + 0.5 * rng.normal(size=256)) for _ in range(8)]
    full, half, none = (mean_ci(runs, "auc", fraction=f) for f in (1.0, 0.5, 0.0))
    assert full["var_case_term"] > 0
    assert half["var_case_term"] == pytest.approx(0.5 * full["var_case_term"])
    assert half["var_seed_term"] == none["var_seed_term"] == full["var_seed_term"]
    assert none["se"] < half["se"] < full["se"]
