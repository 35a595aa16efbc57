"""A classical lung-field mask for grayscale chest X-rays (no learned model), and a border band.

Construction of :func:`lung_masks`, per image (uint8, any size from 16 to 1024+ px; distances
are fractions of the image side ``S``, and images over 256 px are masked at 256 px and the mask
scaled back, so the same recipe works, and costs the same, at every size):

1. *Smooth*: Gaussian blur, σ = S/100 px (at least 0.5 px), against pixel noise and thin ribs.
2. *Body*: Otsu threshold of the whole smoothed image; the bright side, closed with a disk of
   radius S/16 (so a lung reaching the body outline still counts as enclosed) and with its holes
   filled, is the body.  Where that covers under 20 % of the image (a body filling the frame, no
   dark outside) the whole image is the body.
3. *Dark inside the body*: candidate lung/tissue thresholds computed on the body pixels only:
   Otsu's, the lower of the 3-class multi-Otsu thresholds (a bright mediastinum and abdomen
   pull the 2-class split too high) and their mean.  Dark body pixels are lung candidates.
4. *Not the outside air*: connected components (8-connectivity) that touch the image border
   are dropped (the air around the patient, a black frame, collimation bands touch it, the lungs
   do not).  This is tried as is and after cutting thin bridges (an apex or axilla running into
   the outside air): erosion by a disk of radius S/32 or S/16, labelling, and growing the kept
   components back by the same disk inside the dark pixels.
5. *Two lungs*: the largest component, and the second largest when it is at least a quarter of
   the largest.
6. *Clean up*: holes filled (a bright nodule inside a lung belongs to it), a binary closing
   (disk of radius S/32) and a dilation by S/64 px (each skipped under one pixel).

A candidate mask (one per threshold x cut) is *plausible* when the lung area is 5-60 % of the
image, its centroid lies in the central part (rows 15-80 %, columns 25-75 %), and it has exactly
two components, one on each side of the vertical midline, each spanning at least 30 % of the
image height *across its middle row* (dark shoulders, neck or bowel gas above or below do not
count) with solidity (area / convex hull) at least 0.7 (noise blobs are ragged).  Of the
plausible candidates the largest wins.  An image with none (a uniform or pure-noise image, a
lateral view, a lung lost to consolidation or merged with the outside air) gets the fixed
anatomical *prior* instead: two vertical ellipses over the usual PA lung fields, in relative
coordinates (centres at row 0.48 and columns 0.28 / 0.72 of the side, semi-axes 0.34 of the
side vertically and 0.17 horizontally; 36 % of the image, sized on tightly cropped PA films such
as MedMNIST's); ``LungMasks.fallback`` says which.
Requiring two lungs makes the prior more frequent on real radiographs (measured: 16 of 78 Kermany
test CXRs at 224 px; 180 of 200 PneumoniaMNIST test images at 28 px, where the prior is in practice
the mask; at most 1 in 10 on medtl's synthetic set), but a one-lung
mask would leave the other lung's signal in a "lung-masked" image.

scikit-image's Otsu thresholds and region properties and scipy.ndimage's labelling and
morphology do the work.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

VERSION = 2                    # part of the shortcut probe's cache key: bump when the mask changes
AREA_RANGE = (0.05, 0.60)      # plausible lung area, fraction of the image
CENTRE_ROWS = (0.15, 0.80)     # plausible centroid row, fraction of the side
CENTRE_COLS = (0.25, 0.75)     # plausible centroid column
MIN_HEIGHT = 0.30              # each lung spans at least this fraction of the image height
MIN_SOLIDITY = 0.70            # and fills this fraction of its convex hull (noise blobs are ragged)
MIN_BODY = 0.20                # smaller "bodies" mean the first threshold did not find one
SECOND_LUNG = 0.25             # second component kept when >= this fraction of the largest
WORK_SIZE = 256                # larger images are masked at this size (the mask needs no more detail)
# the prior: (row, col) centres, (row, col) semi-axes, as fractions of the side
PRIOR_CENTRES = ((0.48, 0.28), (0.48, 0.72))
PRIOR_AXES = (0.34, 0.17)


@dataclass
class LungMasks:
    """Masks (N,H,W) bool, ``fallback`` (N,) bool: True where the prior replaced an implausible mask."""

    masks: np.ndarray
    fallback: np.ndarray

    @property
    def n_fallback(self) -> int:
        return int(self.fallback.sum())

    @property
    def area_fraction(self) -> np.ndarray:
        return self.masks.reshape(len(self.masks), -1).mean(1) if len(self.masks) else np.zeros(0)


def _disk(radius: int) -> np.ndarray:
    r = np.arange(-radius, radius + 1)
    return (r[:, None] ** 2 + r[None, :] ** 2) <= radius ** 2


def prior_mask(h: int, w: int) -> np.ndarray:
    """The anatomical prior (H,W) bool: two vertical ellipses over the usual PA lung fields."""
    rows = (np.arange(h) + 0.5) / h
    cols = (np.arange(w) + 0.5) / w
    out = np.zeros((h, w), bool)
    for cy, cx in PRIOR_CENTRES:
        out |= ((rows[:, None] - cy) / PRIOR_AXES[0]) ** 2 + ((cols[None, :] - cx) / PRIOR_AXES[1]) ** 2 <= 1
    return out


def border_band(h: int, w: int | None = None, band: float = 0.125) -> np.ndarray:
    """(H,W) bool: a band of ``band`` x side (at least 1 px) along the four edges."""
    from ..errors import ConfigError

    if not 0 < band < 0.5:
        raise ConfigError(f"band must be in (0, 0.5) (got {band})")
    w = h if w is None else w
    by, bx = max(1, int(round(band * h))), max(1, int(round(band * w)))
    out = np.ones((h, w), bool)
    out[by:h - by, bx:w - bx] = False
    return out


def _thresholds(values: np.ndarray) -> list[float]:
    """Candidate lung/tissue thresholds of ``values``: Otsu's, then the lower of the 3-class
    multi-Otsu thresholds (for a body with a bright mediastinum and abdomen, where the 2-class
    split falls between soft tissue and bone); none for a flat image."""
    from skimage.filters import threshold_multiotsu, threshold_otsu

    if values.size < 3 or float(values.max()) - float(values.min()) < 1.0:  # flat: nothing to split
        return []
    out = [float(threshold_otsu(values))]
    try:
        out.append(float(threshold_multiotsu(values, classes=3, nbins=64)[0]))
    except ValueError:  # too few distinct values for three classes
        pass
    return out


def _keep_lungs(dark: np.ndarray, r_cut: int = 0) -> np.ndarray:
    """Components of ``dark`` off the border; the largest and a similar-sized second.  With
    ``r_cut`` > 0 the components are found after an erosion by a disk of that radius (which
    cuts thin bridges, e.g. a lung apex or axilla running into the outside air) and grown back
    by the same disk inside ``dark``."""
    seed = ndi.binary_erosion(dark, _disk(r_cut)) if r_cut else dark
    lab, n = ndi.label(seed, structure=np.ones((3, 3), bool))
    if n == 0:
        return np.zeros_like(dark)
    edge = np.unique(np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]]))
    sizes = np.bincount(lab.ravel(), minlength=n + 1).astype(float)
    sizes[0] = 0
    sizes[edge] = 0
    order = np.argsort(sizes)[::-1]
    if sizes[order[0]] == 0:
        return np.zeros_like(dark)
    keep = [order[0]]
    if n > 1 and sizes[order[1]] >= SECOND_LUNG * sizes[order[0]]:
        keep.append(order[1])
    kept = np.isin(lab, keep)
    return ndi.binary_dilation(kept, _disk(r_cut)) & dark if r_cut else kept


def _smooth_body(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Steps 1-2: the smoothed image and the body mask."""
    s = ndi.gaussian_filter(img.astype(np.float32), sigma=max(0.5, min(img.shape) / 100))
    t = _thresholds(s)
    if t:
        # close first: a lung field reaching the body outline would otherwise be no hole
        r = max(1, int(round(min(img.shape) / 16)))
        bright = ndi.binary_closing(np.pad(s > t[0], r), _disk(r))[r:-r, r:-r]
        body = ndi.binary_fill_holes(bright)
    else:
        body = np.ones(img.shape, bool)
    if body.mean() < MIN_BODY:
        body = np.ones(img.shape, bool)
    return s, body


