"""Shape vs texture on a point-set source domain (formula-driven fractals): a cue-conflict built
from an image's *silhouette* and another image's *point pattern*, for checking a `sin` source
backbone on its own domain (issue 22).

Why not the X-ray shape-bias probe (:mod:`medtl.probes.shape_bias`): its cue-conflict image is
``lowpass(A) + highpass(B)``.  A fractal rendered as a binary point set keeps its outline edges
in the high-pass, so the probe's "texture" image carries shape there (measured:
reports/pretrain/shape_bias_source.md).  Here the two cues are separated by construction, in
space rather than in frequency:

* **silhouette(A)**: A's support on a coarse grid.  The image is cut into ``cell`` x ``cell``
  blocks (``cell`` = ``cell_frac`` x side, at least 2 px) and a block is on when at least half of
  its pixels are (a majority vote), then drawn solid.  The outline at the block scale stays; the
  point pattern (isolated points, ragged edges, filaments thinner than the block) goes.
* **texture(B)**: B's point pattern with no layout.  ``patch`` x ``patch`` crops of B
  (``patch_frac`` x side) are taken where B is *mixed* (a crop's on-fraction in [0.15, 0.85],
  i.e. its edges and filaments, where a point set's texture lives; any crop with points if none
  is), and the frame is tiled with crops drawn at random (seeded per image pair), so the global
  shape of B is gone and its local pattern is everywhere.
* **conflict(A, B)** = silhouette(A) x texture(B): A's shape, filled with B's point pattern.
  shape-only(A) = silhouette(A); texture-only(B) = texture(B) over the whole frame.

Which transform families this shares: block majority is a down-sample and threshold; tiling
crops is a spatial rearrangement of B's own pixels at the crop scale.  The `sin` recipe's
default stylize (``stylize_method: scramble``) permutes pixels within small windows and
histogram-matches to a partner: a model trained on it never sees a silhouette filled with another
image's crops.  The ``fill`` stylize (a closed support times a random point texture) *is* of this
probe's family (support x texture), so a `sin`-fill backbone is reported here as a positive
control only, not as the check.

Scores (decisions are argmax):

* ``shape_only`` / ``texture_only``: balanced accuracy with MOVER 95% CIs (as the X-ray probe).
* ``conditioned``: Geirhos et al.'s score over the pairs whose two single-cue images are both
  classified correctly: shape decisions / decisions that follow either source (pooled; Wilson
  CI), with the X-ray probe's gate (``interpretable``, ``reason``).
* ``unconditioned``: the same fraction over *all* pairs.  A model whose training never showed one
  cue cannot qualify pairs (it does not recognise that cue alone), so the controls below are read
  here.

Validated by construction (scripts/pointset_shape_bias.py): a model pretrained only on
silhouettes (no point pattern in any training image) must score near 1, one pretrained only on
texture tiles (no layout in any training image) near 0.
"""
from __future__ import annotations

import math
import time

import numpy as np
import torch
import torch.nn.functional as F

from ..probes.runs import decide
from ..probes.shape_bias import (balanced_accuracy, direction_scores, draw_pairs, gate, pooled_score)

DEFAULTS = {"cell_frac": 1 / 16, "patch_frac": 1 / 4, "n_pairs": 2000, "seed": 0, "min_pairs": 30}
MIXED = (0.15, 0.85)


def _px(side: int, frac: float) -> int:
    return max(2, int(round(frac * side)))


def silhouette(x: torch.Tensor, cell_frac: float = DEFAULTS["cell_frac"]) -> torch.Tensor:
    """(B,1,H,W) in [0,1] -> the support on ``cell`` x ``cell`` blocks by majority, drawn solid."""
    h, w = x.shape[-2:]
    cell = _px(min(h, w), cell_frac)
    on = (F.avg_pool2d(x, cell, cell, ceil_mode=True) >= 0.5).to(x.dtype)
    return on.repeat_interleave(cell, 2).repeat_interleave(cell, 3)[..., :h, :w].contiguous()


