"""Shape-bias probe: the cue-conflict construction, the conditioning on correctly classified
single-cue images, the cue-usability gate and the balanced two-direction score.

Two kinds of model.  *Constructed* ones (no training): a tiny module whose logit is a weighted sum
of a low-frequency feature (the layout of a strongly blurred image) and a high-frequency feature
(the orientation of pixel-to-pixel differences), on synthetic images where the class sets both a
soft ellipse's orientation (shape) and 2-px stripes' orientation (texture); the weights fix which
cue the model uses.  *Trained* ones (2 seeds each, 24 px): ResNets trained where only one cue
predicts the label; where the model cannot use the other cue alone the gate withholds the score
and names that cue.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from test_probes_helpers import make_run, tiny_runs

from medtl.errors import MedtlError
from medtl.probes.shape_bias import (LAYOUT, compute_shape_bias, cue_conflict, gate, lowpass, pooled_score,
                                     shape_bias_probe, texture_only)

SIZE = 24


def cue_images(n: int, predictive: str, rng: np.random.Generator, size: int = SIZE):
    """(uint8 (n,size,size), labels): only the ``predictive`` cue ('shape' or 'texture') carries the
    label; the other is drawn at random."""
    y = (rng.random(n) < 0.5).astype(np.int64)
    s_cls = y.astype(bool) if predictive == "shape" else rng.random(n) < 0.5
    t_cls = y.astype(bool) if predictive == "texture" else rng.random(n) < 0.5
    g = (np.arange(size) + 0.5) / size - 0.5
    yy, xx = np.meshgrid(g, g, indexing="ij")
    cy, cx = rng.uniform(-0.08, 0.08, (2, n, 1, 1))
    rx = np.where(s_cls, 0.14, 0.36)[:, None, None]
    ry = np.where(s_cls, 0.36, 0.14)[:, None, None]
    shape = 1 / (1 + np.exp((((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 - 1) * 2.5))  # soft edges
    phase = rng.integers(0, 2, (n, 1, 1))
    ii = np.arange(size)
    rows = (ii[None, :, None] + phase) % 2 * np.ones((1, 1, size))
    cols = (ii[None, None, :] + phase) % 2 * np.ones((1, size, 1))
    tex = np.where(t_cls[:, None, None], cols, rows)
    img = 0.3 + 0.35 * shape + 0.12 * (tex - 0.5) + 0.02 * rng.standard_normal((n, size, size))
    return np.clip(np.rint(img * 255), 0, 255).astype(np.uint8), y


def _npz(path, predictive: str):
    rng = np.random.default_rng(1)
    arrays = {}
    for split, n in (("train", 256), ("val", 64), ("test", 128)):
        im, y = cue_images(n, predictive, rng)
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = im, y[:, None]
    np.savez(path, **arrays)
    return path


def test_cue_conflict_is_a_frequency_split():
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(3, 1, 32, 32, generator=g) * 0.5 + 0.25, torch.rand(3, 1, 32, 32, generator=g) * 0.5 + 0.25
    c = cue_conflict(a, b, 0.04)
    assert c.shape == a.shape and 0 <= c.min() and c.max() <= 1
    assert torch.equal(c, (lowpass(a, 0.04) + b - lowpass(b, 0.04)).clamp(0, 1))

    def corr(u, v):
        u, v = u.flatten() - u.mean(), v.flatten() - v.mean()
        return float(u @ v / (u.norm() * v.norm()))

    def hp(x):
        return x - lowpass(x, 0.04)

    # the fine detail comes from the texture source, the coarse layout from the shape source
    assert corr(hp(c), hp(b)) > 0.9 and abs(corr(hp(c), hp(a))) < 0.2
    assert corr(lowpass(c, 0.1), lowpass(a, 0.1)) > 0.9 and abs(corr(lowpass(c, 0.1), lowpass(b, 0.1))) < 0.3
    same = cue_conflict(a, a, 0.04)
    assert torch.allclose(same, a, atol=1e-6)  # an image in conflict with itself is itself
    t = texture_only(a, 0.04)
    assert torch.allclose(t.mean(dim=(1, 2, 3)), a.mean(dim=(1, 2, 3)), atol=0.02)


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    root = tmp_path_factory.mktemp("planted")
    out = {}
    for predictive in ("texture", "shape"):
        npz = _npz(root / f"{predictive}.npz", predictive)
        out[predictive] = [make_run(root / predictive / f"seed-{s}", npz, s, 3e-3, 30, size=SIZE, val_threshold=True)
                           for s in range(2)]
    return out


def test_models_trained_on_one_cue(planted):
    """A ResNet trained where only the texture predicts the label cannot use the shape cue alone, so
    the gate withholds its score and names the shape cue.  One trained on the shape alone is either
    withheld naming the texture cue, or (where the high-pass band keeps enough of the ellipse's edges
    for the texture-only image to be recognised) scores a clear shape preference."""
    for predictive, other in (("texture", "shape"), ("shape", "texture")):
        for run in planted[predictive]:
            r = shape_bias_probe(run, n_pairs=200, plots=False)
            assert r["n_pairs"] == 200 and [d["n_drawn"] for d in r["directions"].values()] == [100, 100]
            if predictive == "shape":
                assert r["shape_only"]["ci_low"] > 0.8, r  # the trained cue is usable alone
                if r["interpretable"]:
                    assert r["shape_bias"] > 0.7 and r["texture_only"]["ci_low"] > 0.5, r
                    continue
            assert r["interpretable"] is False and r["shape_bias"] is None and r["ci_low"] is None, r
            assert r["reason"].startswith("not interpretable at this setting: ")
            assert f"the {other} cue alone is recognised at balanced accuracy" in r["reason"], r["reason"]
            assert r[f"{other}_only"]["ci_low"] <= 0.5


# ------------------------------------------------------------------------------------ constructed models

CS = 32  # side of the constructed-model images


def both_cue_images(n: int, rng: np.random.Generator, flip_texture: float = 0.0):
    """(uint8 (n,CS,CS), labels): class 1 = a vertical soft ellipse (low frequencies) and vertical
    2-px stripes (the highest frequencies), class 0 = both horizontal.  ``flip_texture``: that share
    of class-1 images carries class 0's stripes instead."""
    y = (np.arange(n) % 2).astype(np.int64)
    rng.shuffle(y)
    g = (np.arange(CS) + 0.5) / CS - 0.5
    yy, xx = np.meshgrid(g, g, indexing="ij")
    cy, cx = rng.uniform(-0.05, 0.05, (2, n, 1, 1))
    vert = y.astype(bool)[:, None, None]
    rx, ry = np.where(vert, 0.16, 0.36), np.where(vert, 0.36, 0.16)
    shape = 1 / (1 + np.exp((((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 - 1) * 3))
    t_cls = y.astype(bool) & ~(rng.random(n) < flip_texture)
    phase = rng.integers(0, 2, (n, 1, 1))
    ii = np.arange(CS)
    rows = (ii[None, :, None] + phase) % 2 * np.ones((1, 1, CS))
    cols = (ii[None, None, :] + phase) % 2 * np.ones((1, CS, 1))
    tex = np.where(t_cls[:, None, None], cols, rows)
    img = 0.3 + 0.35 * shape + 0.12 * (tex - 0.5) + 0.02 * rng.standard_normal((n, CS, CS))
    return np.clip(np.rint(img * 255), 0, 255).astype(np.uint8), y


class CueModel(torch.nn.Module):
    """logit(class 1) = w_low * low + w_high * high + 0.25: ``low`` = the vertical-minus-horizontal
    layout of the image blurred with σ = 3 px, ``high`` = horizontal minus vertical squared neighbour
    differences, each scaled to about ±1 on the clean images.  Near-zero features answer class 1."""

    LOW, HIGH = 0.0021, 0.0151  # mean |feature| on clean both_cue_images

    def __init__(self, w_low: float, w_high: float):
        super().__init__()
        self.w_low, self.w_high = w_low, w_high
        g = (torch.arange(CS) + 0.5) / CS - 0.5
        yy, xx = torch.meshgrid(g, g, indexing="ij")
        self.register_buffer("layout", yy ** 2 - xx ** 2)

    def forward(self, x):
        from medtl.probes.corruptions import blur

        low = (blur(x, 3.0)[:, 0] * self.layout).mean((1, 2)) / self.LOW
        dx = (x[..., :, 1:] - x[..., :, :-1]).pow(2).mean((1, 2, 3))
        dy = (x[..., 1:, :] - x[..., :-1, :]).pow(2).mean((1, 2, 3))
        logit = self.w_low * low + self.w_high * (dx - dy) / self.HIGH + 0.25
        return torch.stack([torch.zeros_like(logit), logit], 1)


def probe_run(model, images, labels, tmp_path):
    from medtl.probes.runs import ProbeRun

    return ProbeRun(path=tmp_path, cfg=None, model=model, classes=["normal", "pneumonia"], task="binary",
                    threshold=0.5, images=images, labels=labels, ids=[str(i) for i in range(len(labels))],
                    device=torch.device("cpu"))


@pytest.fixture(scope="module")
def cue_set():
    return both_cue_images(240, np.random.default_rng(0))


@pytest.mark.parametrize("w_low,w_high,expect", [(1.0, 0.5, "shape"), (0.5, 1.0, "texture")])
def test_the_dominant_frequency_band_sets_the_shape_bias(cue_set, tmp_path, w_low, w_high, expect):
    r = compute_shape_bias(probe_run(CueModel(w_low, w_high), *cue_set, tmp_path), n_pairs=200, plots=False)
    assert r["interpretable"] and r["reason"] is None, r["reason"]
    for cue in ("shape_only", "texture_only"):  # both cues usable alone
        assert r[cue]["balanced_acc"] > 0.95 and r[cue]["ci_low"] > 0.9
        assert set(r[cue]["per_class"]) == {"normal", "pneumonia"}
    assert (r["shape_bias"] > 0.95) if expect == "shape" else (r["shape_bias"] < 0.05), r["shape_bias"]
    assert r["ci_low"] <= r["shape_bias"] <= r["ci_high"]
    dirs = r["directions"]
    assert set(dirs) == {"shape=normal,texture=pneumonia", "shape=pneumonia,texture=normal"}
    for d in dirs.values():
        assert d["n_decided"] == d["n_qualified"] == d["n_shape"] + d["n_texture"]  # binary: always one source
    assert r["shape_bias"] == pytest.approx(np.mean([d["shape_fraction"] for d in dirs.values()]))


def test_a_model_that_ignores_texture_is_not_interpretable(cue_set, tmp_path):
    """Reads the blurred layout only: texture-only images all get one answer (balanced accuracy 0.5)."""
    r = compute_shape_bias(probe_run(CueModel(1.0, 0.0), *cue_set, tmp_path), n_pairs=200, plots=False)
    assert r["interpretable"] is False and r["shape_bias"] is None
    assert r["shape_only"]["ci_low"] > 0.9 and r["texture_only"]["balanced_acc"] == pytest.approx(0.5)
    assert "the texture cue alone is recognised at balanced accuracy 0.50 (95% CI" in r["reason"]
    assert "not clearly above chance" in r["reason"] and "shape cue alone" not in r["reason"]
    # nothing qualifies in the direction whose texture source the model cannot recognise alone
    assert r["directions"]["shape=pneumonia,texture=normal"]["n_qualified"] == 0


def test_only_pairs_with_correctly_classified_single_cue_images_count(tmp_path):
    """Half the pneumonia images carry normal's stripes: their texture-only image is classified
    'normal', so they never serve as pneumonia texture sources.  A texture-led model then still
    scores near 0; were those pairs counted, their decisions (normal, the shape source's class)
    would look like shape decisions."""
    images, y = both_cue_images(240, np.random.default_rng(1), flip_texture=0.5)
    r = compute_shape_bias(probe_run(CueModel(0.5, 1.0), images, y, tmp_path), n_pairs=200, plots=False)
    assert r["interpretable"], r["reason"]
    d = r["directions"]["shape=normal,texture=pneumonia"]
    assert d["n_drawn"] == 100 and 30 <= d["n_qualified"] <= 70  # about half the pneumonia textures fail alone
    assert r["directions"]["shape=pneumonia,texture=normal"]["n_qualified"] == 100
    assert r["n_qualified"] == sum(x["n_qualified"] for x in r["directions"].values())
    assert d["shape_fraction"] < 0.05 and r["shape_bias"] < 0.05
    per = r["texture_only"]["per_class"]["pneumonia"]
    assert 0.3 < per["acc"] < 0.7 and r["texture_only"]["balanced_acc"] == pytest.approx(
        (per["acc"] + r["texture_only"]["per_class"]["normal"]["acc"]) / 2)


def test_balanced_two_direction_score_of_a_constant_model_is_one_half(cue_set, tmp_path):
    from medtl.probes.shape_bias import balanced_score, direction_scores

    ya = np.r_[np.zeros(60, int), np.ones(40, int)]
    yb = 1 - ya
    for answer in (0, 1):  # uneven directions; every pair counted
        dirs = direction_scores(ya, yb, np.full(100, answer), np.ones(100, bool), ["normal", "pneumonia"])
        fractions = sorted(d["shape_fraction"] for d in dirs.values())
        assert fractions == [0.0, 1.0]
        s = balanced_score(dirs)
        assert s["shape_bias"] == 0.5 and s["ci_low"] < 0.5 < s["ci_high"]
    # and through the probe, a constant model's cues are at chance: not interpretable
    r = compute_shape_bias(probe_run(CueModel(0.0, 0.0), *cue_set, tmp_path), n_pairs=100, plots=False)
    assert not r["interpretable"] and "shape cue alone" in r["reason"] and "texture cue alone" in r["reason"]


def test_too_few_qualifying_pairs_are_not_interpretable(cue_set, tmp_path):
    r = compute_shape_bias(probe_run(CueModel(1.0, 0.5), *cue_set, tmp_path), n_pairs=20, plots=False)
    assert not r["interpretable"] and "only 20 cue-conflict pairs qualified" in r["reason"]
    assert "at least 30 needed)" in r["reason"]


def test_shape_bias_probe_caches_plots_and_refuses_bad_input(tmp_path):
    run = tiny_runs()["a0"]
    r = shape_bias_probe(run, n_pairs=40)
    assert not r["cached"] and (run / "probes" / "shape_bias.json").is_file()
    assert (run / "probes" / r["plots"]["examples"]).stat().st_size > 1000
    assert shape_bias_probe(run, n_pairs=40)["cached"]
    assert not shape_bias_probe(run, n_pairs=40, sigma=0.08)["cached"]
    stored = json.loads((run / "probes" / "shape_bias.json").read_text())
    assert stored["params"]["sigma"] == 0.08 and stored["params"]["layout"] == LAYOUT and "ids" not in json.dumps(stored)
    assert {"interpretable", "reason", "shape_bias", "ci_low", "ci_high", "shape_only", "texture_only",
            "n_qualified", "directions", "chance"} <= set(stored)
    # a result of the old layout (same parameters) is recomputed
    old = dict(stored, key="0000000000000000")
    (run / "probes" / "shape_bias.json").write_text(json.dumps(old))
    assert not shape_bias_probe(run, n_pairs=40, sigma=0.08)["cached"]
    with pytest.raises(MedtlError, match="sigma"):
        shape_bias_probe(run, sigma=0.7)
    with pytest.raises(MedtlError, match="n_pairs"):
        shape_bias_probe(run, n_pairs=0)
    with pytest.raises(MedtlError, match="min_pairs"):
        shape_bias_probe(run, min_pairs=0)
    with pytest.raises(MedtlError):
        shape_bias_probe(tmp_path)  # not a run folder


def test_cli_shape_bias(capsys, tmp_path):
    from medtl.cli import run as cli_run

    run = tiny_runs()["b0"]
    assert cli_run(["probe", "shape-bias", str(run), "--n-pairs", "24"]) == 0
    out = capsys.readouterr().out
    assert ("shape bias" in out or "no shape bias" in out) and "shape_bias.json" in out
    assert cli_run(["probe", "shape-bias", str(tmp_path), "--n-pairs", "24"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("medtl: error:") and len(err.strip().splitlines()) == 1


def test_many_classes_are_scored_pooled_without_a_quota_per_direction():
    """K > 2 (e.g. a fractal source with 20 classes: 380 directions, a pair or two each): Geirhos'
    pooled fraction, gated on the total, not on every direction having pairs."""
    def d(n_q, n_s, n_t):
        return {"n_qualified": n_q, "n_shape": n_s, "n_texture": n_t, "n_decided": n_s + n_t}

    dirs = {f"shape={a},texture={b}": d(0, 0, 0) for a in "abc" for b in "abc" if a != b}
    dirs["shape=a,texture=b"] = d(30, 24, 4)      # 2 decisions follow the third class
    dirs["shape=b,texture=c"] = d(12, 6, 6)
    cue = {"balanced_acc": 0.9, "ci_low": 0.8, "ci_high": 0.95}
    assert gate(cue, cue, 1 / 3, dirs, 30) == []  # 42 qualified; four directions have none
    s = pooled_score(dirs)
    assert s["shape_bias"] == pytest.approx(30 / 40) and s["ci_low"] < 0.75 < s["ci_high"]
    assert gate(cue, cue, 1 / 3, dirs, 50)[0].startswith("only 42 cue-conflict pairs qualified")
    binary = {"shape=a,texture=b": d(30, 24, 6), "shape=b,texture=a": d(0, 0, 0)}
    assert any("for shape=b,texture=a" in r for r in gate(cue, cue, 0.5, binary, 30))  # binary keeps its quota