def _clean(lungs: np.ndarray, side: int) -> np.ndarray:
    """Step 6: fill holes, close, dilate."""
    lungs = ndi.binary_fill_holes(lungs)
    r_close, r_dil = int(round(side / 32)), int(round(side / 64))
    if r_close >= 1:
        # pad so that the closing does not glue a lung to the image edge
        lungs = ndi.binary_closing(np.pad(lungs, r_close), _disk(r_close))[r_close:-r_close, r_close:-r_close]
    if r_dil >= 1:
        lungs = ndi.binary_dilation(lungs, _disk(r_dil))
    return lungs


def _classical(img: np.ndarray) -> np.ndarray | None:
    """The classical mask of one image (steps 1-6 of the module docstring): the largest of the
    plausible candidate masks; None when none is plausible.  Images larger than ``WORK_SIZE`` are masked at that size
    and the mask is scaled back (nearest neighbour)."""
    if max(img.shape) > WORK_SIZE:
        from skimage.transform import resize

        small = resize(img.astype(np.float32), (WORK_SIZE, WORK_SIZE), order=1, anti_aliasing=True,
                       preserve_range=True)
        m = _classical(small)
        return None if m is None else resize(m, img.shape, order=0, anti_aliasing=False).astype(bool)
    s, body = _smooth_body(img)
    ts = _thresholds(s[body])
    if len(ts) == 2:
        ts.append(0.5 * (ts[0] + ts[1]))
    best, best_score = None, None
    side = min(img.shape)
    cuts = sorted({0, int(round(side / 32)), int(round(side / 16))})
    for t, r_cut in ((t, r) for t in ts for r in cuts):
        lungs = _clean(_keep_lungs((s <= t) & body, r_cut), side)
        if plausible(lungs):
            score = float(lungs.mean())
            if best_score is None or score > best_score:
                best, best_score = lungs, score
    return best


