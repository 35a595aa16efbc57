"""`medtl study`: every stage into one folder, resume after a kill, one self-contained page."""
from __future__ import annotations

import json

import pytest
import yaml

from _browser import render_page

from medtl.cli import run as cli_run
from medtl.errors import MedtlError
from medtl.probes import suite
from medtl.study import load_study, run_study

STUDY = {
    "name": "tiny-study",
    "sweep": {
        "seeds": 2,
        "set": {"data.path": "builtin:synthetic", "data.image_size": 24,
                "data.synthetic_n": {"train": 64, "val": 32, "test": 40}, "train.epochs": 1,
                "train.batch_size": 32, "train.num_threads": 1, "train.precision": "fp32"},
        "arms": {"a": {}, "b": {"train.lr": 0.01}},
    },
    "compare": {"metrics": ["test.auc", "test.acc"], "bootstrap": 200},
    "probes": {"preset": "quick", "n_images": 16},
}
PARAMS = {  # even smaller than the quick preset: the test budget
    "translation": {"max_shift": 1, "n_images": 12, "n_pairs": 1, "scale_pct": 1},
    "adversarial": {"steps": 1, "n_images": 16, "attacks": ["fgsm_linf", "pgd_linf"], "eps": [0.0, 8 / 255]},
    "corruptions": {"n_images": 16, "corruptions": ["gaussian_noise"]},
    "explain": {"n_samples": 1, "n_embed": 16},
    "shape_bias": {"n_pairs": 16},
    "shortcut": {"n_images": 16},
}


@pytest.fixture(autouse=True)
def _small(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDTL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(suite, "probe_params", lambda quick=False, n_images=None: {k: dict(v) for k, v in PARAMS.items()})


def _external_npz(tmp_path):
    """Another 'hospital': fresh synthetic images (other indices) as a MedMNIST-style .npz."""
    import numpy as np

    from medtl.data import synthetic

    arrays = {}
    for split, start in (("train", 5000), ("val", 6000), ("test", 7000)):
        im, y, _ = synthetic.generate("test", range(start, start + 40), 24)
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = im, y[:, None]
    np.savez(tmp_path / "other.npz", **arrays)
    return tmp_path / "other.npz"


def _write(tmp_path, doc=STUDY):
    p = tmp_path / "study.yaml"
    p.write_text(yaml.safe_dump(doc))
    return p


@pytest.mark.e2e
def test_study_runs_every_stage_resumes_after_a_kill_and_renders(tmp_path, monkeypatch):
    cfg = _write(tmp_path, {**STUDY, "evaluate": [{"data": str(_external_npz(tmp_path)), "name": "synth-again",
                                                   "label_map": {"0": "normal", "1": "opacity"}}],
                            "primary": ["test.auc", "translation.p_change_1px"], "margin": 0.05,
                            "plan": {"difference": 0.05}})
    out = tmp_path / "out"
    real = suite.probe_run
    calls = {"n": 0}

    def killed_after_two(*a, **kw):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # the study is killed during the probe stage
        return real(*a, **kw)

    monkeypatch.setattr(suite, "probe_run", killed_after_two)
    with pytest.raises(KeyboardInterrupt):
        run_study(cfg, out, workers=1, progress=False)
    runs = sorted((out / "runs").glob("*/seed-*"))
    assert len(runs) == 4 and all((r / "metrics.json").is_file() for r in runs)
    probed = [r for r in runs if (r / "probes" / "shape_bias.json").is_file()]
    assert len(probed) == 2
    stamps = {p: p.stat().st_mtime_ns for r in runs for p in (r / "probes").glob("*.json")}
    ckpts = {r: (r / "checkpoint_best.pt").stat().st_mtime_ns for r in runs}

    monkeypatch.setattr(suite, "probe_run", real)
    rec = run_study(cfg, out, workers=1, progress=False)
    assert rec["train"]["counts"] == {"done": 0, "skipped": 4, "failed": 0}  # no run retrained
    assert all((r / "checkpoint_best.pt").stat().st_mtime_ns == t for r, t in ckpts.items())
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())  # no finished probe recomputed
    assert set(rec["stage_seconds"]) == {"train", "compare", "robustness", "evaluate", "plan"}

    doc = json.loads((out / "study.json").read_text())
    assert doc["study"]["name"] == "tiny-study" and set(doc["compare"]["arms"]) == {"a", "b"}
    assert {r["arm"] for r in doc["robustness"]["runs"]} == {"a", "b"} and len(doc["robustness"]["runs"]) == 4
    assert (out / "compare" / "compare.json").is_file() and (out / "robustness" / "robustness.json").is_file()
    assert doc["external"][0]["name"] == "synth-again" and len(doc["external"][0]["evaluate"]["runs"]) == 4
    assert all((r / "external" / "synth-again" / "metrics.json").is_file() for r in runs)
    md = (out / "study.md").read_text()
    for part in ("## 1. Comparison over seeds", "### test.auc", "## 2. Robustness", "### Shape vs texture",
                 "### Shortcuts", "Pairwise comparisons", "## 3. External validation", "synth-again"):
        assert part in md, part
    pair = next(p for p in doc["compare"]["pairs"] if p["metric"] == "test.auc")
    assert pair["sentence"] in md
    # one primary Holm family across compare and robustness; the rest exploratory; three words
    fam = doc["study"]["families"]
    assert fam["m_primary"] == 2 and fam["primary"] == ["test.auc", "translation.p_change_1px"]
    rob = {p["metric"]: p for p in doc["robustness"]["pairs"]}
    assert pair["family"] == "primary" and rob["translation.p_change_1px"]["family"] == "primary"
    assert rob["translation.p_change_1px"]["family_size"] == 2 and rob["translation.consistency"]["family"] == "exploratory"
    assert "clean.auc" not in rob  # tested once, as compare's test.auc
    assert all(p["conclusion"] in ("differs", "equivalent", "inconclusive")
               for p in doc["compare"]["pairs"] + doc["robustness"]["pairs"])
    assert "## Primary endpoints and conclusions" in md and "## Seeds needed" in md
    assert "a pilot needs at least 3 paired seeds" in doc["study"]["plan"]["error"]  # 2 seeds: no plan, said so
    assert "No plan: " in md
    dom = render_page(out / "study.html", tmp_path, min_images=4)
    assert "medtl study: tiny-study" in dom and "Arm vs arm" in dom


