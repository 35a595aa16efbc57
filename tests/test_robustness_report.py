"""`medtl robustness-report` on tiny runs: files, JSON schema, CIs, and a headless-Chromium render."""
from __future__ import annotations

import json
import re
import shutil
import subprocess

import numpy as np
import pytest

from test_probes_helpers import tiny_runs

from medtl.reports.robustness_report import run_report

PARAMS = {
    "translation": {"max_shift": 1, "n_images": 12, "n_pairs": 1, "scale_pct": 1},
    "adversarial": {"steps": 1, "n_images": 16, "eps": [0.0, 8 / 255], "attacks": ["pgd_linf"]},
    "corruptions": {"n_images": 16, "corruptions": ["gaussian_noise", "jpeg"]},
    "explain": {"n_samples": 1, "n_embed": 16},
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
    # markdown's relative images all exist
    md = (out / "report.md").read_text()
    for img in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md):
        assert (out / img).is_file(), img
    # no patient identifiers: the runs' patient ids never appear
    assert "patient" not in (out / "robustness.json").read_text().lower()
    # second call is served from the per-run cache
    again = run_report([runs["root"]], out, params=PARAMS)
    assert again["runs"][0]["clean"] == data["runs"][0]["clean"]


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        p = shutil.which(name)
        if p:
            return p
    return None


def test_report_renders_in_chromium(report, tmp_path):
    exe = _chromium()
    if exe is None:
        pytest.skip("chromium is not installed (Debian: apt-get install -y chromium)")
    out, _, _ = report
    flags = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'prof'}"]
    url = (out / "report.html").resolve().as_uri()
    dom = subprocess.run(flags + ["--dump-dom", url], capture_output=True, text=True, timeout=60)
    assert dom.returncode == 0, dom.stderr[-500:]
    imgs = re.findall(r"<img [^>]*src=\"data:image/png;base64,", dom.stdout)
    assert len(imgs) >= 4  # adversarial, translation, corruptions, explanation panels
    shot = tmp_path / "shot.png"
    r = subprocess.run(flags + [f"--screenshot={shot}", "--window-size=1200,2000", url], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0 and shot.is_file(), r.stderr[-500:]
    from PIL import Image

    a = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert a.std() > 5  # not blank
    assert (a < 128).mean() > 0.005  # some dark pixels: text and plots rendered
