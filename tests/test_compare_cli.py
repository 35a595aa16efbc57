"""End-to-end `medtl compare` on fake sweep folders (CliRunner on medtl's Typer app)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import typer
from scipy import stats
from typer.testing import CliRunner

from medtl.errors import ConfigError, DataError, MedtlError
from medtl.stats.delong import delong_test


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    from medtl.cli import app as medtl_app

    return medtl_app


def _strict_json(path: Path):
    def bad(c):
        raise AssertionError(f"{path} holds {c}")

    return json.loads(path.read_text(), parse_constant=bad)


def _write_run(d: Path, seed: int, auc, acc, name="arm") -> None:
    d.mkdir(parents=True, exist_ok=True)
    m = {
        "run": {"name": name, "seed": seed, "dataset": "fake", "backbone": "resnet18", "weights": "x"},
        "task": "binary",
        "classes": ["normal", "pneumonia"],
        "threshold": {"rule": "youden", "value": 0.5},
        "val": {"auc": auc, "acc": acc, "sensitivity": 0.8, "specificity": 0.7, "n": 50},
        "test": {"auc": auc, "acc": acc, "sensitivity": 0.8, "specificity": 0.7, "n": 100},
        "history": [{"epoch": 1, "loss": 0.5}],
    }
    (d / "metrics.json").write_text(json.dumps(m))
    (d / "config.yaml").write_text(f"seed: {seed}\n")


def _values(mu, n=10, seed=0):
    return np.random.default_rng(seed).normal(mu, 0.01, n)


@pytest.fixture()
def sweep(tmp_path):
    root = tmp_path / "sweep"
    va, vb = _values(0.86, seed=1), _values(0.84, seed=2)
    acc = _values(0.8, seed=3)
    for k in range(10):
        _write_run(root / "resnet50.sin_in" / f"seed-{k}", k, float(va[k]), float(acc[k]))
        _write_run(root / "resnet50.tv_in1k" / f"seed-{k}", k, float(vb[k]), None if k == 4 else float(acc[k] - 0.01))
    bad = root / "resnet50.tv_in1k" / "seed-10"
    bad.mkdir()
    (bad / "failed.json").write_text(json.dumps({"error": "loss became NaN"}))
    return root, va, vb, acc


def _invoke(app, args):
    return CliRunner().invoke(app, ["compare", *map(str, args)])


def test_sweep_paired_end_to_end(app, sweep, tmp_path):
    root, va, vb, acc = sweep
    out = tmp_path / "out"
    r = _invoke(app, [root, "--metric", "test.auc", "--metric", "test.acc", "--out", out, "--bootstrap", 2000])
    assert r.exit_code == 0, r.output + repr(r.exception)
    assert "| resnet50.sin_in | 10 | 0 |" in r.output and "| resnet50.tv_in1k | 10 | 1 |" in r.output
    res = _strict_json(out / "compare.json")
    for key in ("arms", "pairs", "metrics", "alpha", "ci_method", "bootstrap", "seed", "by_metric"):
        assert key in res
    assert res["metrics"] == ["test.auc", "test.acc"] and res["ci_method"] == "t" and res["bootstrap"] == 2000
    a, b = res["arms"]["resnet50.sin_in"], res["arms"]["resnet50.tv_in1k"]
    assert a["n"] == 10 and b["n"] == 10 and b["n_failed"] == 1 and res["n_failed"] == 1
    assert a["mean"] == pytest.approx(np.mean(va), abs=1e-15)
    assert a["sd"] == pytest.approx(np.std(va, ddof=1), abs=1e-15)
    assert a["ci_low"] < a["mean"] < a["ci_high"] and a["ci_method"] == "t"
    assert res["by_metric"]["test.auc"]["arms"] == res["arms"]
    acc_b = res["by_metric"]["test.acc"]["arms"]["resnet50.tv_in1k"]
    assert acc_b["n"] == 9 and acc_b["n_missing"] == 1  # the null value is dropped
    pairs = {p["metric"]: p for p in res["pairs"]}
    pa = pairs["test.auc"]
    assert pa["paired"] and pa["test"] == "ttest_rel" and pa["a"] == "resnet50.sin_in"
    assert pa["p"] == pytest.approx(stats.ttest_rel(va, vb).pvalue, abs=1e-12)
    assert pa["secondary_p"] == pytest.approx(stats.wilcoxon(va, vb).pvalue, abs=1e-12)
    assert pa["family"] == "exploratory" and pa["conclusion"] in ("differs", "inconclusive")
    assert pa["diff"] == pytest.approx(np.mean(va - vb), abs=1e-15)
    lo, hi = sorted([pa["p"], pairs["test.acc"]["p"]])  # Holm over 2 tests: 2*lo, then max(2*lo, hi)
    assert pa["p_holm"] == pytest.approx(min(1.0, 2 * lo) if pa["p"] == lo else min(1.0, max(2 * lo, hi)), abs=1e-12)
    assert pa["sentence"].startswith("resnet50.sin_in vs resnet50.tv_in1k on test.auc: mean difference +")
    # seed 4 has no acc in one arm: paired on the 9 shared seeds, seed 4 dropped and named
    pacc = pairs["test.acc"]
    assert pacc["paired"] and pacc["n_pairs"] == 9 and pacc["seeds_dropped"] == {"a": [4], "b": []}
    keep = [k for k in range(10) if k != 4]
    assert pacc["p"] == pytest.approx(stats.ttest_rel(acc[keep], acc[keep] - 0.01).pvalue, abs=1e-12)
    assert "seeds dropped: 4" in pacc["sentence"]
    md = (out / "compare.md").read_text()
    html = (out / "compare.html").read_text()
    assert pa["sentence"] in md and "Holm" in md and "t interval" in md
    assert '<img src="data:image/png;base64,' in html and "resnet50.tv_in1k" in html
    assert (out / "compare_test.auc.png").stat().st_size > 1000
    assert pa["sentence"] in r.output
    assert not list(out.glob(".*.tmp"))


def test_unpaired_arm_folders_and_named_arm(app, tmp_path):
    va, vb = _values(0.9, 8, seed=5), _values(0.85, 8, seed=6)
    for k in range(8):
        _write_run(tmp_path / "armA" / f"seed-{k}", k, float(va[k]), 0.8)
        if k != 3:  # armB: other seeds altogether, so no pairing is possible
            _write_run(tmp_path / "armB" / f"seed-{k + 100}", k + 100, float(vb[k]), 0.8)
    _write_run(tmp_path / "single" / "seed-7", 7, 0.5, 0.5)
    out = tmp_path / "out"
    r = _invoke(app, [tmp_path / "armA", "--arm", f"other={tmp_path / 'armB'}", tmp_path / "single" / "seed-7",
                      "--out", out, "--bootstrap", 500, "--ci", "percentile", "--seed", 3])
    assert r.exit_code == 0, r.output + repr(r.exception)
    res = _strict_json(out / "compare.json")
    assert list(res["arms"]) == ["armA", "single", "other"]
    assert res["ci_method"] == "percentile" and res["seed"] == 3
    p = next(p for p in res["pairs"] if p["a"] == "armA" and p["b"] == "other")
    vb7 = np.delete(vb, 3)
    assert not p["paired"] and p["test"] == "welch_t"
    assert p["p"] == pytest.approx(stats.ttest_ind(va, vb7, equal_var=False).pvalue, abs=1e-12)
    assert p["secondary_p"] == pytest.approx(stats.mannwhitneyu(va, vb7, alternative="two-sided").pvalue, abs=1e-12)
    assert p["diff"] == pytest.approx(va.mean() - vb7.mean(), abs=1e-15)
    assert "Welch t p" in p["sentence"] and "differs at α=0.05: armA higher" in p["sentence"]
    single = res["arms"]["single"]
    assert single["n"] == 1 and single["ci_low"] is None and single["note"]
    ps = next(p for p in res["pairs"] if p["b"] == "single")
    assert ps["p"] is None and ps["p_holm"] is None and "not tested" in ps["sentence"]


def test_delong_option(app, sweep, tmp_path):
    root, *_ = sweep
    rng = np.random.default_rng(0)
    y = (rng.random(120) < 0.4).astype(int)
    ids = np.array([f"img{i:03d}" for i in range(120)])
    pa, pb = 1 / (1 + np.exp(-(2 * y + rng.normal(size=120)))), rng.random(120)
    run_a, run_b = root / "resnet50.sin_in" / "seed-0", root / "resnet50.tv_in1k" / "seed-0"
    out = tmp_path / "out"
    r = _invoke(app, [root, "--out", out, "--bootstrap", 200, "--delong", run_a, run_b])
    assert r.exit_code != 0 and isinstance(r.exception, DataError)
    assert "predictions_test.npz" in str(r.exception) and "\n" not in str(r.exception)
    np.savez(run_a / "predictions_test.npz", y=y, p=pa, ids=ids)
    np.savez(run_b / "predictions_test.npz", y=y, p=pb, ids=ids)
    r = _invoke(app, [root, "--out", out, "--bootstrap", 200, "--delong", run_a, run_b])
    assert r.exit_code == 0, r.output + repr(r.exception)
    d = _strict_json(out / "compare.json")["delong"]
    ref = delong_test(y, pa, pb)
    assert d["p"] == pytest.approx(ref["p"], abs=1e-15) and d["auc_a"] == pytest.approx(ref["auc_a"])
    assert "DeLong" in (out / "compare.md").read_text()
    np.savez(run_b / "predictions_test.npz", y=y, p=pb, ids=ids[::-1])
    r = _invoke(app, [root, "--out", out, "--bootstrap", 200, "--delong", run_a, run_b])
    assert isinstance(r.exception, DataError) and "ids" in str(r.exception)


@pytest.mark.parametrize("case", ["empty", "missing", "metric", "not_number", "alpha", "ci", "arm_spec"])
def test_bad_inputs_one_line_errors(app, sweep, tmp_path, case):
    root, *_ = sweep
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "out"
    args, exc_type, needle = {
        "empty": ([empty, "--out", out], DataError, "no runs found"),
        "missing": ([tmp_path / "nope", "--out", out], DataError, "no such folder"),
        "metric": ([root, "--metric", "test.aucc", "--out", out], ConfigError, "test.auc, test.acc"),
        "not_number": ([root, "--metric", "test", "--out", out], ConfigError, "not a number"),
        "alpha": ([root, "--alpha", "1.5", "--out", out], ConfigError, "--alpha"),
        "ci": ([root, "--ci", "normal", "--out", out], ConfigError, "--ci"),
        "arm_spec": (["--arm", "justaname", "--out", out], ConfigError, "NAME=DIR"),
    }[case]
    r = _invoke(app, args)
    assert r.exit_code != 0
    assert isinstance(r.exception, exc_type) and isinstance(r.exception, MedtlError)
    msg = str(r.exception)
    assert needle in msg and "\n" not in msg
    assert not (out / "compare.json").exists()


def test_failed_only_arm_reported(app, tmp_path):
    for k in range(3):
        _write_run(tmp_path / "sw" / "ok" / f"seed-{k}", k, 0.8 + k / 100, 0.7)
        d = tmp_path / "sw" / "broken" / f"seed-{k}"
        d.mkdir(parents=True)
        (d / "failed.json").write_text("{}")
    out = tmp_path / "out"
    r = _invoke(app, [tmp_path / "sw", "--out", out, "--bootstrap", 200])
    assert r.exit_code == 0, r.output + repr(r.exception)
    res = _strict_json(out / "compare.json")
    assert res["arms"]["broken"]["n"] == 0 and res["arms"]["broken"]["n_failed"] == 3
    assert res["arms"]["broken"]["mean"] is None and res["n_failed"] == 3
    assert any("3 failed run(s)" in n for n in res["notes"])
    assert math.isclose(res["arms"]["ok"]["mean"], 0.81)


def test_compare_page_renders_in_chromium(app, sweep, tmp_path):
    from _browser import render_page

    root, *_ = sweep
    out = tmp_path / "out"
    r = _invoke(app, [root, "--metric", "test.auc", "--metric", "test.acc", "--out", out, "--bootstrap", 500])
    assert r.exit_code == 0, r.output
    dom = render_page(out / "compare.html", tmp_path, min_images=2)  # one plot per metric
    assert "Pairwise comparisons" in dom and "resnet50.sin_in" in dom and "Holm" in dom


def _write_pred_run(d: Path, seed: int, quality: float, leak_status: str | None = "clean") -> float:
    """A run folder with test predictions (600 cases, same test set for every run); returns its AUC."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(seed + int(quality * 1000))
    y = np.random.default_rng(0).integers(0, 2, 600)  # one test set
    z = np.random.default_rng(1).standard_normal(600)  # each case's difficulty, the same for every run
    p = 1 / (1 + np.exp(-(quality * (2 * y - 1) + z + 0.7 * rng.standard_normal(600))))
    auc = float(roc_auc_score(y, p))
    _write_run(d, seed, auc, float(np.mean((p >= 0.5) == y)))
    m = json.loads((d / "metrics.json").read_text())
    if leak_status:
        m["data"] = {"leaks": {"status": leak_status}}
    (d / "metrics.json").write_text(json.dumps(m))
    np.savez(d / "predictions_test.npz", y=y, p=p, ids=np.array([f"c{i}" for i in range(600)]))
    return auc


