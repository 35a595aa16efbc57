"""Case CIs of one run's metrics (medtl.stats.case_ci) and how they are printed."""
from __future__ import annotations

import re

import numpy as np
import pytest

from medtl.stats import binary_metrics
from medtl.stats.case_ci import (binary_cis, case_cis, ci_decimals, delong_ci, format_estimate, proportion_ci,
                                 summary_line)
from medtl.record import number_keys
from medtl.stats.delong import delong_test
from medtl.stats.subgroups import wilson_ci

# 13 positives among 31 cases ranked so that the AUC is 160/234 = 0.6837606837606838
POS_RANKS = [1, 2, 3, 4, 21, 24, 25, 26, 27, 28, 29, 30, 31]


def _31():
    y = np.zeros(31, int)
    y[np.array(POS_RANKS) - 1] = 1
    return y, np.arange(1, 32) / 32.0


def test_decimals_follow_the_half_width():
    assert ci_decimals(0.49, 0.88) == 2        # half-width 0.195
    assert ci_decimals(0.90, 0.94) == 3        # 0.02
    assert ci_decimals(0.950, 0.958) == 4      # 0.004
    assert ci_decimals(0.9500, 0.9501) == 4    # clipped at 4
    assert ci_decimals(0.0, 1.0) == 2          # clipped at 2
    assert ci_decimals(1.0, 1.0) == 4          # zero width


def test_a_31_image_test_set_prints_two_decimals():
    y, s = _31()
    m = binary_metrics(y, s, 0.5)
    assert m["auc"] == pytest.approx(0.6837606837606838)
    line = format_estimate("auc", m["auc"], delong_ci(y, s))
    assert re.fullmatch(r"auc 0\.68 \(95% CI 0\.\d\d-0\.\d\d, DeLong, n=31\)", line), line
    assert format_estimate("auc", None, None) == "auc n/a"
    assert format_estimate("auc", 0.5, {"low": None, "high": None, "note": "one class only"}) == \
        "auc 0.5000 (one class only)"


def test_delong_ci_is_delongs_variance_and_the_proportions_are_wilson():
    y, s = _31()
    ci = delong_ci(y, s)
    se = delong_test(y, s, s[::-1])["var_a"] ** 0.5
    auc = 160 / 234
    assert ci["low"] == pytest.approx(auc - 1.959963984540054 * se) and ci["high"] == pytest.approx(auc + 1.959963984540054 * se)
    cis = binary_cis(y, s, 0.5)
    m = binary_metrics(y, s, 0.5)
    assert (cis["sensitivity"]["low"], cis["sensitivity"]["high"]) == pytest.approx(wilson_ci(m["tp"], 13))
    assert (cis["specificity"]["low"], cis["specificity"]["high"]) == pytest.approx(wilson_ci(m["tn"], 18))
    assert cis["acc"]["n"] == 31 and cis["sensitivity"]["n"] == 13 and cis["specificity"]["n"] == 18
    assert all(c["low"] <= m[k] <= c["high"] for k, c in cis.items())
    # undefined: one class only / no cases
    assert np.isnan(delong_ci([1, 1, 1], [0.1, 0.2, 0.3])["low"])
    assert proportion_ci(0, 0)["note"] == "no cases"
    perfect = delong_ci([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9])
    assert perfect["low"] == perfect["high"] == 1.0


def test_multilabel_and_multiclass_cis():
    rng = np.random.default_rng(0)
    Y = rng.integers(0, 2, (120, 3))
    P = np.clip(0.3 * Y + rng.random((120, 3)), 0, 1)
    ci = case_cis("multilabel", Y, P, classes=["a", "b", "c"])
    assert set(ci["auc_per_class"]) == {"a", "b", "c"}
    assert all(c["method"] == "DeLong" for c in ci["auc_per_class"].values())
    assert "bootstrap" in ci["auc"]["method"] and "seed 0" in ci["auc"]["method"] and ci["auc_macro"] == ci["auc"]
    assert ci == case_cis("multilabel", Y, P, classes=["a", "b", "c"])  # seeded
    macro = np.mean([binary_metrics(Y[:, j], P[:, j])["auc"] for j in range(3)])
    assert ci["auc"]["low"] < macro < ci["auc"]["high"]
    y = rng.integers(0, 3, 90)
    probs = rng.dirichlet([1, 1, 1], 90)
    mc = case_cis("multiclass", y, probs, classes=["x", "y", "z"])
    assert "one-vs-rest" in mc["auc"]["method"] and mc["acc"]["method"] == "Wilson"


def test_ci_leaves_are_not_comparable_metrics_and_the_summary_line():
    y, s = _31()
    m = binary_metrics(y, s, 0.5) | {"ci": binary_cis(y, s, 0.5)}
    names = number_keys({"test": m})
    assert "test.auc" in names and not any(".ci." in n or n.endswith(".ci") for n in names)
    line = summary_line(m)
    assert line.startswith("auc 0.68 (95% CI") and "; acc " in line and "Wilson, n=13)" in line
