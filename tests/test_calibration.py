"""Calibration (ECE, MCE, Brier, NLL, reliability data, temperature scaling) and subgroup metrics:
hand-computed examples and planted effects."""
from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.calibration import calibration_curve

from medtl.stats.calibration import (brier, calibration_metrics, ece, fit_temperature, nll, reliability,
                                     scaled_probs, temperature_record, temperature_scaled)
from medtl.stats.metrics import auc
from medtl.stats.subgroups import group_metrics

Y = np.array([0, 0, 1, 1, 1])
P = np.array([0.1, 0.4, 0.35, 0.8, 0.9])


def test_ece_mce_brier_nll_match_a_hand_computed_example():
    # two equal-width bins [0, .5] and (.5, 1]: {.1, .4, .35} with 1 positive, {.8, .9} with 2
    # bin 1: mean p .85/3, observed 1/3 -> gap .05; bin 2: mean p .85, observed 1 -> gap .15
    assert ece(Y, P, n_bins=2) == pytest.approx(3 / 5 * 0.05 + 2 / 5 * 0.15, abs=1e-12)
    rel = reliability(Y, P, n_bins=2)
    assert rel["mce"] == pytest.approx(0.15, abs=1e-12)
    assert rel["count"] == [3, 2]
    assert rel["mean_predicted"] == pytest.approx([0.85 / 3, 0.85]) and rel["observed"] == pytest.approx([1 / 3, 1])
    assert brier(Y, P) == pytest.approx((0.01 + 0.16 + 0.65 ** 2 + 0.04 + 0.01) / 5, abs=1e-12)
    assert nll(Y, P) == pytest.approx(-np.mean(np.log([0.9, 0.6, 0.35, 0.8, 0.9])), abs=1e-12)
    # perfectly calibrated in every bin -> 0
    assert ece([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]) == pytest.approx(0.0)


def test_bins_agree_with_sklearn_calibration_curve_and_empty_bins_stay_aligned():
    rng = np.random.default_rng(0)
    p = rng.beta(0.6, 0.6, 500)
    y = (rng.random(500) < p ** 1.5).astype(int)
    for strategy in ("uniform", "quantile"):
        rel = reliability(y, p, n_bins=10, strategy=strategy)
        obs, pred = calibration_curve(y, p, n_bins=10, strategy=strategy)
        full = np.asarray(rel["observed"], float)
        np.testing.assert_allclose(full[np.isfinite(full)], obs)
        np.testing.assert_allclose(np.asarray(rel["mean_predicted"], float)[np.isfinite(full)], pred)
        assert sum(rel["count"]) == 500 and len(rel["count"]) == 10
    sparse = reliability([0, 1, 1], [0.05, 0.92, 0.97], n_bins=10)
    assert sparse["count"] == [1] + [0] * 8 + [2] and math.isnan(sparse["observed"][4])
    m = calibration_metrics(y, p)
    assert {"ece", "ece_equal_mass", "mce", "brier", "nll", "reliability"} <= set(m)


def test_temperature_scaling_recovers_a_planted_temperature_and_keeps_auc():
    rng = np.random.default_rng(1)
    z = rng.normal(0, 2.0, 20000)                      # calibrated logits
    y = (rng.random(z.size) < 1 / (1 + np.exp(-z))).astype(int)
    planted = 2.5
    over = z * planted                                 # an overconfident model: logits x 2.5
    t = fit_temperature(y, over)
    assert t == pytest.approx(planted, rel=0.05)
    scaled = temperature_scaled(y, over, t)
    assert abs(scaled["auc"] - auc(y, over)) < 1e-9
    before = calibration_metrics(y, scaled_probs(over, 1.0))
    assert scaled["ece"] < before["ece"] and scaled["nll"] < before["nll"]
    # two-column logits (z0, z1) are the same model: their margin z1 - z0
    two = np.stack([np.zeros_like(over), over], 1)
    assert fit_temperature(y, two) == pytest.approx(t, rel=1e-6)
    rec = temperature_record(y, over)
    assert rec["fitted_on"] == "val" and not rec["at_bound"] and rec["n_val"] == y.size


def test_temperature_multiclass_and_degenerate_inputs():
    rng = np.random.default_rng(2)
    z = rng.normal(0, 1.5, (6000, 3))
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    y = np.array([rng.choice(3, p=row) for row in p])
    assert fit_temperature(y, z * 0.5) == pytest.approx(0.5, rel=0.05)  # underconfident: T < 1
    assert fit_temperature([1, 1, 1], [2.0, 3.0, 4.0]) == 1.0           # one class: nothing to fit
    assert fit_temperature([], []) == 1.0
    m = calibration_metrics(y, p)
    assert 0 <= m["ece"] <= 1 and m["brier"] > 0