def test_both_sources_of_variance_and_leak_warning(app, tmp_path):
    root = tmp_path / "sw"
    for k in range(6):
        _write_pred_run(root / "good" / f"seed-{k}", k, 1.2)
        _write_pred_run(root / "leaky" / f"seed-{k}", k, 1.0, leak_status="leaky" if k < 2 else "clean")
    out = tmp_path / "out"
    r = _invoke(app, [root, "--out", out, "--bootstrap", 1000, "--anchor", 0.5])
    assert r.exit_code == 0, r.output + repr(r.exception)
    res = _strict_json(out / "compare.json")
    for arm in ("good", "leaky"):
        st = res["arms"][arm]
        seeds_w = st["ci_high"] - st["ci_low"]
        both_w = st["ci_seeds_cases_high"] - st["ci_seeds_cases_low"]
        assert st["ci_seeds_cases_low"] < st["mean"] < st["ci_seeds_cases_high"]
        assert both_w > seeds_w  # the test-set sampling error adds to the seed spread
    pair = res["pairs"][0]
    assert pair["diff_ci_seeds_cases_low"] < pair["diff"] < pair["diff_ci_seeds_cases_high"]
    assert "over seeds and test cases" in pair["sentence"]
    assert "leaky" in res["leak_warnings"] and "good" not in res["leak_warnings"]
    assert "2 of 6 runs of leaky" in res["leak_warnings"]["leaky"]
    html = (out / "compare.html").read_text()
    assert 'class="warn"' in html and "LEAKY SPLIT" in html and "95% CI over seeds + test cases" in html
    assert "WARNING: LEAKY SPLIT" in r.output
    stm = res["anchor"]["statements"]
    assert len(stm) == 2 and all("over seeds and test cases" in s and "lies above 0.5" in s for s in stm)
    assert pair["inference"] == "seeds+cases" and pair["test"] == "crossed_t" and res["scope"] == "patients"
    # about this test set only (a fixed benchmark): the seeds-only t test decides, the other interval beside it
    r = _invoke(app, [root, "--out", tmp_path / "fixed", "--scope", "test_set"])
    assert r.exit_code == 0, r.output + repr(r.exception)
    fixed = _strict_json(tmp_path / "fixed" / "compare.json")["pairs"][0]
    assert fixed["inference"] == "seeds" and fixed["test"] == "ttest_rel"
    assert fixed["diff_ci_seeds_cases_low"] == pytest.approx(pair["diff_ci_low"])
    assert "CI over seeds, on this test set," in fixed["sentence"] and "over seeds and test cases" in fixed["sentence"]


