"""Clinical operating points (sensitivity at fixed specificity, fixed on val and read on test) and
decision-curve net benefit: the functions, their CIs over seeds and test cases, compare, finetune."""
from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import roc_curve

from medtl.stats import operating as op
from medtl.stats.hierarchical import RunPredictions, mean_ci


def _scores(n, seed, shift=0.3):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    return y, np.clip(shift * y + rng.normal(0.35, 0.2, n), 0, 1)


def test_operating_points_match_the_roc_curve_and_are_fixed_on_val():
    y, p = _scores(3000, 0)
    fpr, tpr, _ = roc_curve(y, p)
    for t in (0.9, 0.95):
        sens, spec = op.rates(y, p, op.threshold_for_specificity(y, p, t))
        assert spec >= t and sens == pytest.approx(tpr[fpr <= 1 - t].max())     # the best rule with spec >= t
        sens, spec = op.rates(y, p, op.threshold_for_sensitivity(y, p, t))
        assert sens >= t and spec == pytest.approx(1 - fpr[tpr >= t].min())
    vy, vp = _scores(300, 1)
    res = op.operating_points(vy, vp, y, p)
    t95 = op.threshold_for_specificity(vy, vp, 0.95)
    assert res["operating_points"]["spec95"]["threshold"] == t95
    assert res["sens_at_spec95"] == op.rates(y, p, t95)[0]                       # val's threshold, read on test
    assert res["operating_points"]["spec95"]["specificity"] == op.rates(y, p, t95)[1]
    assert res["sens_at_spec95_direct"] == pytest.approx(tpr[fpr <= 0.05].max())  # the test curve itself
    assert res["sens_at_spec95"] != res["sens_at_spec95_direct"]
    assert set(op.op_names()) <= set(res)


def test_net_benefit_is_vickers_and_elkin():
    y = np.array([1, 1, 1, 0, 0, 0, 0, 0])
    p = np.array([0.9, 0.6, 0.2, 0.7, 0.3, 0.1, 0.1, 0.05])
    # at pt = 0.25: treated p >= 0.25 -> TP 2 (0.9, 0.6), FP 2 (0.7, 0.3); n = 8
    assert op.net_benefit(y, p, 0.25) == pytest.approx(2 / 8 - 2 / 8 * 0.25 / 0.75)
    assert op.treat_all(y, 0.25) == pytest.approx(3 / 8 - 5 / 8 * 0.25 / 0.75)
    assert op.net_benefit(y, np.ones(8), 0.25) == pytest.approx(op.treat_all(y, 0.25))  # treat all = all treated
    assert op.net_benefit(y, np.zeros(8), 0.25) == 0.0                                # treat none
    dc = op.operating_points(y, p, y, p)["decision_curve"]
    assert len(dc["pt"]) == len(dc["model"]) == len(dc["treat_all"]) and dc["treat_none"] == 0.0


def test_seed_case_intervals_of_the_operating_points():
    runs, vals = [], []
    for s in range(5):
        vy, vp = _scores(200, 10 + s)
        y, p = _scores(400, 99)
        p = np.clip(p + np.random.default_rng(s).normal(0, 0.05, p.size), 0, 1)  # seeds differ, cases shared
        runs.append(RunPredictions(y=y, p=p, op_thresholds=op.op_thresholds(vy, vp)))
        vals.append((vy, vp))
    for name in ("sens_at_spec95", "spec_at_sens90", "net_benefit_10", "net_benefit_37"):
        res = mean_ci(runs, name)
        per_run = [op.net_benefit(r.y, r.p, 0.37) if name == "net_benefit_37" else
                   op.operating_points(vy, vp, r.y, r.p)[name] for r, (vy, vp) in zip(runs, vals)]
        assert res["estimate"] == pytest.approx(np.mean(per_run))
        assert res["ci_low"] < res["estimate"] < res["ci_high"]


def _fake_run(d, seed, shift):
    d.mkdir(parents=True)
    vy, vp = _scores(200, 100 + seed, shift)
    y, p = _scores(300, 7, shift)
    p = np.clip(p + np.random.default_rng(seed).normal(0, 0.03, p.size), 0, 1)
    np.savez(d / "predictions_val.npz", y=vy, p=vp)
    np.savez(d / "predictions_test.npz", y=y, p=p, ids=np.arange(300).astype(str))
    m = {"run": {"name": "x", "seed": seed}, "task": "binary", "classes": ["n", "p"],
         "threshold": {"rule": "youden", "value": 0.5}, "val": {"auc": 0.8}, "test": {"auc": 0.8, "n": 300},
         "history": []}
    (d / "metrics.json").write_text(json.dumps(m))
    (d / "config.yaml").write_text(f"seed: {seed}\n")
    return op.operating_points(vy, vp, y, p)