def texture_tiles(x: np.ndarray, patch_frac: float, rng: np.random.Generator) -> np.ndarray:
    """uint8 (H,W) -> (H,W) float in [0,1]: the frame tiled with random ``patch``-px crops of
    ``x`` taken where it is mixed (on-fraction in :data:`MIXED`), else where it has points."""
    h, w = x.shape
    p = _px(min(h, w), patch_frac)
    img = x.astype(np.float32) / 255.0
    win = np.lib.stride_tricks.sliding_window_view(img, (p, p))       # (H-p+1, W-p+1, p, p)
    frac = win.mean(axis=(2, 3))
    cand = np.argwhere((frac >= MIXED[0]) & (frac <= MIXED[1]))
    if not len(cand):
        cand = np.argwhere(frac > 0)
    if not len(cand):
        cand = np.argwhere(np.ones_like(frac, bool))
    rows, cols = -(-h // p), -(-w // p)
    pick = cand[rng.integers(0, len(cand), rows * cols)]
    tiles = win[pick[:, 0], pick[:, 1]].reshape(rows, cols, p, p)
    return tiles.transpose(0, 2, 1, 3).reshape(rows * p, cols * p)[:h, :w]


def textures(images: np.ndarray, idx: np.ndarray, patch_frac: float, seed: int, stream: int) -> torch.Tensor:
    """(n,1,H,W) texture tiles of ``images[idx]``; crop draws from (seed, stream, k)."""
    out = [texture_tiles(images[i], patch_frac, np.random.default_rng([seed, stream, k])) for k, i in enumerate(idx)]
    h, w = images.shape[-2:]
    return torch.from_numpy(np.stack(out)[:, None] if out else np.zeros((0, 1, h, w), np.float32))


def _to_float(images: np.ndarray, idx: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images[idx])).unsqueeze(1).float().div_(255.0)


def conflict(images: np.ndarray, pairs: np.ndarray, cell_frac: float, patch_frac: float, seed: int) -> torch.Tensor:
    """(n,1,H,W) cue-conflict images: silhouette(A) x texture(B) for rows (A, B) of ``pairs``."""
    return silhouette(_to_float(images, pairs[:, 0]), cell_frac) * textures(images, pairs[:, 1], patch_frac, seed, 2)


def _decide(proba, x: torch.Tensor, batch_size: int = 512) -> np.ndarray:
    out = [decide(proba(x[i:i + batch_size]), "multiclass", 0.5) for i in range(0, len(x), batch_size)]
    return np.concatenate(out) if out else np.zeros(0, np.int64)


def score_cues(proba, labels: np.ndarray, classes: list[str], shape_x: torch.Tensor, texture_x: torch.Tensor,
               pairs: np.ndarray, conflict_x: torch.Tensor, min_pairs: int = DEFAULTS["min_pairs"]) -> dict:
    """The scores of a cue-conflict experiment (the module docstring): single-cue images of every
    test image, cue-conflict images of ``pairs`` (rows: shape source, texture source)."""
    y, k = np.asarray(labels, np.int64), len(classes)
    shape_dec, tex_dec = _decide(proba, shape_x), _decide(proba, texture_x)
    shape_cue, tex_cue = balanced_accuracy(y, shape_dec, classes), balanced_accuracy(y, tex_dec, classes)
    a, b = pairs[:, 0], pairs[:, 1]
    dec = _decide(proba, conflict_x)
    qualified = (shape_dec[a] == y[a]) & (tex_dec[b] == y[b])
    cond_dirs = direction_scores(y[a], y[b], np.where(qualified, dec, -1), qualified, classes)
    reasons = gate(shape_cue, tex_cue, 1.0 / k, cond_dirs, min_pairs)
    cond = pooled_score(cond_dirs) if not reasons else {"shape_bias": None, "ci_low": None, "ci_high": None}
    uncond = pooled_score(direction_scores(y[a], y[b], dec, np.ones(len(pairs), bool), classes))
    n_follow = int(((dec == y[a]) | (dec == y[b])).sum())
    return {"n_test": int(len(y)), "chance": 1.0 / k, "shape_only": _brief(shape_cue), "texture_only": _brief(tex_cue),
            "n_pairs": int(len(pairs)), "n_qualified": int(qualified.sum()),
            "conditioned": cond | {"interpretable": not reasons,
                                   "reason": ("not interpretable: " + "; ".join(reasons)) if reasons else None},
            "unconditioned": uncond | {"n_follow_either": n_follow,
                                       "follow_either_fraction": n_follow / len(pairs) if len(pairs) else math.nan}}


