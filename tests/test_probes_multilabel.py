"""Multi-label runs (NIH ChestX-ray14 style, sigmoid/BCE) through the probes and the robustness
report: per-label and macro figures, any-label decision changes, BCE attacks, per-label
explanations, shape bias and shortcuts refused in one line and skipped by the suite."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from medtl.errors import ConfigError

LABELS = ("Effusion", "Mass", "Nodule")


def _nih_csv(root: Path, n: int = 120) -> Path:
    """A 16 px NIH-style CSV (Finding Labels joined by '|'); Effusion and Nodule are learnable."""
    rng = np.random.default_rng(1)
    d = root / "nih"
    (d / "images").mkdir(parents=True)
    rows = ["Image Index,Finding Labels,Patient ID"]
    for i in range(n):
        img = rng.integers(60, 120, (16, 16), dtype=np.uint8)
        on = [c for c, yes in zip(LABELS, (i % 2 == 0, i % 4 == 1, i % 3 == 0)) if yes]
        if "Effusion" in on:
            img[2:8, 2:8] = 250
        if "Nodule" in on:
            img[10:14, 10:14] = 10
        Image.fromarray(img).save(d / "images" / f"{i:05d}.png")
        rows.append(f"{i:05d}.png,{'|'.join(on) or 'No Finding'},{i}")
    (d / "labels.csv").write_text("\n".join(rows) + "\n")
    return d / "labels.csv"


@pytest.fixture(scope="module")
def arm(tmp_path_factory):
    """ARM/seed-{0,1}: two finished 1-epoch multi-label runs (fp32, one thread)."""
    from medtl.config import build_config
    from medtl.train import finetune

    root = tmp_path_factory.mktemp("ml")
    old = os.environ.get("MEDTL_CACHE")
    os.environ["MEDTL_CACHE"] = str(root / "cache")
    torch.set_num_threads(1)
    csv = _nih_csv(root)
    for seed in (0, 1):
        cfg = build_config({}, [f"data.path={csv}", "data.image_size=16", "train.epochs=1", f"seed={seed}",
                                "train.batch_size=16", "train.num_threads=1", "train.precision=fp32",
                                "train.device=cpu"])
        finetune(cfg, root / "arm" / f"seed-{seed}", progress=False)
    yield root / "arm"
    if old is None:
        os.environ.pop("MEDTL_CACHE", None)
    else:
        os.environ["MEDTL_CACHE"] = old


def _macro(per: dict) -> float:
    vals = [v for v in per.values() if v is not None and math.isfinite(v)]
    return float(np.mean(vals))


def test_a_multilabel_run_loads_with_multi_hot_labels_sigmoids_and_per_label_thresholds(arm):
    from medtl.probes.runs import MULTILABEL_RULE, decide, load_run

    run = load_run(arm / "seed-0")
    assert run.task == "multilabel" and run.classes == sorted(LABELS)
    assert run.labels.shape == (len(run.ids), 3) and set(np.unique(run.labels)) <= {0, 1}
    assert np.array_equal(run.threshold, [0.5, 0.5, 0.5]) and run.threshold_rule == MULTILABEL_RULE
    x = run.x(np.arange(6))
    p = run.proba(x)
    with torch.no_grad():
        want = torch.sigmoid(run.model(x)).double().numpy()
    np.testing.assert_allclose(p, want, atol=1e-5)  # per-label sigmoids, not a softmax
    assert decide(p, run.task, run.threshold).shape == (6, 3)


def test_corruptions_give_per_label_and_macro_auc_per_severity(arm):
    from medtl.probes.corruptions import corruptions_probe

    r = corruptions_probe(arm / "seed-0", corruptions=["gaussian_noise", "blur"], force=True)
    assert r["decision"]["thresholds"] == {c: 0.5 for c in sorted(LABELS)}
    assert "0.5 per label" in r["decision"]["rule"]
    for row in [r["clean"]] + [x for rows in r["corruptions"].values() for x in rows]:
        assert set(row["auc_per_label"]) == set(LABELS)
        assert all(0 <= v <= 1 for v in row["auc_per_label"].values() if math.isfinite(v))
        assert row["auc"] == pytest.approx(_macro(row["auc_per_label"]))
        assert 0 <= row["acc"] <= 1
    for c, d in r["per_label"].items():
        drops = [r["clean"]["auc_per_label"][c] - x["auc_per_label"][c] for rows in r["corruptions"].values()
                 for x in rows]
        assert d["mean_auc_drop"] == pytest.approx(np.mean(drops))


def test_translation_counts_any_label_changes_and_zero_shift_changes_nothing(arm):
    from medtl.probes.translation import translation_probe

    r0 = translation_probe(arm / "seed-0", max_shift=0, n_images=None, n_pairs=1, scale_pct=0, force=True,
                           plots=False)
    assert r0["p_change_1px"] == 0 and r0["consistency"] == 1 and r0["scale"]["p_change_max"] == 0
    assert all(v["p_change_1px"] == 0 for v in r0["per_label"].values())
    r = translation_probe(arm / "seed-0", max_shift=2, n_images=None, n_pairs=2, scale_pct=2, force=True)
    assert set(r["per_label"]) == set(LABELS) and "any label" in r["changes"]
    per = [v["p_change_1px"] for v in r["per_label"].values()]
    assert all(0 <= v <= 1 for v in per)
    # a decision vector changes when any label's does: at least each label's rate, at most their sum
    assert max(per) <= r["p_change_1px"] <= min(1.0, sum(per)) + 1e-12
    assert 0 <= r["jaggedness"] <= 1 and 0 <= r["consistency"] <= 1
    assert (arm / "seed-0" / "probes" / "translation_curves.png").is_file()


def test_attacks_maximise_bce_on_the_multi_hot_target(arm):
    from medtl.probes.adversarial import adversarial_probe, bce_attack
    from medtl.probes.runs import load_run

    run = load_run(arm / "seed-0")
    x, y = run.x(np.arange(12)), torch.from_numpy(run.labels[:12]).float()
    with torch.no_grad():
        clean_loss = F.binary_cross_entropy_with_logits(run.model(x), y)
    for name in ("fgsm_linf", "pgd_linf", "pgd_l2"):
        torch.manual_seed(0)
        eps = 4 / 255 if name.endswith("linf") else 4 / 255 * 16
        xa = bce_attack(run.model, x, y, name, eps, steps=3, random_start=True)
        with torch.no_grad():
            assert F.binary_cross_entropy_with_logits(run.model(xa), y) > clean_loss, name
        d = (xa - x).flatten(1)
        assert (d.abs().amax(1) if name.endswith("linf") else d.norm(dim=1)).max() <= eps + 1e-5
        assert xa.min() >= 0 and xa.max() <= 1

    r = adversarial_probe(arm / "seed-0", eps=[0.0, 8 / 255], attacks=["pgd_linf", "fgsm_l2"], steps=3, force=True)
    assert "binary cross-entropy" in r["loss"] and r["decision"]["thresholds"]["Mass"] == 0.5
    for rows in r["attacks"].values():
        clean, hit = rows
        assert clean["auc"] == pytest.approx(r["clean"]["auc"]) and clean["flip_rate"] == 0
        assert clean["max_linf"] == 0 and clean["success_rate"] == 0
        assert hit["bce"] > clean["bce"]                    # the attack raised the run's own loss
        assert hit["auc"] <= clean["auc"] + 0.05            # macro AUC lowered (or about where it was)
        for row in rows:
            assert set(row["auc_per_label"]) == set(LABELS)
            assert row["auc"] == pytest.approx(_macro(row["auc_per_label"]))
            assert 0 <= row["flip_rate"] <= 1
    with pytest.raises(ConfigError, match="autoattack_linf needs single-label decisions"):
        adversarial_probe(arm / "seed-0", eps=[0.0, 1 / 255], attacks=["autoattack_linf"], force=True)


def test_explanations_are_per_label_for_the_most_prevalent_labels(arm):
    from medtl.probes.explain import explain_probe
    from medtl.probes.runs import load_run

    run = load_run(arm / "seed-0")
    prevalence = dict(zip(run.classes, run.labels.sum(0)))
    r = explain_probe(arm / "seed-0", n_samples=3, n_embed=24, force=True)
    assert r["target_labels"] == sorted(LABELS, key=lambda c: (-prevalence[c], run.classes.index(c)))
    for s in r["samples"]:
        assert s["y"] == 1 and s["target"] in s["positives"] and 0 <= s["p"] <= 1
        assert s["decision"] == int(s["p"] >= 0.5)
    assert -1 <= r["map_agreement"]["gradcam_vs_saliency"] <= 1
    assert (arm / "seed-0" / "probes" / "explain_panel.png").is_file()


def test_shape_bias_and_shortcut_refuse_a_multilabel_run_in_one_line(arm, capsys):
    from medtl.cli import run as cli
    from medtl.probes.shape_bias import shape_bias_probe
    from medtl.probes.shortcut import shortcut_probe

    run_dir = arm / "seed-0"
    with pytest.raises(ConfigError, match="shape bias needs single-label decisions") as e:
        shape_bias_probe(run_dir)
    assert str(run_dir) in str(e.value) and "\n" not in str(e.value)
    assert str(e.value).endswith("multi-label runs are not supported")
    with pytest.raises(ConfigError, match="shortcut probe needs single-label scores") as e:
        shortcut_probe(run_dir)
    assert str(run_dir) in str(e.value) and "\n" not in str(e.value)
    assert cli(["probe", "shape-bias", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert "shape bias needs single-label decisions" in err
    assert not (run_dir / "probes" / "shape_bias.json").exists()


def test_robustness_report_over_the_seeds_shows_each_label_and_macro(arm, tmp_path, capsys):
    from medtl.cli import run as cli

    out = tmp_path / "rep"
    assert cli(["robustness-report", str(arm), "--out", str(out), "--quick", "--n-images", "24",
                "--workers", "1"]) == 0
    data = json.loads((out / "robustness.json").read_text())
    assert len(data["runs"]) == 2
    for r in data["runs"]:
        assert r["task"] == "multilabel" and set(r["skipped"]) == {"shape_bias", "shortcut"}
        assert "shape_bias" not in r and "shortcut" not in r
        assert r["clean"]["auc"] == pytest.approx(_macro(r["clean"]["auc_per_label"]))
        assert set(r["translation"]["per_label"]) == set(LABELS)
        assert set(r["corruptions_per_label"]) == set(LABELS)
        assert all(set(row["auc_per_label"]) == set(LABELS) for rows in r["adversarial"].values() for row in rows)
    m = data["arms"]["arm"]["metrics"]
    for c in LABELS:
        for key in (f"clean.per_label.{c}.auc", f"translation.per_label.{c}.p_change_1px",
                    f"corruptions.per_label.{c}.mean_auc_drop", f"adversarial.per_label.{c}.pgd_linf.auc@8/255"):
            assert m[key]["n"] == 2, key
    assert data["headline"][0] == "clean.auc" and "adversarial.pgd_linf.auc@8/255" in data["headline"]
    md = (out / "report.md").read_text()
    html = (out / "report.html").read_text()
    for page in (md, html):
        assert "Multi-label runs: per label" in page and "macro" in page and "any label" in page
        assert all(c in page for c in LABELS)
        assert "shape_bias: skipped for 2 multi-label runs" in page and "shortcut: skipped" in page
    table = md.split("Multi-label runs: per label")[1]
    rows = {ln.split("|")[1].strip(): ln for ln in table.splitlines() if ln.startswith("| ")}
    assert set(LABELS) | {"macro", "any label"} <= set(rows)
    clean_macro = float(rows["macro"].split("|")[2])
    assert clean_macro == pytest.approx(m["clean.auc"]["mean"], abs=6e-4)


def test_compare_tests_every_label_with_its_own_delong_interval_and_holm_over_the_labels(arm, tmp_path):
    """``test.auc_per_class.*`` expands to one metric per label; each label's interval over seeds
    and test cases is DeLong on that label's column of the saved predictions, and declaring the
    pattern primary puts the labels in one Holm family (the macro AUC stays exploratory)."""
    import shutil

    from medtl.runs import read_predictions
    from medtl.stats.comparison import compare_runs
    from medtl.stats.hierarchical import RunPredictions, mean_ci

    root = tmp_path / "study"
    for name in ("a", "b"):
        shutil.copytree(arm, root / name)
    res = compare_runs([root], ["test.auc_per_class.*", "test.auc"], primary=["test.auc_per_class.*"])
    want = [f"test.auc_per_class.{c}" for c in sorted(LABELS)]
    assert res["metrics"] == want + ["test.auc"]
    fam = {p["metric"]: p["family"] for p in res["pairs"]}
    assert all(fam[m] == "primary" for m in want) and fam["test.auc"] == "exploratory"
    assert res["holm"]["m_primary"] == 3
    k = sorted(LABELS).index("Effusion")
    runs = []
    for seed in (0, 1):
        d = read_predictions(root / "a" / f"seed-{seed}")
        runs.append(RunPredictions(y=np.asarray(d["y"])[:, k].astype(int), p=np.asarray(d["p"])[:, k]))
    ci = mean_ci(runs, "auc")
    st = res["by_metric"]["test.auc_per_class.Effusion"]["arms"]["a"]
    assert st["ci_seeds_cases_low"] == pytest.approx(ci["ci_low"]) and np.isfinite(st["ci_seeds_cases_low"])
    with pytest.raises(ConfigError, match="not a set of per-label values"):
        compare_runs([root], ["test.auc.*"])
    # each label at the operating point fixed on that label's val predictions, with its seeds + cases CI
    from medtl.stats.operating import op_thresholds

    res = compare_runs([root], ["test.operating_points_per_class.*.net_benefit_10"])
    assert res["metrics"] == [f"test.operating_points_per_class.{c}.net_benefit_10" for c in sorted(LABELS)]
    res = compare_runs([root], ["test.operating_points_per_class.*.sens_at_spec90"])
    for r, seed in zip(runs, (0, 1)):
        v = read_predictions(root / "a" / f"seed-{seed}" / "predictions_val.npz")
        r.op_thresholds = op_thresholds(np.asarray(v["y"])[:, k].astype(int), np.asarray(v["p"])[:, k])
    want = mean_ci(runs, "sens_at_spec90")
    st = res["by_metric"]["test.operating_points_per_class.Effusion.sens_at_spec90"]["arms"]["a"]
    assert st["ci_seeds_cases_low"] == pytest.approx(want["ci_low"], nan_ok=True)
    assert st["mean"] == pytest.approx(np.mean([json.loads((root / "a" / f"seed-{s}" / "metrics.json").read_text())
                                                ["test"]["operating_points_per_class"]["Effusion"]["sens_at_spec90"]
                                                for s in (0, 1)]))