def test_study_config_errors_are_one_line(tmp_path, capsys):
    with pytest.raises(MedtlError, match="sweep"):
        load_study(_write(tmp_path, {"name": "x"}))
    with pytest.raises(MedtlError, match="unknown key 'probes.presets'"):
        load_study(_write(tmp_path, {**STUDY, "probes": {"presets": "full"}}))
    with pytest.raises(MedtlError, match="not found"):
        load_study(tmp_path / "nope.yaml")
    missing = _write(tmp_path, {**STUDY, "sweep": "no_such_sweep.yaml"})
    assert cli_run(["study", str(missing), "--out", str(tmp_path / "o"), "-q"]) == 2
    err = capsys.readouterr().err
    assert "no_such_sweep.yaml" in err and len(err.strip().splitlines()) == 1
    (tmp_path / "file").write_text("x")
    assert cli_run(["study", str(_write(tmp_path)), "--out", str(tmp_path / "file" / "o"), "-q"]) == 2
    assert "is a file" in capsys.readouterr().err
    assert cli_run(["study", str(_write(tmp_path)), "--out", str(tmp_path / "o2"), "--gpus-per-run", "0.5"]) == 2
    assert "ray" in capsys.readouterr().err


def test_the_shipped_study_config_resolves(tmp_path):
    """configs/studies/warmup.yaml names its sweep relative to itself; the sweep the study writes
    into its folder loads from there (its base made absolute)."""
    from pathlib import Path

    from medtl.study.config import sweep_yaml
    from medtl.sweep import load_sweep

    root = Path(__file__).resolve().parents[1]
    cfg, folder = load_study(root / "configs" / "studies" / "warmup.yaml")
    assert cfg.probes.preset == "full" and cfg.compare.anchor == 0.944
    written = tmp_path / "elsewhere" / "study_sweep.yaml"
    written.parent.mkdir()
    written.write_text(sweep_yaml(cfg, folder))
    _, arms, seeds = load_sweep(written)
    assert set(arms) == {"warmup", "no_warmup"} and len(seeds) == 30
    assert arms["warmup"].train.epochs == 8 and arms["no_warmup"].train.warmup_epochs == 0


