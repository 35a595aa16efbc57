"""Shortcut probes: the classical lung mask, lung-field masking (planted corner marker flagged,
lung signal not), "name the source", caching, CLI and bad input.  16-px in-process runs."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from test_probes_helpers import make_run

from medtl.cli import run as cli
from medtl.data import synthetic
from medtl.errors import MedtlError
from medtl.probes.lungmask import border_band, lung_masks, prior_mask
from medtl.probes.shortcut import fill_outside, shortcut_probe, source_probe

SIZE = 16
STEPS = 30


def _chest(n: int, rng: np.random.Generator, kind: str, style: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Chest-like images: a body ellipse with two dark lung ellipses.  ``kind`` 'lung': class 1
    has a bright blob inside a lung; 'marker': class 1 has a bright square in the top-left corner
    and the lung blob is present at random (uninformative).  ``style`` 1: another "scanner"
    (brighter, flatter, noisier)."""
    y = (rng.random(n) < 0.5).astype(np.int64)
    g = (np.arange(SIZE) + 0.5) / SIZE
    R, C = np.meshgrid(g, g, indexing="ij")
    R, C = R[None], C[None]
    j = lambda s: rng.uniform(-s, s, (n, 1, 1))  # noqa: E731
    body = ((R - 0.58 - j(0.02)) / 0.52) ** 2 + ((C - 0.5 - j(0.02)) / (0.43 + j(0.02))) ** 2 < 1
    img = 0.05 + 0.55 * body
    lcy = 0.45 + j(0.03)
    lungs = np.zeros_like(body)
    for cx in (0.3, 0.7):
        lungs |= ((R - lcy) / (0.27 + j(0.02))) ** 2 + ((C - cx - j(0.015)) / 0.11) ** 2 < 1
    img = img - 0.32 * lungs
    blob = y if kind == "lung" else (rng.random(n) < 0.5).astype(np.int64)
    by, bx = lcy + j(0.1), np.where(rng.random(n) < 0.5, 0.3, 0.7)[:, None, None] + j(0.03)
    img = img + 0.3 * blob[:, None, None] * np.exp(-((R - by) ** 2 + (C - bx) ** 2) / (2 * 0.05 ** 2))
    if kind == "marker":
        img[y == 1, :3, :3] = 1.0
    if style:
        img = 0.35 + 0.6 * img
    img = img + (0.09 if style else 0.03) * rng.standard_normal(img.shape)
    return np.clip(np.rint(img * 255), 0, 255).astype(np.uint8), y


def _npz(path: Path, kind: str, seed: int, style: int = 0, n=(256, 64, 128)) -> Path:
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, k in zip(("train", "val", "test"), n):
        im, y = _chest(k, rng, kind, style)
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = im, y[:, None]
    np.savez(path, **arrays)
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory, monkeypatch_module):
    root = tmp_path_factory.mktemp("shortcut")
    monkeypatch_module.setenv("MEDTL_CACHE", str(root / "cache"))
    torch.set_num_threads(min(2, torch.get_num_threads()))
    out = {"root": root}
    for kind in ("marker", "lung"):
        out[kind] = make_run(root / kind, _npz(root / f"{kind}.npz", kind, 0), 0, 3e-3, STEPS, size=SIZE)
    return out


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def _synthetic_lungs(indices, size: int) -> np.ndarray:
    """The lung ellipses of medtl.data.synthetic's renderer (same geometry, q < 1)."""
    P = synthetic._params("test", np.asarray(indices), size)
    c = lambda k: P[k].astype(np.float32)[:, None, None]  # noqa: E731
    g = (np.arange(size, dtype=np.float32) + 0.5) / size * 2 - 1
    V, U = np.meshgrid(g, g, indexing="ij")
    cos, sin, s = np.cos(c("rot")), np.sin(c("rot")), c("scale")
    du, dv = U[None] - c("tx"), V[None] - c("ty")
    u, v = (cos * du + sin * dv) / s, (-sin * du + cos * dv) / s
    out = np.zeros(u.shape, bool)
    for side in (-1.0, 1.0):
        width = c("lung_w") * (0.8 + 0.25 * np.clip((v - c("lung_cy")) / c("lung_h"), -1, 1))
        out |= ((u - side * c("lung_dx")) / width) ** 2 + ((v - c("lung_cy")) / c("lung_h")) ** 2 < 1
    return out


@pytest.mark.parametrize("size", [16, 64, 128])
def test_lung_mask_on_synthetic_chests(size):
    n = 24
    images, _, _ = synthetic.generate("test", range(n), size)
    lm = lung_masks(images)
    truth = _synthetic_lungs(range(n), size)
    assert lm.masks.shape == images.shape and lm.masks.dtype == bool
    assert lm.n_fallback <= n // 4
    ok = ~lm.fallback
    iou = (lm.masks & truth).reshape(n, -1).sum(1) / (lm.masks | truth).reshape(n, -1).sum(1)
    assert np.median(iou[ok]) > 0.6
    assert np.all((0.05 <= lm.area_fraction) & (lm.area_fraction <= 0.6))