def test_margin_and_primary_give_one_of_three_words(app, sweep, tmp_path):
    root, va, vb, acc = sweep
    out = tmp_path / "out"
    r = _invoke(app, [root, "--metric", "test.auc", "--metric", "test.acc", "--out", out, "--primary", "test.auc",
                      "--margin", "test.auc=0.05", "--margin", "test.acc=0.0001"])
    assert r.exit_code == 0, r.output + repr(r.exception)
    res = _strict_json(out / "compare.json")
    by = {p["metric"]: p for p in res["pairs"]}
    assert by["test.auc"]["family"] == "primary" and by["test.acc"]["family"] == "exploratory"
    assert res["holm"]["m_primary"] == 1 and res["margin"] == {"test.auc": 0.05, "test.acc": 0.0001}
    for p in res["pairs"]:
        assert p["conclusion"] in ("differs", "equivalent", "inconclusive")
        assert any(w in p["sentence"] for w in ("— differs at", "— equivalent within", "— inconclusive"))
    assert by["test.acc"]["conclusion"] == "differs"  # a shift of exactly 0.01 over 9 seeds, sd 0: far beyond 0.0001
    assert "Holm over the 1 primary tests" in by["test.auc"]["sentence"]
    bad = _invoke(app, [root, "--out", tmp_path / "o2", "--margin", "-1"])
    assert bad.exit_code != 0 and "positive" in str(bad.exception)
    bad = _invoke(app, [root, "--out", tmp_path / "o3", "--primary", "test.nope"])
    assert bad.exit_code != 0 and "not among the compared metrics" in str(bad.exception)
