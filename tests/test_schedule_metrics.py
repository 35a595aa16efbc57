import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from medtl.io import json_safe
from medtl.stats import binary_metrics, choose_threshold, multilabel_metrics
from medtl.train.schedule import lr_factor, scaled_lr


def test_warmup_is_linear_then_cosine_reaches_min():
    total, warm = 100, 10
    f = [lr_factor(s, total, warm, "cosine", warmup_start_factor=0.1) for s in range(total + 1)]
    assert f[0] == pytest.approx(0.1)
    assert f[5] == pytest.approx(0.1 + 0.9 * 0.5)
    assert f[10] == pytest.approx(1.0)
    assert all(a >= b - 1e-12 for a, b in zip(f[10:], f[11:]))  # monotone decay after warmup
    assert f[55] == pytest.approx(0.5, abs=1e-9)  # half-way through the cosine
    assert f[100] == pytest.approx(0.0, abs=1e-12)
    assert lr_factor(100, 100, 10, "cosine", min_factor=0.05) == pytest.approx(0.05)


def test_step_schedule_and_constant():
    ms = [50, 75]
    assert lr_factor(49, 100, 0, "step", ms, 0.1) == 1.0
    assert lr_factor(50, 100, 0, "step", ms, 0.1) == pytest.approx(0.1)
    assert lr_factor(80, 100, 0, "step", ms, 0.1) == pytest.approx(0.01)
    assert lr_factor(3, 100, 0, "constant") == 1.0
    with pytest.raises(ValueError):
        lr_factor(20, 100, 0, "bogus")


def test_linear_scaling_is_opt_in():
    assert scaled_lr(0.1, 64, None) == 0.1
    assert scaled_lr(0.1, 512, 256) == pytest.approx(0.2)


def test_binary_metrics_by_hand():
    y = np.array([0, 0, 1, 1, 1, 0])
    p = np.array([0.1, 0.6, 0.7, 0.4, 0.9, 0.2])
    m = binary_metrics(y, p, threshold=0.5)
    assert m["tp"] == 2 and m["fn"] == 1 and m["tn"] == 2 and m["fp"] == 1
    assert m["sensitivity"] == pytest.approx(2 / 3) and m["specificity"] == pytest.approx(2 / 3)
    assert m["acc"] == pytest.approx(4 / 6)
    assert m["auc"] == pytest.approx(roc_auc_score(y, p))
    assert m["n"] == 6


def test_youden_threshold_maximises_sens_plus_spec():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    p = np.clip(0.3 * y + rng.normal(0.35, 0.2, 400), 0, 1)
    t = choose_threshold(y, p, "youden")
    best = binary_metrics(y, p, t)
    j_best = best["sensitivity"] + best["specificity"]
    for other in np.linspace(0.05, 0.95, 37):
        m = binary_metrics(y, p, other)
        assert m["sensitivity"] + m["specificity"] <= j_best + 1e-9
    assert choose_threshold(y, p, "0.5") == 0.5


def test_multilabel_and_nan_handling():
    y = np.array([[1, 0], [0, 0], [1, 0], [0, 0]])
    prob = np.array([[0.9, 0.1], [0.2, 0.3], [0.8, 0.2], [0.1, 0.9]])
    m = multilabel_metrics(y, prob, ["a", "b"])
    assert m["auc_per_class"]["a"] == 1.0
    assert math.isnan(m["auc_per_class"]["b"])  # one class only: AUC undefined, left out
    assert m["auc_macro"] == 1.0
    assert json_safe({"x": [float("nan"), 1.0]}) == {"x": [None, 1.0]}


def test_keep_freed_memory_is_idempotent_and_reports_support():
    import sys

    from medtl._malloc import keep_freed_memory

    first = keep_freed_memory()
    assert keep_freed_memory() == first
    if sys.platform.startswith("linux"):
        import platform

        if platform.libc_ver()[0] == "glibc":
            assert first is True  # mallopt accepted both settings
