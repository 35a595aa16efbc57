"""Shape-bias probe: the cue-conflict construction, and the issue's acceptance test on planted cues.

Images carry a *shape* cue (a large, soft ellipse, horizontal or vertical: low frequencies) and a
*texture* cue (2-px stripes, horizontal or vertical: the highest frequencies), kept separable by
the probe's frequency split.  A model trained where only the texture predicts the label must score
shape bias < 0.3, one trained where only the shape predicts it > 0.7, on each of 5 seeds.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from test_probes_helpers import make_run, tiny_runs

from medtl.errors import MedtlError
from medtl.probes.shape_bias import cue_conflict, lowpass, shape_bias_probe, texture_only

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
                           for s in range(5)]
    return out


def test_planted_cues_give_the_expected_shape_bias(planted):
    """The issue's acceptance test: texture-only training < 0.3, shape-only training > 0.7, every seed."""
    for predictive, bound in (("texture", lambda v: v < 0.3), ("shape", lambda v: v > 0.7)):
        for run in planted[predictive]:
            r = shape_bias_probe(run, n_pairs=200, plots=False)
            assert r["n_pairs"] == 200 and r["n_decided"] == 200  # binary: every decision is one of the two
            assert bound(r["shape_bias"]), (predictive, run.name, r["shape_bias"])
            assert r["ci_low"] <= r["shape_bias"] <= r["ci_high"]
            # the cue the model was not trained on tells it nothing on its own
            assert r["texture_only_acc" if predictive == "shape" else "shape_only_acc"] < 0.7, r
            if predictive == "shape":  # (the texture residual alone, on a flat mean, is off-distribution)
                assert r["shape_only_acc"] > 0.8, r
            dirs = r["directions"]
            assert len(dirs) == 2 and sum(d["n"] for d in dirs.values()) == 200  # balanced both ways


def test_shape_bias_probe_caches_plots_and_refuses_bad_input(tmp_path):
    run = tiny_runs()["a0"]
    r = shape_bias_probe(run, n_pairs=40)
    assert not r["cached"] and (run / "probes" / "shape_bias.json").is_file()
    assert (run / "probes" / r["plots"]["examples"]).stat().st_size > 1000
    assert shape_bias_probe(run, n_pairs=40)["cached"]
    assert not shape_bias_probe(run, n_pairs=40, sigma=0.08)["cached"]
    stored = json.loads((run / "probes" / "shape_bias.json").read_text())
    assert stored["params"]["sigma"] == 0.08 and "ids" not in json.dumps(stored)
    with pytest.raises(MedtlError, match="sigma"):
        shape_bias_probe(run, sigma=0.7)
    with pytest.raises(MedtlError, match="n_pairs"):
        shape_bias_probe(run, n_pairs=0)
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