def pointset_shape_bias(proba, images: np.ndarray, labels: np.ndarray, classes: list[str], *,
                        cell_frac: float = DEFAULTS["cell_frac"], patch_frac: float = DEFAULTS["patch_frac"],
                        n_pairs: int = DEFAULTS["n_pairs"], seed: int = DEFAULTS["seed"],
                        min_pairs: int = DEFAULTS["min_pairs"]) -> dict:
    """The result for a model given as ``proba(x) -> (n, K)`` probabilities of float (n,1,H,W)
    images in [0,1], on uint8 ``images`` (N,H,W) with int ``labels``: see the module docstring."""
    t0 = time.time()
    y = np.asarray(labels, np.int64)
    every = np.arange(len(y))
    pairs = draw_pairs(y, len(classes), n_pairs, np.random.default_rng(seed))
    out = score_cues(proba, y, classes, silhouette(_to_float(images, every), cell_frac),
                     textures(images, every, patch_frac, seed, 1), pairs,
                     conflict(images, pairs, cell_frac, patch_frac, seed), min_pairs)
    side = min(images.shape[-2:])
    return {"kind": "medtl.pointset_shape_bias", **out, "cell_px": _px(side, cell_frac),
            "patch_px": _px(side, patch_frac),
            "params": {"cell_frac": cell_frac, "patch_frac": patch_frac, "n_pairs": n_pairs, "seed": seed,
                       "min_pairs": min_pairs}, "seconds": time.time() - t0}


# ------------------------------------------------------------------ textured fractals (texture: class)

def textured_cues(points: np.ndarray, labels: np.ndarray, pairs: np.ndarray, seed: int = 0
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Single-cue and cue-conflict images of ``builtin:fractaldb`` with ``texture: class``, rendered
    by its own generator from the test images' attractors ``points`` (uint8 (N,H,W), texture
    none): (shape-only: each figure with no stripes, ground dim as in training; texture-only:
    each class's stripes over the whole frame, no figure; conflict: A's figure over B's stripes).
    Phases are drawn from (seed, stream, index)."""
    from ..data.fractaldb import GROUND, class_texture, support, textured

    figs = support(points)
    y = np.asarray(labels, np.int64)
    n, size = len(y), points.shape[-1]
    flat = np.full((size, size), 0.5)
    shape_x = np.rint(255 * flat * np.where(figs, 1.0, GROUND)).astype(np.uint8)
    full = np.ones((size, size), bool)

    def phase(stream: int, i: int) -> float:
        return float(np.random.default_rng([seed, stream, i]).uniform(0, 2 * np.pi))

    texture_x = np.stack([textured(full, *class_texture(int(c), size), phase(1, i)) for i, c in enumerate(y)]) \
        if n else np.zeros((0, size, size), np.uint8)
    conflict_x = np.stack([textured(figs[a], *class_texture(int(y[b]), size), phase(2, i))
                           for i, (a, b) in enumerate(pairs)]) if len(pairs) else np.zeros((0, size, size), np.uint8)
    every = np.arange(n)
    return (_to_float(shape_x, every), _to_float(texture_x, every), _to_float(conflict_x, np.arange(len(pairs))))


def textured_shape_bias(proba, points: np.ndarray, labels: np.ndarray, classes: list[str], *,
                        n_pairs: int = DEFAULTS["n_pairs"], seed: int = DEFAULTS["seed"],
                        min_pairs: int = DEFAULTS["min_pairs"]) -> dict:
    """Shape vs texture of a model on textured fractals: its decisions on A's figure drawn with
    B's class stripes (:func:`textured_cues`), scored as the point-set probe is."""
    t0 = time.time()
    y = np.asarray(labels, np.int64)
    pairs = draw_pairs(y, len(classes), n_pairs, np.random.default_rng(seed))
    shape_x, texture_x, conflict_x = textured_cues(points, y, pairs, seed)
    out = score_cues(proba, y, classes, shape_x, texture_x, pairs, conflict_x, min_pairs)
    return {"kind": "medtl.textured_shape_bias", **out, "params": {"n_pairs": n_pairs, "seed": seed,
                                                                   "min_pairs": min_pairs},
            "seconds": time.time() - t0}


def _brief(cue: dict) -> dict:
    return {key: cue[key] for key in ("balanced_acc", "ci_low", "ci_high")}