def plausible(mask: np.ndarray) -> bool:
    """The checks of the module docstring: area, centroid, two lungs (one each side of the
    midline, each tall and compact)."""
    from skimage.measure import regionprops

    h, w = mask.shape
    area = float(mask.mean())
    if not AREA_RANGE[0] <= area <= AREA_RANGE[1]:
        return False
    rows, cols = np.nonzero(mask)
    cy, cx = (rows.mean() + 0.5) / h, (cols.mean() + 0.5) / w
    if not (CENTRE_ROWS[0] <= cy <= CENTRE_ROWS[1] and CENTRE_COLS[0] <= cx <= CENTRE_COLS[1]):
        return False
    lab, n = ndi.label(mask, structure=np.ones((3, 3), bool))
    if n != 2:
        return False
    props = regionprops(lab)
    sides = sorted((p.centroid[1] + 0.5) / w for p in props)
    return sides[0] < 0.5 < sides[1] and all(
        (p.bbox[2] - p.bbox[0]) / h >= MIN_HEIGHT and p.bbox[0] < 0.5 * h < p.bbox[2]
        and p.solidity >= MIN_SOLIDITY for p in props)


def lung_masks(images: np.ndarray) -> LungMasks:
    """Lung-field masks of uint8 grayscale chest X-rays (N,H,W) (or one (H,W) image), with the
    anatomical prior where the classical mask is implausible (module docstring)."""
    from ..errors import DataError

    imgs = np.asarray(images)
    if imgs.ndim == 2:
        imgs = imgs[None]
    if imgs.ndim != 3 or min(imgs.shape[1:], default=0) < 8:
        raise DataError(f"lung masks need grayscale images (N,H,W) of at least 8 px (got shape {imgs.shape})")
    n, h, w = imgs.shape
    masks = np.zeros((n, h, w), bool)
    fallback = np.zeros(n, bool)
    prior = None
    for i in range(n):
        m = _classical(imgs[i])
        if m is None:
            prior = prior_mask(h, w) if prior is None else prior
            m, fallback[i] = prior, True
        masks[i] = m
    return LungMasks(masks=masks, fallback=fallback)
