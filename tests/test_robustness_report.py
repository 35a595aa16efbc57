"""`medtl robustness-report` on tiny runs: files, JSON schema, CIs, and a headless-Chromium render."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest

from _browser import render_page
from test_probes_helpers import tiny_runs

from medtl.probes.suite import run_probes
from medtl.reports import write_robustness


def run_report(dirs, out, **kw):
    res = run_probes(dirs, **kw)
    write_robustness(res, out)
    return res

PARAMS = {
    "translation": {"max_shift": 1, "n_images": 12, "n_pairs": 1, "scale_pct": 1},
    "adversarial": {"steps": 1, "n_images": 16, "eps": [0.0, 8 / 255], "attacks": ["pgd_linf"]},
    "corruptions": {"n_images": 16, "corruptions": ["gaussian_noise", "jpeg"]},
    "explain": {"n_samples": 1, "n_embed": 16},
    "shape_bias": {"n_pairs": 32},
    "shortcut": {"n_images": 32},
}


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    runs = tiny_runs()
    out = tmp_path_factory.mktemp("robust")
    res = run_report([runs["root"]], out, params=PARAMS)
    return out, res, runs


def test_report_files_and_schema(report):
    out, res, runs = report
    for f in ("report.html", "report.md", "robustness.json"):
        assert (out / f).is_file()
    data = json.loads((out / "robustness.json").read_text())
    assert {r["arm"] for r in data["runs"]} == {"armA", "armB"}
    for r in data["runs"]:
        assert 0 <= r["clean"]["auc"] <= 1
        assert 0 <= r["translation"]["p_change_1px"] <= 1 and 0 <= r["translation"]["consistency"] <= 1
        for rows in r["adversarial"].values():
            assert all({"eps", "auc", "acc"} <= set(x) for x in rows)
        for rows in r["corruptions"].values():
            assert [x["severity"] for x in rows] == [1, 2, 3, 4, 5] and all("auc" in x for x in rows)
    a = data["arms"]["armA"]["metrics"]["clean.auc"]
    assert a["n"] == 2 and a["mean"] == pytest.approx(np.mean(a["values"]))
    assert data["arms"]["armB"]["metrics"]["clean.auc"]["ci_low"] is None  # n=1: no CI
    assert data["arms"]["armA"]["metrics"]["clean.auc"]["ci_low"] is None  # n=2: too few seeds for a CI too
    assert data["descriptive_only"] and "too few seeds for a CI" in (out / "report.md").read_text()
    # arm vs arm in compare.json's layout, Holm over the report's family
    assert data["headline"][:3] == ["clean.auc", "translation.p_change_1px", "translation.consistency"]
    assert "adversarial.pgd_linf.auc@8/255" in data["headline"]
    # shape bias and shortcut sections, from each run's cached probes
    for r in data["runs"]:
        sb, sc = r["shape_bias"], r["shortcut"]
        assert isinstance(sb["interpretable"], bool) and 0 <= sb["shape_only_bacc"] <= 1
        assert sb["shape_only_bacc_ci_low"] <= sb["shape_only_bacc"] <= sb["shape_only_bacc_ci_high"]
        assert sb["texture_only_bacc_ci_low"] <= sb["texture_only_bacc"] <= sb["texture_only_bacc_ci_high"]
        if sb["interpretable"]:
            assert 0 <= sb["ci_low"] <= sb["shape_bias"] <= sb["ci_high"] <= 1 and sb["reason"] is None
        else:
            assert sb["shape_bias"] is None and sb["reason"].startswith("not interpretable at this setting")
        assert set(sb["directions"]) == {"shape=0,texture=1", "shape=1,texture=0"}  # the npz's class names
        assert 0 <= sc["auc_full"] <= 1 and isinstance(sc["flagged"], bool) and sc["n_images"] == 32
        assert sc["flag_state"] in ("flagged", "not flagged", "undetermined")
        assert sc["flagged"] == (sc["flag_state"] == "flagged")
        if sc["masked_retention"] is not None and sc["retention_ci_low"] is not None:
            assert sc["retention_ci_low"] <= sc["masked_retention"] <= sc["retention_ci_high"]
        assert 0 <= sc["mask_fallback"] <= 32 and isinstance(sc["masks_mostly_prior"], bool)
        assert sc["auc_full"] == pytest.approx(r["clean"]["auc"], abs=0.25)  # same model, a sample of the set
    # shape bias is a headline metric only through the runs where it is interpretable
    interpretable = [r for r in data["runs"] if r["shape_bias"]["interpretable"]]
    assert ("shape_bias.shape_bias" in data["headline"]) == bool(interpretable)
    for arm, info in data["arms"].items():
        k = sum(r["shape_bias"]["interpretable"] for r in data["runs"] if r["arm"] == arm)
        assert info["metrics"].get("shape_bias.shape_bias", {"n": 0})["n"] == k
        assert "shape_bias.texture_only_bacc" in info["metrics"] and "shape_bias.shape_only_acc" not in info["metrics"]
    assert "shortcut.auc_lung_masked" in data["arms"]["armA"]["metrics"]
    md = (out / "report.md").read_text()
    assert "## Shape vs texture" in md and "## Shortcuts" in md
    assert "flagged (retention CI wholly above the cut)" in md and "undetermined" in md and "fixed prior for" in md
    assert "| arm | seed | retention | 95% CI | state | prior masks |" in md
    for arm in ("armA", "armB"):
        assert re.search(rf"- {arm}: (shape bias interpretable for \d of \d seeds|no seed's shape bias is "
                         rf"interpretable \(0 of \d\); .*not interpretable at this setting)", md), md
    assert "shape_bias.texture_only_bacc" in md and "shortcut.auc_border_only" in md
    pair = next(p for p in data["pairs"] if p["metric"] == "clean.auc")
    assert {pair["a"], pair["b"]} == {"armA", "armB"} and pair["paired"] is False  # armB has seed 0 only
    assert pair["p_holm"] is None or pair["p_holm"] >= pair["p"]
    assert data["holm"]["m_primary"] <= len(data["headline"])
    assert "Arm vs arm" in (out / "report.md").read_text() and pair["sentence"] in (out / "report.md").read_text()
    # markdown's relative images all exist
    md = (out / "report.md").read_text()
    for img in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md):
        assert (out / img).is_file(), img
    # no patient identifiers: the runs' patient ids never appear
    assert "patient" not in (out / "robustness.json").read_text().lower()
    # second call is served from the per-run cache
    again = run_report([runs["root"]], out, params=PARAMS)
    assert again["runs"][0]["clean"] == data["runs"][0]["clean"]


def test_report_renders_in_chromium(report, tmp_path):
    out, _, _ = report
    dom = render_page(out / "report.html", tmp_path, min_images=4)  # adversarial, translation, corruptions, panels
    assert "medtl robustness report" in dom and "armA" in dom


def test_seed_folders_given_one_by_one_join_their_arm(report, tmp_path):
    _, _, runs = report
    res = run_report([runs["a0"], runs["a1"], runs["b0"]], tmp_path / "o", params=PARAMS)  # probes cached
    assert sorted(res["arms"]) == ["armA", "armB"]
    assert sorted(res["arms"]["armA"]["seeds"]) == [0, 1]
    from medtl.runs import discover_arms

    arms = discover_arms([runs["a0"], runs["a1"], runs["a0"]])  # the same folder twice counts once
    assert list(arms) == ["armA"] and sorted(arms["armA"].runs) == [0, 1]


@pytest.mark.e2e
def test_worker_processes_give_the_same_report(report, tmp_path):
    """Probing runs in two worker processes (spawned, one thread each) gives what one process gives."""
    import shutil

    _, res, runs = report
    copy = tmp_path / "runs"
    shutil.copytree(runs["root"], copy, ignore=shutil.ignore_patterns("probes"))
    par = run_probes([copy], params=PARAMS, workers=2)
    assert par["workers"] == 2
    assert [(r["arm"], r["seed"]) for r in par["runs"]] == [(r["arm"], r["seed"]) for r in res["runs"]]
    for a, b in zip(res["runs"], par["runs"]):
        assert b["clean"]["auc_fp32_probe_sample"] == pytest.approx(a["clean"]["auc_fp32_probe_sample"], abs=1e-9)
        assert b["translation"]["p_change_1px"] == pytest.approx(a["translation"]["p_change_1px"], abs=0.02)
        assert b["corruptions_mean_auc_drop"] == pytest.approx(a["corruptions_mean_auc_drop"], abs=0.01)
        assert b["shape_bias"]["shape_bias"] == a["shape_bias"]["shape_bias"] or abs(
            b["shape_bias"]["shape_bias"] - a["shape_bias"]["shape_bias"]) < 0.05
    from pathlib import Path

    assert all(Path(r["run_dir"]).is_relative_to(copy) and (Path(r["run_dir"]) / "probes").is_dir()
               for r in par["runs"])


def _record(arm: str, seed: int, interpretable: bool, state: str, rng) -> dict:
    """A minimal per-run record (probe_run's layout) with given shape-bias and shortcut outcomes."""
    sb = 0.6 + 0.1 * rng.random()
    return {
        "arm": arm, "seed": seed, "clean": {"auc": 0.9 + 0.01 * rng.random()},
        "translation": {"p_change_1px": 0.1, "consistency": 0.9, "jaggedness": 0.1, "mean_abs_dp_per_px": 0.01,
                        "scale_p_change_max": 0.2, "p_change_by_shift": [0.0, 0.1]},
        "adversarial": {}, "corruptions": {}, "corruptions_mean_auc_drop": 0.05,
        "shape_bias": {"interpretable": interpretable, "shape_bias": sb if interpretable else None,
                       "ci_low": sb - 0.05 if interpretable else None, "ci_high": sb + 0.05 if interpretable else None,
                       "reason": None if interpretable else "not interpretable at this setting: the texture cue "
                       "alone is recognised at balanced accuracy 0.58 (95% CI 0.49–0.66), not clearly above chance "
                       "(0.50)", "shape_only_bacc": 0.9, "texture_only_bacc": 0.7 if interpretable else 0.58},
        "shortcut": {"auc_full": 0.9, "auc_lung_masked": 0.8, "masked_retention": 0.75 + 0.1 * rng.random(),
                     "retention_ci_low": 0.6, "retention_ci_high": 0.9, "flag_state": state,
                     "flagged": state == "flagged", "mask_fallback": 90, "n_images": 100, "masks_mostly_prior": True,
                     "mask_warning": "the lung masks are mostly the fixed prior at this size"},
    }


def test_shape_bias_counts_only_interpretable_seeds_and_shortcut_states_are_counted():
    """No probes: records built by hand.  Arm 'ok' has 3 of 4 interpretable seeds, arm 'none' none."""
    from medtl.reports.robustness import shape_summary, shortcut_flags, shortcut_seed_rows
    from medtl.probes.registry import headline_metrics, probe_metrics
    from medtl.stats.robustness import aggregate, robustness_pairs

    rng = np.random.default_rng(0)
    states = ["flagged", "not flagged", "undetermined", "undetermined"]
    runs = [_record("ok", s, s != 3, states[s], rng) for s in range(4)] + [
        _record("none", s, False, "not flagged", rng) for s in range(4)]
    assert "shape_bias.shape_bias" in headline_metrics(runs)
    assert "shape_bias.shape_bias" not in headline_metrics([r for r in runs if r["arm"] == "none"])
    arms = aggregate(runs, probe_metrics(), n_resamples=200)
    ok = arms["ok"]["metrics"]["shape_bias.shape_bias"]
    assert ok["n"] == 3 and ok["mean"] == pytest.approx(np.mean([r["shape_bias"]["shape_bias"] for r in runs[:3]]))
    assert "shape_bias.shape_bias" not in arms["none"]["metrics"]
    assert arms["none"]["metrics"]["shape_bias.texture_only_bacc"]["mean"] == pytest.approx(0.58)
    pairs = robustness_pairs(runs, probe_metrics(), n_resamples=200)  # an arm without an interpretable seed does not break it
    assert "shape_bias.shape_bias" in pairs["headline"]
    result = {"runs": runs, "arms": arms}
    lines = shape_summary(result)
    assert lines[0].startswith("ok: shape bias interpretable for 3 of 4 seeds; mean 0.")
    assert "over seeds) over those seeds" in lines[0] and "on the texture cue alone 0." in lines[0]
    assert lines[1].startswith("none: no seed's shape bias is interpretable (0 of 4)")
    assert "not interpretable at this setting: the texture cue alone is recognised" in lines[1]
    flags = shortcut_flags(result)
    assert flags[0].startswith("ok: of 4 seeds, 1 flagged (retention CI wholly above the cut), 1 not flagged, "
                               "2 undetermined; retention 0.")
    assert "fixed prior for 360 of 400 image masks" in flags[0] and "Caution: the lung masks are mostly" in flags[0]
    assert flags[1].startswith("none: of 4 seeds, 0 flagged") and "4 not flagged" in flags[1]
    rows = shortcut_seed_rows(result)
    assert rows[0][2:] == [f"{runs[0]['shortcut']['masked_retention']:.3f}", "[0.600, 0.900]", "flagged", "90 of 100"]


def test_a_toy_probe_takes_one_registration_and_reaches_suite_cli_study_and_page(report, tmp_path, capsys):
    """Issue 21: a new probe registers once; the suite, the page, `medtl probe list|run` and the
    study's primary-metric check find it without an edit to any of them."""
    from medtl.cli import run as cli
    from medtl.probes import registry
    from medtl.probes.runs import cached_probe
    from medtl.study.config import StudyConfig

    def toy_probe(run_dir, *, force=False, **params):
        p = {"scale": 1.0} | {k: v for k, v in params.items() if v is not None}
        return cached_probe(run_dir, "toy", p, lambda run: {
            "mean_p": float(run.proba(run.x())[:, 1].mean()) * p["scale"], "n_images": len(run.labels)}, force=force)

    registry.register(registry.Probe(name="toy", run=toy_probe, defaults={"scale": 1.0}, summary="mean p(positive)",
                                     headline=lambda keys, recs: ["toy.mean_p"], methods="Toy: mean p(positive)."))
    try:
        _, _, runs = report
        out = tmp_path / "rep"
        res = run_report([runs["root"]], out, params=PARAMS)   # built-in probes come from their caches
        data = json.loads((out / "robustness.json").read_text())
        for r in data["runs"]:
            assert 0 <= r["toy"]["mean_p"] <= 1 and r["toy"]["n_images"] > 0 and "seconds" in r
        a = data["arms"]["armA"]["metrics"]["toy.mean_p"]
        assert a["n"] == 2 and a["mean"] == pytest.approx(np.mean([r["toy"]["mean_p"] for r in data["runs"]
                                                                   if r["arm"] == "armA"]))
        assert "toy.mean_p" in res["headline"] and "Toy: mean p(positive)." in res["methods"]
        md = (out / "report.md").read_text()
        assert "toy: mean p(positive) (mean and t 95% CI over seeds)" in md and "toy.mean_p" in md
        assert "toy: mean p(positive)" in (out / "report.html").read_text()
        # the CLI
        assert cli(["probe", "list"]) == 0 and "toy: mean p(positive)" in capsys.readouterr().out
        run_dir = runs["a0"]
        assert cli(["probe", "run", "toy", str(run_dir), "--set", "scale=2", "--force"]) == 0
        printed = capsys.readouterr().out
        assert "mean_p: " in printed and float(printed.split("mean_p: ")[1].split()[0]) <= 2
        assert cli(["probe", "run", "toy", str(run_dir), "--set", "nope=1"]) == 2
        assert "unknown parameter(s) nope" in capsys.readouterr().err
        # the study: a toy metric may be declared primary
        StudyConfig.model_validate({"sweep": "s.yaml", "primary": ["toy.mean_p"]})
    finally:
        registry.unregister("toy")
    with pytest.raises(Exception, match="neither a compare metric"):
        StudyConfig.model_validate({"sweep": "s.yaml", "primary": ["toy.mean_p"]})
