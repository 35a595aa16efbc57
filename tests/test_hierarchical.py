"""The crossed seeds x test-cases bootstrap: exact weighted metrics, and coverage by simulation."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm
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


def _study(rng, m, n, d0, tau, rho, delta=0.0):
    """One simulated study: a test set of n cases drawn from the population, m seeds whose
    models have quality d_j ~ N(d0, tau) (arm b: d_j + delta); case difficulty u_i shared by every
    seed (correlation rho) and seed-specific noise: scores x_ij = d_j y_i + sqrt(rho) u_i + sqrt(1-rho) v_ij."""
    y = rng.integers(0, 2, n)
    u = rng.standard_normal(n)
    d = d0 + tau * rng.standard_normal(m)
    runs_a, runs_b = [], []
    for j in range(m):
        v = rng.standard_normal(n)
        base = np.sqrt(rho) * u + np.sqrt(1 - rho) * v
        runs_a.append(RunPredictions(y, d[j] * y + base))
        runs_b.append(RunPredictions(y, (d[j] + delta) * y + base))
    return runs_a, runs_b


def test_coverage_of_the_mean_ci_with_both_variance_sources():
    """The estimand is the population AUC averaged over training runs: E_d[Phi(d / sqrt(2))]
    (the scores' noise has unit variance whatever rho).  Both the test set and the seeds are
    drawn anew in every simulated study, so a CI over seeds only would cover far too rarely."""
    rng = np.random.default_rng(2024)
    d0, tau, m, n = 1.2, 0.15, 8, 150
    dd = d0 + tau * rng.standard_normal(200_000)
    truth = float(np.mean(norm.cdf(dd / np.sqrt(2))))
    hits, seed_only_hits, sims = 0, 0, 200
    for k in range(sims):
        runs, _ = _study(rng, m, n, d0, tau, rho=0.5)
        r = mean_ci(runs, "auc", n_resamples=400, seed=k)
        hits += r["ci_low"] <= truth <= r["ci_high"]
        aucs = np.array([roc_auc_score(x.y, x.p) for x in runs])
        boot = aucs[rng.integers(0, m, (400, m))].mean(1)
        lo, hi = np.quantile(boot, [0.025, 0.975])
        seed_only_hits += lo <= truth <= hi
    coverage = hits / sims
    print(f"coverage {coverage:.3f}, seed-only {seed_only_hits / sims:.3f}")
    assert 0.90 <= coverage <= 0.99, coverage
    assert seed_only_hits / sims < 0.85  # the seed-only CI misses the test-set variance


def test_coverage_of_the_paired_difference():
    rng = np.random.default_rng(7)
    d0, tau, m, n, delta = 1.0, 0.1, 8, 150, 0.2
    dd = d0 + tau * rng.standard_normal(200_000)
    truth = float(np.mean(norm.cdf(dd / np.sqrt(2)) - norm.cdf((dd + delta) / np.sqrt(2))))
    hits, sims = 0, 150
    for k in range(sims):
        a, b = _study(rng, m, n, d0, tau, rho=0.5, delta=delta)
        r = diff_ci(a, b, "auc", n_resamples=400, seed=k)
        hits += r["ci_low"] <= truth <= r["ci_high"]
    print(f"coverage of the difference {hits / sims:.3f}")
    assert 0.90 <= hits / sims <= 0.99, hits / sims