def test_temperature_keeps_binary_auc_but_can_change_a_multiclass_one_vs_rest_auc():
    """Binary: p1 is monotone in the margin z1 - z0, so the AUC is the same at every T.
    Multi-class: class 0's softmax probability depends on the other logits, and its ranking
    across cases flips between T = 0.1 and T = 1 here (case A: one rival 1 below; case B: one
    rival 0.5 below, the other far away)."""
    logits = np.array([[1.0, 0.0, 0.0],      # A, class 0
                       [3.0, 2.5, -20.0],    # B, class 1
                       [-5.0, -5.0, 5.0]])   # C, class 2
    y = np.array([0, 1, 2])
    p0 = {t: scaled_probs(logits, t)[:, 0] for t in (0.1, 1.0)}
    assert p0[0.1][0] > p0[0.1][1] and p0[1.0][0] < p0[1.0][1]       # A above B, then below
    ovr0 = {t: auc((y == 0).astype(int), p0[t]) for t in p0}
    assert ovr0[0.1] == 1.0 and ovr0[1.0] == 0.5
    macro = {t: temperature_scaled(y, logits, t)["auc"] for t in (0.1, 1.0)}
    assert macro[0.1] != pytest.approx(macro[1.0])
    rng = np.random.default_rng(3)
    z = rng.normal(0, 2, 200)
    yb = (rng.random(200) < 1 / (1 + np.exp(-z))).astype(int)
    aucs = [temperature_scaled(yb, z, t)["auc"] for t in (0.05, 0.5, 1.0, 3.0, 40.0)]
    assert max(aucs) - min(aucs) < 1e-12 and aucs[0] == pytest.approx(auc(yb, z))


def _planted_groups(rng):
    n = 300
    y = rng.integers(0, 2, 3 * n + 40)
    p = np.clip(0.5 + 0.35 * (2 * y - 1) + rng.normal(0, 0.15, y.size), 0, 1)   # informative
    site = np.array(["good"] * n + ["chance"] * n + ["other"] * n + ["pos_only"] * 34 + ["tiny"] * 6, dtype=object)
    p[site == "chance"] = rng.random(n)                                           # planted: at chance
    y[site == "pos_only"] = 1
    return y, p, site


def test_a_planted_subgroup_at_chance_is_flagged_and_small_groups_are_kept():
    y, p, site = _planted_groups(np.random.default_rng(3))
    groups, gaps = group_metrics(y, p, 0.5, {"site": site}, n_resamples=500)
    g = groups["site"]
    assert set(g) == {"good", "chance", "other", "pos_only", "tiny"}
    assert g["good"]["auc"] > 0.9 and not any("chance" in f for f in g["good"]["flags"])
    assert g["chance"]["auc_ci_low"] <= 0.5 <= g["chance"]["auc_ci_high"]
    assert any("chance" in f for f in g["chance"]["flags"])
    assert g["pos_only"]["auc_status"].startswith("one class only") and math.isnan(g["pos_only"]["auc"])
    assert g["pos_only"]["sensitivity_ci_low"] <= g["pos_only"]["sensitivity"] <= g["pos_only"]["sensitivity_ci_high"]
    # its positives against every negative (the chance group's included)
    assert math.isnan(g["pos_only"]["specificity"]) and 0.6 < g["pos_only"]["auc_vs_all_negatives"] < 1
    assert g["tiny"]["n"] == 6 and "n < 10" in g["tiny"]["auc_status"] and any("small" in f for f in g["tiny"]["flags"])
    assert gaps["site"]["auc"]["worst"] == "chance" and gaps["site"]["auc"]["gap"] > 0.3
    assert gaps["site"]["auc"]["n_groups"] == 3   # groups without an AUC do not enter the gap