def test_declared_pairs_and_primary_pairs(tmp_path):
    """``pairs`` limits the tests to the declared pairs (as declared: ``a`` first) and
    ``primary_pairs`` puts only those in the primary family; unknown arms and primary pairs that
    are not tested fail before anything is written."""
    import numpy as np

    from medtl.stats.compare import compare_arms, pair_family, select_pairs

    assert select_pairs(["a", "b", "c"]) == [("a", "b"), ("a", "c"), ("b", "c")]
    assert select_pairs(["a", "b", "c"], [("c", "a"), ("a", "c"), ("a", "z")]) == [("c", "a")]
    assert pair_family("b", "a", "test.auc", ["test.auc"], [("a", "b")]) == "primary"
    assert pair_family("c", "a", "test.auc", ["test.auc"], [("a", "b")]) == "exploratory"
    assert pair_family("a", "b", "test.acc", ["test.auc"], [("a", "b")]) == "exploratory"
    rng = np.random.default_rng(0)
    vals = {m: {arm: {s: float(rng.normal(0.9 + 0.01 * i, 0.01)) for s in range(5)}
                for i, arm in enumerate("abcd")} for m in ("test.auc", "test.acc")}
    res = compare_arms(vals, n_resamples=200, primary=["test.auc"], pairs=[("b", "a"), ("c", "a"), ("d", "c")],
                       primary_pairs=[("a", "b")])
    got = {(p["a"], p["b"], p["metric"]): p["family"] for p in res["pairs"]}
    assert len(got) == 6 and ("b", "a", "test.auc") in got
    assert [k for k, f in got.items() if f == "primary"] == [("b", "a", "test.auc")]
    assert res["holm"]["m_primary"] == 1 and res["holm"]["m_exploratory"] == 5

    doc = {**STUDY, "primary": ["test.auc"], "pairs": ["b vs a"], "primary_pairs": ["a vs b"]}
    cfg, _ = load_study(_write(tmp_path, doc))
    assert cfg.pair_list() == [("b", "a")] and cfg.primary_pair_list() == [("a", "b")]
    for bad, msg in (({"pairs": ["a vs a"]}, "two different arms"), ({"pairs": ["a, b"]}, "ARM_A vs ARM_B"),
                     ({"pairs": ["a vs b", "b vs a"]}, "twice"),
                     ({"primary_pairs": ["a vs b"], "pairs": ["a vs c"]}, "not among the tested"),
                     ({"primary": [], "primary_pairs": ["a vs b"]}, "needs primary metrics")):
        with pytest.raises(MedtlError, match=msg):
            load_study(_write(tmp_path, {**doc, **bad}))
    out = tmp_path / "never"
    with pytest.raises(MedtlError, match="unknown arm.*zz"):
        run_study(_write(tmp_path, {**doc, "probes": {"preset": "quick", "arms": ["zz"]}}), out, progress=False)
    assert not out.exists()


def test_the_pretrained_study_config_resolves(tmp_path):
    """configs/studies/pretrained.yaml: its arms (two datasets, per-arm bases and seeds) resolve,
    every declared pair names real arms, and one primary pair per question."""
    from pathlib import Path

    from medtl.study.config import sweep_yaml
    from medtl.sweep import load_sweep

    root = Path(__file__).resolve().parents[1]
    cfg, folder = load_study(root / "configs" / "studies" / "pretrained.yaml")
    written = tmp_path / "elsewhere" / "study_sweep.yaml"
    written.parent.mkdir()
    written.write_text(sweep_yaml(cfg, folder))
    sweep, arms, seeds = load_sweep(written)
    cfg.check_arms(list(arms), "pretrained.yaml")
    assert len(cfg.primary_pairs) == 16 and len(cfg.pairs) == 32
    assert arms["k64-scratch"].data.path == "kermany:chest_xray" and sweep.arm_seeds("k64-scratch") == [0, 1, 2, 3, 4]
    assert arms["p5-fdb32-sin"].data.train_fraction == 0.05 and arms["p5-fdb32-sin"].model.weights == "fdb32-sin"
    assert arms["lin-fdb32-in"].train.trainable == "head" and arms["lin-fdb32-in"].train.bn_gamma == {}
    assert len(seeds) == 10 and set(cfg.probes.arms) <= set(arms)
