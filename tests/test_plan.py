"""`medtl plan`: power of medtl's own conclusion rule from pilot variance components."""
from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats
from typer.testing import CliRunner

from medtl.stats.plan import power_difference, power_equivalence, se_at, seeds_needed


def test_power_of_the_t_test_matches_simulation():
    rng = np.random.default_rng(0)
    m, sd, delta = 8, 0.01, 0.01
    se, df = se_at(m, sd ** 2, 0.0, 10**6)
    assert df == pytest.approx(m - 1) and se == pytest.approx(sd / np.sqrt(m))
    x = rng.normal(delta, sd, (4000, m))
    sim = np.mean(stats.ttest_1samp(x, 0, axis=1).pvalue < 0.05)
    assert power_difference(delta, se, df, 0.05) == pytest.approx(sim, abs=0.025)


def test_power_of_tost_matches_simulation():
    rng = np.random.default_rng(1)
    m, sd, margin, theta = 10, 0.01, 0.012, 0.002
    se, df = se_at(m, sd ** 2, 0.0, 10**6)
    x = rng.normal(theta, sd, (4000, m))
    mean, s = x.mean(1), x.std(1, ddof=1) / np.sqrt(m)
    tc = stats.t.ppf(0.95, m - 1)
    sim = np.mean(((mean + margin) / s > tc) & ((mean - margin) / s < -tc))
    assert power_equivalence(margin, theta, se, df, 0.05) == pytest.approx(sim, abs=0.03)


def test_seeds_needed_is_the_first_count_reaching_the_target():
    r = seeds_needed(0.01 ** 2, 0.0, 10**6, goal="difference", effect=0.008, power=0.8)
    m = r["seeds_needed"]
    for mm, want in ((m, True), (m - 1, False)):
        se, df = se_at(mm, 0.01 ** 2, 0.0, 10**6)
        assert (power_difference(0.008, se, df, 0.05) >= 0.8) is want
    # a Holm family of 3 plans at alpha/3: more seeds
    assert seeds_needed(0.01 ** 2, 0.0, 10**6, goal="difference", effect=0.008, k=3)["seeds_needed"] > m


def test_a_test_set_too_small_for_the_effect_says_so():
    """The test set's own error does not shrink with seeds: past it, no seed count suffices."""
    r = seeds_needed(0.005 ** 2, 0.004 ** 2, 600, goal="difference", effect=0.005, max_seeds=200)
    assert r["seeds_needed"] is None and not r["reachable"]
    assert "more seeds do not shrink" in r["why"] and "larger (" in r["why"]


def _pred_run(d, seed, quality, z, y):
    """A run whose errors partly follow the case difficulty ``z`` (shared by its arm's seeds: the
    arms weigh the cases differently, so their difference varies with the test set)."""
    rng = np.random.default_rng(seed * 7 + int(quality * 100))
    p = 1 / (1 + np.exp(-(quality * (2 * y - 1) + z + 0.8 * rng.standard_normal(len(y)))))
    from sklearn.metrics import roc_auc_score

    d.mkdir(parents=True)
    m = {"run": {"seed": seed}, "task": "binary", "classes": ["a", "b"], "threshold": {"value": 0.5},
         "test": {"auc": float(roc_auc_score(y, p)), "n": len(y)}, "data": {"leaks": {"status": "clean"}}}
    (d / "metrics.json").write_text(json.dumps(m))
    (d / "config.yaml").write_text(f"seed: {seed}\n")
    np.savez(d / "predictions_test.npz", y=y, p=p, ids=np.array([f"c{i}" for i in range(len(y))]))


def test_plan_cli_on_pilot_runs(tmp_path):
    from medtl.cli import app

    y = np.random.default_rng(0).integers(0, 2, 400)
    z = np.random.default_rng(1).standard_normal(400)
    for k in range(5):
        _pred_run(tmp_path / "pilot" / "a" / f"seed-{k}", k, 1.3, z, y)
        _pred_run(tmp_path / "pilot" / "b" / f"seed-{k}", k, 1.2, 0.3 * z, y)
    out = tmp_path / "plan"
    r = CliRunner().invoke(app, ["plan", str(tmp_path / "pilot"), "--difference", "0.01", "--margin", "0.02",
                                 "--seeds", "10", "--out", str(out)])
    assert r.exit_code == 0, r.output
    res = json.loads((out / "plan.json").read_text())
    row = res["pairs"][0]
    assert row["cases_covered"] and row["case_var"] > 0 and row["seed_var"] > 0 and len(row["pilot_seeds"]) == 5
    assert set(row["plans"]) == {"difference", "equivalence"}
    assert "a vs b on test.auc: to detect a difference of 0.01" in r.output
    assert "As configured (10 seeds per arm)" in r.output
    # fewer than 3 pilot seeds: a one-line error
    for k in range(2):
        _pred_run(tmp_path / "tiny" / "a" / f"seed-{k}", k, 1.3, z, y)
        _pred_run(tmp_path / "tiny" / "b" / f"seed-{k}", k, 1.2, z, y)
    r = CliRunner().invoke(app, ["plan", str(tmp_path / "tiny"), "--difference", "0.01"])
    assert r.exit_code != 0 and "at least 3 paired seeds" in str(r.exception)