def test_robustness_report_mean_reliability_and_calibration_rows():
    from medtl.reports.robustness import calibration_pngs, calibration_rows
    from medtl.stats.compare import describe
    from medtl.stats.robustness import mean_reliability

    rng = np.random.default_rng(4)
    recs = []
    for s in range(4):
        p = rng.random(200)
        y = (rng.random(200) < p).astype(int)
        recs.append({"arm": "a", "seed": s, "calibration": calibration_metrics(y, p)})
    rel = mean_reliability(recs, n_resamples=200)
    assert rel["n_runs"] == 4 and len(rel["observed"]) == 10
    obs = np.array([r["calibration"]["reliability"]["observed"] for r in recs], float)
    np.testing.assert_allclose(rel["observed"], obs.mean(0))
    assert all(lo <= m <= hi for lo, m, hi in zip(rel["ci_low"], rel["observed"], rel["ci_high"]))
    assert mean_reliability([{"calibration": None}]) is None
    eces = [r["calibration"]["ece"] for r in recs]
    result = {"arms": {"a": {"metrics": {"calibration.ece": describe(eces, n_resamples=200) | {"values": eces}},
                             "reliability": rel}}}
    (row,) = calibration_rows(result)
    assert row[:3] == ["a", "calibration.ece", "4"]
    assert calibration_pngs(result)["calibration"][:8] == b"\x89PNG\r\n\x1a\n"


def test_temperature_effect_pairs_runs_and_counts_the_ones_it_lowered():
    from medtl.evaluate import summarise, temperature_effect

    rng = np.random.default_rng(0)
    before = rng.uniform(0.05, 0.15, 12)
    rows = [{"arm": "a", "seed": i, "metrics": {"ece": float(b), "temp_scaled.ece": float(b - 0.02 - 0.001 * i)}}
            for i, b in enumerate(before)]
    rows.append({"arm": "a", "seed": 99, "metrics": {"ece": 0.1, "temp_scaled.ece": None}})  # not paired: left out
    eff = temperature_effect(rows)
    assert eff["n"] == 12 and eff["n_lower"] == 12 and eff["wilcoxon_p"] < 0.001
    assert eff["change"]["mean"] == pytest.approx(-0.02 - 0.001 * np.mean(range(12)))
    assert eff["change"]["ci_low"] < eff["change"]["mean"] < eff["change"]["ci_high"] < 0
    same = [{"arm": "a", "seed": i, "metrics": {"ece": 0.1, "temp_scaled.ece": 0.1}} for i in range(3)]
    assert temperature_effect(same)["wilcoxon_p"] == 1.0 and temperature_effect(same)["n_lower"] == 0
    assert summarise(rows)["a"]["ece_change_after_T"]["n"] == 12


def test_a_group_where_every_case_agrees_gets_a_wilson_interval_not_a_zero_width_one():
    y = np.array([1] * 40 + [0] * 40)
    p = np.array([0.9] * 40 + [0.8] * 10 + [0.1] * 30)  # all positives caught; 30 of 40 normals cleared
    groups, _ = group_metrics(y, p, 0.5, {"g": np.array(["a"] * 40 + ["b"] * 40)}, n_resamples=300)
    a, b = groups["g"]["a"], groups["g"]["b"]
    assert a["sensitivity"] == 1.0 and a["sensitivity_ci_high"] == pytest.approx(1.0)
    # Wilson for 40/40 at 95%: 1 / (1 + z^2/n) as the lower end
    z2 = 1.959963984540054 ** 2
    assert a["sensitivity_ci_low"] == pytest.approx(1 / (1 + z2 / 40), rel=1e-6)
    assert a["sensitivity_ci_method"].startswith("Wilson")
    assert b["specificity"] == 0.75 and b["specificity_ci_method"].startswith("Wilson")  # one interval throughout
    assert b["specificity_ci_low"] < 0.75 < b["specificity_ci_high"]


def test_subgroup_proportion_intervals_are_monotone_in_the_count():
    """k of n detected: the lower bound rises with k at fixed n (a case bootstrap gave 241/242 a
    lower bound of about 0.988, above Wilson's 0.984 for 242/242)."""
    n = 242
    lows, highs = [], []
    for k in range(n - 12, n + 1):
        y = np.ones(n, int)
        p = np.r_[np.full(k, 0.9), np.full(n - k, 0.1)]
        g, _ = group_metrics(np.r_[y, [0, 0]], np.r_[p, [0.1, 0.2]], 0.5, {"g": np.array(["x"] * n + ["y", "y"])},
                             n_resamples=200)
        rec = g["g"]["x"]
        assert rec["sensitivity"] == pytest.approx(k / n) and rec["sensitivity_ci_method"].startswith("Wilson")
        lows.append(rec["sensitivity_ci_low"])
        highs.append(rec["sensitivity_ci_high"])
    assert all(a < b for a, b in zip(lows, lows[1:])) and all(a <= b for a, b in zip(highs, highs[1:]))
    assert lows[-2] < lows[-1] == pytest.approx(0.984, abs=1e-3)  # 241/242 below 242/242
