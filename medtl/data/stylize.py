"""Stylized X-ray augmentation (``data.augment.stylize``): texture scramble and intensity style.

Geirhos et al. (ICLR 2019) trained on ImageNet images whose texture was replaced by a painting's
(AdaIN style transfer) so that only shape predicts the label; the networks became shape-biased and
more robust to noise.  The AdaIN route needs a trained VGG encoder/decoder, which cannot be
downloaded here.  medtl removes an image's own texture and gives it another image's intensity
statistics in two steps, neither of which is a linear filter or a Fourier-spectrum manipulation:

1. *Texture scramble.*  The image is cut into w x w windows (w = ``stylize_window`` x side,
   rounded, at least 2 px), on a grid shifted by a random offset per image (so window borders do
   not sit at fixed places; the windows at the edges are partial), and the pixels inside every
   window are randomly permuted.  Texture finer than w (grain, trabecular and interstitial
   pattern) is destroyed; every window keeps its own intensity multiset, so the layout above w
   (lung fields, heart, opacities, outlines) stays where it was.
2. *Intensity style.*  The scrambled image's intensities are mapped onto those of a randomly
   chosen partner training image by histogram (CDF) matching: a pointwise, monotone map of the
   image's 256 grey levels (each level goes to the partner's intensity at that level's mid-CDF
   quantile; the output is on 256 grey levels, as the stored images are).  The partner's
   intensity distribution (exposure, contrast, the shape of the histogram) is the "style"; the
   image's own is no longer a cue.

Why this family: ``medtl probe shape-bias`` builds its cue-conflict images as
``lowpass(A) + highpass(B)`` with a Gaussian, a zero-phase linear filter that changes amplitude
only.  Until this version stylize kept an image's Fourier phase and swapped in a partner's
amplitude spectrum (Chen et al., CVPR 2021): the same family as the probe's manipulation (a
change of the amplitude spectrum at fixed phase), so a stylize-trained model had practised on
what the probe applies and the probe could not tell shape bias from familiarity with the
transform.  That amplitude swap was removed for this reason.  The scramble is a random
permutation of pixels (nonlinear, not shift-invariant; it leaves fine-scale energy in place as
structureless within-window noise instead of removing it, and it changes the amplitude spectrum
and the phase alike), and the histogram map is a pointwise nonlinearity that mixes no pixel with
its neighbours.  What the two share is intended: the coarse layout survives both (a Gaussian
low-pass at σ well above w of a scrambled image is close to that of the original), which is what
Geirhos's stylization keeps too.  What a model practises on is not the probe's manipulation: it
never sees a smooth image carrying another image's fine texture, nor an image with its own fine
texture filtered away.

``stylize_method: fill`` (for point-set sources such as formula-driven fractals, whose texture is
their local point density, which a within-window permutation keeps): step 1 becomes *support
fill*.  The image's support is found by a morphological closing over the w x w window (a max
filter then a min filter: nonlinear, no linear filter and no spectrum), and it is multiplied by a
random point texture drawn per image (Bernoulli points of a random density in [0.2, 0.8] at a
random grain of 1 or 2 px, from ``default_rng([seed, epoch, FILL_STREAM, i])``).  The outline at
the window's scale stays; the point pattern inside it is replaced by one that carries no class.
Step 2 (histogram match to the partner) follows as for the scramble.

Determinism: which images are stylized in epoch ``e``, the partner of each and the window offset
are drawn for the whole training set at the start of the epoch from
``numpy.random.default_rng([seed, epoch, STREAM])``; the within-window permutation of image ``i``
comes from ``default_rng([seed, epoch, STREAM, i])``.  All are functions of (seed, epoch,
dataset index) only, so neither batch order nor resuming changes them.  Partners are drawn from
the un-augmented training images (any class, never the image itself), and stylizing happens
before the cue transform and the geometric/intensity augmentation.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

#: seed stream of the stylize plan (distinct from the data-order, augmentation and cue streams);
#: changed with the method (the amplitude swap used 0x5717)
STREAM = 0x57C2
LEVELS = 256


@dataclass
class StylePlan:
    """One epoch's plan: ``apply[i]`` whether training image ``i`` is stylized, ``partner[i]``
    (!= i) whose intensities it takes, ``offset[i]`` its window-grid offset as a fraction of the
    window (rows, columns) in [0, 1); the within-window permutations are drawn per image from
    (``seed``, ``epoch``, i)."""

    apply: np.ndarray
    partner: np.ndarray
    offset: np.ndarray
    seed: int
    epoch: int


def stylize_plan(n: int, p: float, seed: int, epoch: int) -> StylePlan:
    """The plan for the ``n`` training images in ``epoch`` (a one-image set has no partner: nothing
    is stylized)."""
    seed = int(seed) % (2**63)
    rng = np.random.default_rng([seed, int(epoch), STREAM])
    apply = rng.random(n) < p
    offset = rng.random((n, 2))
    if n < 2:
        return StylePlan(np.zeros(n, dtype=bool), np.zeros(n, dtype=np.int64), offset, seed, int(epoch))
    partner = rng.integers(0, n - 1, n)
    partner = partner + (partner >= np.arange(n))  # skip the image itself
    return StylePlan(apply, partner.astype(np.int64), offset, seed, int(epoch))


def window_px(side: int, window: float) -> int:
    """The scramble window in px: ``window`` x side, rounded, at least 2."""
    return max(2, int(round(window * side)))


def window_ids(h: int, w: int, win: int, offset: torch.Tensor) -> torch.Tensor:
    """(B, H*W) int64: the window each pixel belongs to, for windows of ``win`` px on a grid
    shifted by ``offset`` (B, 2) px (0 <= offset < win)."""
    rows = (torch.arange(h)[None, :] + offset[:, :1]) // win          # (B, H)
    cols = (torch.arange(w)[None, :] + offset[:, 1:]) // win          # (B, W)
    n_cols = (w - 1 + win) // win + 1
    return (rows[:, :, None] * n_cols + cols[:, None, :]).reshape(len(offset), h * w)


def window_scramble(x: torch.Tensor, win: int, offset: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """(B,1,H,W) with the pixels of every window permuted: in each window, the pixels in raster
    order receive the window's pixels in the order of ``keys`` (B, H*W) (random numbers in [0, 1)).
    ``offset`` (B, 2) int px shifts the window grid."""
    b, c, h, w = x.shape
    ids = window_ids(h, w, win, offset.long()).to(x.device)
    dest = torch.argsort(ids, dim=1, stable=True)                     # window by window, raster order
    src = torch.argsort(ids.double() + keys.to(device=x.device, dtype=torch.float64), dim=1)  # window by window, by key
    flat = x.reshape(b, c, h * w)
    out = torch.empty_like(flat)
    out.scatter_(2, dest[:, None, :].expand(b, c, -1), flat.gather(2, src[:, None, :].expand(b, c, -1)))
    return out.reshape(b, c, h, w)


def grey_levels(x: torch.Tensor) -> torch.Tensor:
    """(B, H*W) int64: the 256-level grey level of every pixel of (B,1,H,W) in [0, 1]."""
    return (x.reshape(len(x), -1) * (LEVELS - 1)).round().clamp(0, LEVELS - 1).long()


def _level_counts(lv: torch.Tensor) -> torch.Tensor:
    return torch.zeros(len(lv), LEVELS, dtype=torch.int64, device=lv.device).scatter_add_(1, lv, torch.ones_like(lv))


def match_histograms(x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
    """(B,1,H,W) in [0,1] with the intensity distribution of ``style`` (B,1,H',W'), per image, on
    256 grey levels, by a monotone pointwise map of ``x``'s levels: level v goes to the value of
    ``style``'s sorted intensities at the quantile of v's mid-CDF (histogram matching; computed
    from the two histograms, no sort)."""
    lv, ls = grey_levels(x), grey_levels(style)
    n, m = lv.shape[1], ls.shape[1]
    hist = _level_counts(lv)
    pos = ((2 * hist.cumsum(1) - hist) * m) // (2 * n)                 # (B, 256) mid-CDF rank in style
    # the style's sorted value at rank pos: the first level whose cumulative count exceeds pos
    table = torch.searchsorted(_level_counts(ls).cumsum(1), pos.clamp(0, m - 1), right=True)
    return (table.gather(1, lv).to(x.dtype) / (LEVELS - 1)).reshape(x.shape)


FILL_STREAM = 0xF111


def closing(x: torch.Tensor, win: int) -> torch.Tensor:
    """Morphological closing of (B,1,H,W) over a ``win`` x ``win`` square: a max filter, then a min
    filter (edges replicated), so gaps narrower than the window fill and the outline stays."""
    import torch.nn.functional as F

    lo, hi = (win - 1) // 2, win // 2
    pad = (lo, hi, lo, hi)
    d = F.max_pool2d(F.pad(x, pad, mode="replicate"), win, stride=1)
    return -F.max_pool2d(F.pad(-d, pad, mode="replicate"), win, stride=1)


def fill_textures(seed: int, epoch: int, idx: np.ndarray, h: int, w: int) -> torch.Tensor:
    """(len(idx),1,H,W) random point textures in {0, 1}: per image a density in [0.2, 0.8] and a
    grain of 1 or 2 px, from (seed, epoch, index)."""
    out = np.zeros((len(idx), 1, h, w), dtype=np.float32)
    for k, i in enumerate(idx):
        rng = np.random.default_rng([seed, epoch, FILL_STREAM, int(i)])
        density, grain = rng.uniform(0.2, 0.8), int(rng.integers(1, 3))
        pts = rng.random((-(-h // grain), -(-w // grain))) < density
        out[k, 0] = np.kron(pts, np.ones((grain, grain)))[:h, :w]
    return torch.from_numpy(out)


def scramble_keys(seed: int, epoch: int, idx: np.ndarray, hw: int) -> torch.Tensor:
    """(len(idx), hw) random keys of the within-window permutations, per (seed, epoch, index)."""
    return torch.from_numpy(np.stack([np.random.default_rng([seed, epoch, STREAM, int(i)]).random(hw)
                                      for i in idx]) if len(idx) else np.zeros((0, hw)))


def stylize_images(x: torch.Tensor, style: torch.Tensor, idx: np.ndarray, plan: StylePlan,
                   window: float, method: str = "scramble") -> torch.Tensor:
    """Every image of ``x`` (B,1,H,W in [0,1]; training images ``idx``) scrambled (or, with
    ``method="fill"``, its support filled with a random point texture) and matched to its
    partner's intensities ``style`` (B,1,H,W)."""
    h, w = x.shape[-2:]
    win = window_px(min(h, w), window)
    if method == "fill":
        tex = fill_textures(plan.seed, plan.epoch, idx, h, w).to(device=x.device, dtype=x.dtype)
        return match_histograms(closing(x, win) * tex, style)
    if method != "scramble":
        raise ValueError(f"stylize method must be scramble or fill (got {method!r})")
    offset = torch.from_numpy((plan.offset[idx] * win).astype(np.int64).clip(0, win - 1))
    keys = scramble_keys(plan.seed, plan.epoch, idx, h * w)
    return match_histograms(window_scramble(x, win, offset, keys), style)


def stylize_batch(x: torch.Tensor, idx: torch.Tensor, images: torch.Tensor, plan: StylePlan,
                  window: float, method: str = "scramble") -> torch.Tensor:
    """Stylize the images of a batch that the epoch's plan selects.

    ``x``: float (B,1,H,W) in [0,1], the training images ``images[idx]`` (uint8 (N,1,H,W));
    returns a new tensor (``x`` is not modified), or ``x`` itself when none is selected."""
    ii = idx.numpy()
    sel = plan.apply[ii]
    if not sel.any():
        return x
    style = images[torch.from_numpy(plan.partner[ii[sel]])].float().div_(255.0).to(x.device)
    sel_t = torch.from_numpy(sel).to(x.device)
    out = x.clone()
    out[sel_t] = stylize_images(x[sel_t], style, ii[sel], plan, window, method)
    return out
