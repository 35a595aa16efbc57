"""Training inputs that carry one cue only (``data.augment.cue``): models whose cue use is known.

The shape-bias probe (:mod:`medtl.probes.shape_bias`) can only be trusted if it ranks models whose
cue use is known by construction the right way round.  These transforms make such models: with
probability ``p`` per training image and epoch, the image is replaced by one of

* ``lowpass``: a Gaussian blur (separable, reflect padding) of σ = ``sigma`` x the shorter side:
  the layout (lung fields, opacities, outlines) is kept and fine texture removed: *shape only*;
* ``highpass``: ``x - lowpass(x) + mean(x)``, clamped to [0, 1]: fine texture on the image's own
  mean intensity, layout removed: *texture only*;
* ``patch_shuffle``: the image cut into ``grid`` x ``grid`` tiles, permuted at random: local
  texture kept, global layout destroyed (where the side is not a multiple of ``grid`` the last
  rows/columns, fewer than ``grid``, stay in place);
* ``conflict_shape``: ``lowpass(x) + highpass(z) - mean(z)`` with ``z`` a training image of another
  class, keeping x's label: a cue conflict resolved by *shape*;
* ``conflict_texture``: ``lowpass(z) + x - lowpass(x)``, keeping x's label: resolved by *texture*.

``kind`` may be a list: each replaced image then gets one of the listed kinds, drawn uniformly.
Single-cue training alone makes a model that cannot read the other cue at all (a lowpass-only
model sees a texture-only image as flat grey), and the shape-bias probe rightly calls such a
model "not interpretable"; a model trained on ``[lowpass, highpass, conflict_shape]`` reads both
cues alone and, by construction, follows shape when they conflict (``conflict_texture``: texture).
The conflict kinds use the probe's own construction: they exist to validate the probe, never as
an augmentation under comparison.

The blur is the same filter as the probes' (:func:`medtl.probes.corruptions.blur`: the same
Gaussian taps and reflect padding), written here so that data code never imports the probes, and
applied as two matrix products (tested equal to the probes' convolution to float rounding).  A model trained on ``lowpass`` inputs alone should
score a high shape bias, one trained on ``highpass`` or ``patch_shuffle`` a low one.

Determinism: which images are replaced in epoch ``e``, and each image's tile permutation, are
drawn for the whole training set at the start of the epoch from
``numpy.random.default_rng([seed, epoch, STREAM])`` (a stream of its own, distinct from the data
order, the augmentation and the stylize plan), so they are a function of (seed, epoch, dataset
index) only: neither batch order nor resuming changes them.  Training only: val and test are
never filtered.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from ..errors import ConfigError

#: seed stream of the cue plan (distinct from the data-order, augmentation and stylize streams)
STREAM = 0xC0E5
KINDS = ("lowpass", "highpass", "patch_shuffle", "conflict_shape", "conflict_texture")
CONFLICTS = ("conflict_shape", "conflict_texture")


def gaussian_kernel(sigma: float) -> torch.Tensor:
    """A normalised 1-D Gaussian of σ px, radius ceil(3σ) (at least 1)."""
    r = max(1, int(math.ceil(3 * sigma)))
    t = torch.arange(-r, r + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


@lru_cache(maxsize=32)
def blur_matrix(n: int, sigma: float, r: int) -> torch.Tensor:
    """(n, n) float32: the 1-D Gaussian blur of σ px, cut to radius ``r`` and renormalised, with
    reflect padding (index -1 reads 1, index n reads n-2), as a matrix: ``M @ v`` blurs ``v``."""
    k = gaussian_kernel(sigma).double()
    k = k[len(k) // 2 - r: len(k) // 2 + r + 1]
    k = k / k.sum()
    m = torch.zeros(n, n, dtype=torch.float64)
    rows = torch.arange(n)
    for t in range(-r, r + 1):
        j = (rows + t).abs()
        j = torch.where(j > n - 1, 2 * (n - 1) - j, j)
        m.index_put_((rows, j), k[t + r].expand(n), accumulate=True)
    return m.float()


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (B,C,H,W) with reflect padding, radius ceil(3σ) cut to fit the
    image: the filter of :func:`medtl.probes.corruptions.blur`, applied as two small matrix products
    (the same linear map; 15-60x faster than the depthwise convolution on CPU)."""
    h, w = x.shape[-2:]
    r = min(len(gaussian_kernel(sigma)) // 2, h - 1, w - 1)
    mh = blur_matrix(h, float(sigma), r).to(device=x.device, dtype=x.dtype)
    mw = mh if w == h else blur_matrix(w, float(sigma), r).to(device=x.device, dtype=x.dtype)
    return torch.matmul(torch.matmul(mh, x), mw.T)


def lowpass(x: torch.Tensor, sigma_frac: float) -> torch.Tensor:
    """Gaussian low-pass of (B,C,H,W) images, σ = ``sigma_frac`` x the shorter side (px)."""
    return gaussian_blur(x, max(1e-3, sigma_frac * min(x.shape[-2:])))


def highpass(x: torch.Tensor, sigma_frac: float) -> torch.Tensor:
    """``x - lowpass(x) + mean(x)`` per image, clamped to [0, 1]."""
    return (x - lowpass(x, sigma_frac) + x.mean(dim=(1, 2, 3), keepdim=True)).clamp(0.0, 1.0)


def patch_shuffle(x: torch.Tensor, perm: torch.Tensor, grid: int) -> torch.Tensor:
    """(B,C,H,W) with its ``grid`` x ``grid`` tiles rearranged: tile ``t`` (row-major) of the output
    is tile ``perm[b, t]`` of the input.  Tiles are ``H // grid`` x ``W // grid`` px; the remainder
    rows/columns stay in place."""
    b, c, h, w = x.shape
    th, tw = h // grid, w // grid
    if th < 1 or tw < 1:
        raise ConfigError(f"data.augment.cue.grid: {grid} tiles per side need images of at least {grid} px "
                          f"(got {h}x{w})")
    core = x[:, :, :grid * th, :grid * tw].reshape(b, c, grid, th, grid, tw).permute(0, 2, 4, 1, 3, 5)
    tiles = core.reshape(b, grid * grid, c, th, tw)
    moved = tiles[torch.arange(b, device=x.device)[:, None], perm.to(x.device)]
    moved = moved.reshape(b, grid, grid, c, th, tw).permute(0, 3, 1, 4, 2, 5).reshape(b, c, grid * th, grid * tw)
    out = x.clone()
    out[:, :, :grid * th, :grid * tw] = moved
    return out


@dataclass
class CuePlan:
    """One epoch's plan: ``apply[i]`` whether training image ``i`` is replaced, ``which[i]`` the index
    of its kind in ``kinds``, ``perm[i]`` its tile permutation (patch_shuffle), ``partner[i]`` the
    training image of another class it conflicts with (conflict kinds)."""

    kinds: list[str]
    apply: np.ndarray
    which: np.ndarray
    perm: np.ndarray | None
    partner: np.ndarray | None
    sigma: float
    grid: int


def _kinds(cue) -> list[str]:
    kinds = [cue.kind] if isinstance(cue.kind, str) else list(cue.kind)
    bad = [k for k in kinds if k not in KINDS]
    if bad or not kinds:
        raise ConfigError(f"data.augment.cue.kind: {bad or kinds!r} has no plan (use one or a list of {', '.join(KINDS)})")
    return kinds


def _partners(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """For each image, a random training image of another class."""
    labels = np.asarray(labels).astype(np.int64).ravel()
    out = np.zeros(len(labels), dtype=np.int64)
    classes = np.unique(labels)
    if len(classes) < 2:
        raise ConfigError("data.augment.cue: the conflict kinds need training images of at least two classes")
    pools = {c: np.flatnonzero(labels != c) for c in classes}
    draw = rng.random(len(labels))
    for c in classes:
        sel = labels == c
        pool = pools[c]
        out[sel] = pool[(draw[sel] * len(pool)).astype(np.int64)]
    return out


def cue_plan(n: int, cue, seed: int, epoch: int, labels: np.ndarray | None = None) -> CuePlan:
    """The plan of ``cue`` (a :class:`medtl.config.CueConfig`) for ``n`` training images in ``epoch``
    (``labels``: the training labels, needed by the conflict kinds)."""
    kinds = _kinds(cue)
    rng = np.random.default_rng([int(seed) % (2**63), int(epoch), STREAM])
    apply = rng.random(n) < cue.p
    which = rng.integers(0, len(kinds), n) if len(kinds) > 1 else np.zeros(n, dtype=np.int64)
    perm = partner = None
    if "patch_shuffle" in kinds:
        perm = rng.permuted(np.tile(np.arange(cue.grid * cue.grid, dtype=np.int64), (n, 1)), axis=1)
    if any(k in CONFLICTS for k in kinds):
        if labels is None:
            raise ConfigError("data.augment.cue: the conflict kinds need the training labels")
        partner = _partners(labels, rng)
    return CuePlan(kinds=kinds, apply=apply, which=which, perm=perm, partner=partner, sigma=float(cue.sigma),
                   grid=int(cue.grid))


def _one_kind(kind: str, x: torch.Tensor, plan: CuePlan, idx: np.ndarray, images: torch.Tensor | None) -> torch.Tensor:
    if kind == "lowpass":
        return lowpass(x, plan.sigma).clamp_(0.0, 1.0)
    if kind == "highpass":
        return highpass(x, plan.sigma)
    if kind == "patch_shuffle":
        return patch_shuffle(x, torch.from_numpy(plan.perm[idx]), plan.grid)
    z = images[torch.from_numpy(plan.partner[idx])].float().div_(255.0).to(x.device)
    shape, texture = (x, z) if kind == "conflict_shape" else (z, x)
    return (lowpass(shape, plan.sigma) + texture - lowpass(texture, plan.sigma)).clamp_(0.0, 1.0)


def cue_images(x: torch.Tensor, plan: CuePlan, idx: np.ndarray, images: torch.Tensor | None = None) -> torch.Tensor:
    """Every image of ``x`` (B,C,H,W in [0,1]) in its planned cue version; ``idx`` are their dataset
    indices, ``images`` the uint8 training images (conflict partners)."""
    which = plan.which[idx]
    out = x.clone()
    for k, kind in enumerate(plan.kinds):
        sel = which == k
        if sel.any():
            sel_t = torch.from_numpy(sel).to(x.device)
            out[sel_t] = _one_kind(kind, x[sel_t], plan, idx[sel], images)
    return out


def cue_batch(x: torch.Tensor, idx: torch.Tensor, plan: CuePlan, images: torch.Tensor | None = None) -> torch.Tensor:
    """The batch ``x`` (float (B,1,H,W) in [0,1], training images ``idx``) with the images the plan
    selects replaced by their cue version; a new tensor (``x`` is not modified), or ``x`` itself when
    the plan selects none of them."""
    ii = idx.numpy()
    sel = plan.apply[ii]
    if not sel.any():
        return x
    sel_t = torch.from_numpy(sel).to(x.device)
    out = x.clone()
    out[sel_t] = cue_images(x[sel_t], plan, ii[sel], images)
    return out


def check_cue(cue, side: int) -> None:
    """One-line ConfigError when ``cue`` cannot work on ``side`` px inputs."""
    if "patch_shuffle" in _kinds(cue) and cue.grid > side:
        raise ConfigError(f"data.augment.cue.grid: {cue.grid} tiles per side need inputs of at least {cue.grid} px "
                          f"(this run feeds {side} px)")