def test_compare_takes_operating_points_with_both_intervals(tmp_path):
    """Runs whose metrics.json predates the operating points get them from their saved val and
    test predictions; compare gives both CIs and a decision curve."""
    from medtl.stats.comparison import compare_runs

    want = {arm: [_fake_run(tmp_path / "sw" / arm / f"seed-{s}", s, shift)["sens_at_spec95"] for s in range(4)]
            for arm, shift in (("strong", 0.4), ("weak", 0.2))}
    res = compare_runs([tmp_path / "sw"], ["test.sens_at_spec95", "test.net_benefit_10"], n_resamples=200)
    st = res["by_metric"]["test.sens_at_spec95"]["arms"]
    assert st["strong"]["values"] == pytest.approx(want["strong"])
    assert np.isfinite(st["strong"]["ci_seeds_cases_low"]) and np.isfinite(st["strong"]["ci_low"])
    pair = next(p for p in res["pairs"] if p["metric"] == "test.sens_at_spec95")
    assert pair["inference"] == "seeds+cases" and pair["diff"] > 0
    dc = res["decision_curves"]
    assert set(dc["arms"]) == {"strong", "weak"} and len(dc["arms"]["strong"]["mean"]) == len(dc["pt"])
    i = dc["pt"].index(0.1)
    assert dc["arms"]["strong"]["mean"][i] == pytest.approx(np.mean(
        res["by_metric"]["test.net_benefit_10"]["arms"]["strong"]["values"]))
    from medtl.reports import write_compare

    paths = write_compare(res, tmp_path / "page")
    assert (tmp_path / "page" / "compare_decision_curve.png").is_file()
    assert "Decision curve (net benefit)" in paths["md"].read_text()


def test_finetune_records_operating_points(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDTL_CACHE", str(tmp_path / "cache"))
    from medtl.config import build_config
    from medtl.runs import read_predictions
    from medtl.train import finetune

    cfg = build_config({}, ["data.image_size=24", "data.synthetic_n={train: 48, val: 32, test: 40}",
                            "train.epochs=1", "train.batch_size=16", "train.num_threads=1"])
    rec = finetune(cfg, tmp_path / "run", progress=False)
    t = rec.test.as_dict()
    v, te = read_predictions(tmp_path / "run" / "predictions_val.npz"), read_predictions(tmp_path / "run")
    want = op.operating_points(v["y"], v["p"], te["y"], te["p"])
    for k in op.op_names():
        assert t[k] == pytest.approx(want[k], nan_ok=True), k
    assert set(t["operating_points"]) == {"spec90", "spec95", "sens90", "sens95"}
    assert len(t["decision_curve"]["model"]) == len(op.CURVE)


def test_multilabel_operating_points_per_label_and_macro():
    rng = np.random.default_rng(3)
    vy, ty = rng.integers(0, 2, (200, 3)), rng.integers(0, 2, (300, 3))
    vp = np.clip(0.3 * vy + rng.normal(0.35, 0.2, vy.shape), 0, 1)
    tp = np.clip(0.3 * ty + rng.normal(0.35, 0.2, ty.shape), 0, 1)
    res = op.operating_points_multilabel(vy, vp, ty, tp, ["a", "b", "c"])
    for k, name in enumerate("abc"):
        assert res["operating_points_per_class"][name]["sens_at_spec95"] == \
            op.operating_points(vy[:, k], vp[:, k], ty[:, k], tp[:, k])["sens_at_spec95"]
    assert res["sens_at_spec95"] == pytest.approx(np.mean([res["operating_points_per_class"][n]["sens_at_spec95"]
                                                           for n in "abc"]))


def test_the_achieved_rate_of_a_val_fixed_rule_is_reported_beside_it():
    """A rule fixed on val for 95% specificity can miss it on test; the test specificity it gives is
    its own metric, with its seeds + cases interval."""
    vy, vp = _scores(300, 1)
    y, p = _scores(400, 2, shift=0.15)                                           # test harder than val
    res = op.operating_points(vy, vp, y, p)
    t = op.threshold_for_specificity(vy, vp, 0.95)
    assert res["achieved_spec_spec95"] == op.rates(y, p, t)[1] == res["operating_points"]["spec95"]["specificity"]
    assert res["achieved_sens_sens90"] == res["operating_points"]["sens90"]["sensitivity"]
    run = RunPredictions(y=y, p=p, op_thresholds=op.op_thresholds(vy, vp))
    assert mean_ci([run, run], "achieved_spec_spec95")["estimate"] == pytest.approx(res["achieved_spec_spec95"])


def test_a_multiclass_run_is_read_one_class_against_the_rest():
    rng = np.random.default_rng(4)
    vy, ty = rng.integers(0, 3, 240), rng.integers(0, 3, 300)
    vp, tp = (rng.dirichlet(np.ones(3), len(y)) + 0.6 * np.eye(3)[y] for y in (vy, ty))
    vp, tp = vp / vp.sum(1, keepdims=True), tp / tp.sum(1, keepdims=True)
    res = op.operating_points_one_vs_rest(vy, vp, ty, tp, ["normal", "bacteria", "virus"])
    for k, name in enumerate(["normal", "bacteria", "virus"]):
        want = op.operating_points((vy == k).astype(int), vp[:, k], (ty == k).astype(int), tp[:, k])
        got = res["operating_points_per_class"][name]
        assert got["sens_at_spec95"] == want["sens_at_spec95"] and got["net_benefit_10"] == want["net_benefit_10"]
    assert res["spec_at_sens90"] == pytest.approx(np.mean([res["operating_points_per_class"][n]["spec_at_sens90"]
                                                           for n in ("normal", "bacteria", "virus")]))
