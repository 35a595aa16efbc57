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
    assert "adversarial.pgd_linf.auc@8/255" in data["headline"] and data["headline"][-1] == "shape_bias.shape_bias"
    # shape bias and shortcut sections, from each run's cached probes
    for r in data["runs"]:
        sb, sc = r["shape_bias"], r["shortcut"]
        assert sb["shape_bias"] is None or 0 <= sb["shape_bias"] <= 1
        assert 0 <= sc["auc_full"] <= 1 and isinstance(sc["flagged"], bool) and sc["n_images"] == 32
        assert sc["auc_full"] == pytest.approx(r["clean"]["auc"], abs=0.25)  # same model, a sample of the set
    assert "shortcut.auc_lung_masked" in data["arms"]["armA"]["metrics"]
    md = (out / "report.md").read_text()
    assert "## Shape vs texture" in md and "## Shortcuts" in md and "seeds flagged" in md
    assert "shape_bias.shape_bias" in md and "shortcut.auc_border_only" in md
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