def test_lung_mask_falls_back_and_bands():
    rng = np.random.default_rng(0)
    flat = np.full((3, 32, 32), 128, np.uint8)
    noise = rng.integers(0, 256, (10, 32, 32)).astype(np.uint8)
    lm = lung_masks(np.concatenate([flat, noise]))
    assert lm.fallback.all() and np.array_equal(lm.masks[0], prior_mask(32, 32))
    big = lung_masks(np.full((1024, 1024), 7, np.uint8))      # any size, one image
    assert big.n_fallback == 1 and 0.3 < big.area_fraction[0] < 0.42
    framed, _, _ = synthetic.generate("test", range(8), 64)   # a black frame around the image
    framed = np.pad(framed[:, 6:-6, 6:-6], ((0, 0), (6, 6), (6, 6)))
    assert lung_masks(framed).n_fallback <= 2
    b = border_band(16, band=0.125)
    assert b[:2].all() and b[:, -2:].all() and not b[2:-2, 2:-2].any()
    with pytest.raises(MedtlError):
        border_band(16, band=0.6)
    im = np.array([[[10, 20], [30, 250]]], np.uint8)
    filled = fill_outside(im, np.array([[True, True], [True, False]]))
    assert filled[0, 1, 1] == 20 and filled[0, 0, 0] == 10        # median of the kept pixels only


def test_marker_flagged_lung_signal_not(runs):
    """The issue's acceptance test: a planted corner marker that carries the label is flagged;
    the same set with the label in the lungs (no marker) is not."""
    m = shortcut_probe(runs["marker"], n_images=96)
    assert m["variants"]["full"]["auc"] > 0.9, m["variants"]
    assert m["flagged"] and m["masked_retention"] >= 0.75
    assert m["variants"]["border_only"]["auc"] > 0.8
    assert "Shortcut suspected" in m["verdict"]
    lung = shortcut_probe(runs["lung"], n_images=96)
    assert lung["variants"]["full"]["auc"] > 0.75, lung["variants"]
    assert not lung["flagged"] and lung["masked_retention"] < 0.5
    assert lung["variants"]["lung_masked"]["auc"] < 0.7
    for r in (m, lung):
        assert set(r["variants"]) == {"full", "lung_masked", "lung_only", "border_only"}
        assert 0 <= r["mask_fallback"] <= r["n_images"] and 0.05 < r["lung_area_fraction"] < 0.6
    png = runs["marker"] / "probes" / m["plots"]["masks"]
    assert png.name == "shortcut_masks.png" and png.stat().st_size > 1000
    # caching: same params cached, changed params recompute
    again = shortcut_probe(runs["marker"], n_images=96)
    assert again["cached"] and again["key"] == m["key"]
    other = shortcut_probe(runs["marker"], n_images=96, band=0.2)
    assert not other["cached"] and other["key"] != m["key"]
    saved = json.loads((runs["marker"] / "probes" / "shortcut.json").read_text())
    assert saved["params"]["band"] == 0.2 and "npz:" not in json.dumps(saved)  # no image ids


def test_source_probe(runs):
    root = runs["root"]
    other = _npz(root / "other_scanner.npz", "lung", 100, style=1)
    same = _npz(root / "same_source.npz", "lung", 101)
    a = source_probe(runs["lung"], str(other), n_images=64)
    assert a["auc"] > 0.9 and a["warn"] and a["n_per_source"] == 64 and a["ci_low"] <= a["auc"] <= a["ci_high"]
    b = source_probe(runs["lung"], str(same), n_images=64)
    assert b["auc"] < 0.7 and not b["warn"]
    assert source_probe(runs["lung"], str(same), n_images=64)["cached"]
    np.savez(same, **dict(np.load(other)))                   # same path, new content: recomputed
    assert not source_probe(runs["lung"], str(same), n_images=64)["cached"]


def test_cli_and_bad_input(runs, tmp_path, capsys):
    assert cli(["probe", "shortcut", str(runs["marker"]), "--n-images", "96", "--band", "0.2"]) == 0
    out = capsys.readouterr().out
    assert "lung_masked: AUC=" in out and "flagged: True" in out and "shortcut.json" in out
    (tmp_path / "x.txt").write_text("hi")
    assert cli(["probe", "shortcut", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "not a finished medtl run folder" in err and "\n" not in err
    assert cli(["probe", "shortcut", str(runs["marker"]), "--source-data", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip()
    assert "nope: no such file or directory" in err and "\n" not in err
    for fn in (shortcut_probe, lambda d: source_probe(d, str(tmp_path))):
        with pytest.raises(MedtlError):
            fn(tmp_path)
