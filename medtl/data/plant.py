"""A planted cue (``data.plant``): a burned-in marker whose link to the label is known by construction.

The shortcut probe (:mod:`medtl.probes.shortcut`) says whether a model reads its score outside
the lung fields.  To validate it, this module burns a marker into the images, like the lead
("L"/"R") markers of real radiographs: a bright square of ``value`` with a small dark "L" inside,
in the top-left corner, inset a little from the edge.  Its side is ``size`` x the image side (at
least 3 px); the inset is 2 % of the side (at least 1 px) where the marker still fits inside the
probe's border band (0.125 x side, :func:`medtl.probes.lungmask.border_band`), else 0.  Up to
``size`` 0.1 (at every input size from 24 px) it lies entirely inside that band and far from the
anatomical lung prior (whose ellipses reach no higher than 0.14 of the side, and no nearer the
left edge than 0.11 of it), so the probe's lung-masked and border-only images keep it whole.

``correlate: label``: the marker is on every image of class 1 and on none of class 0, so it
predicts the label perfectly and a model trained on it should be flagged.  ``correlate: random``:
on a fraction ``p`` of the images, drawn independently of the label, so it carries no
information (a model should not be flagged for it).  The random draw for an image is a function
of (``data.split_seed``, split name, image id) only (a sha256 of the three), never of the
training seed or the image's position: every seed, every probe and every policy that drops
images sees the same images marked.

It is applied by :func:`medtl.data.load.load_dataset` to the listed splits after decoding,
caching, the leak policy and any upscaling (the caches stay clean, and the marker is drawn at
the resolution the network sees), and it is recorded in the bundle's notes as ``PLANTED CUE:``,
so every run's ``run.data_notes`` says so.  Binary tasks only.
"""
from __future__ import annotations

import hashlib
from dataclasses import replace

import numpy as np

from ..errors import ConfigError
from .types import DatasetBundle

#: the shortcut probe's default border band (fraction of the side); the marker is placed inside it
PROBE_BAND = 0.125
MIN_SIDE = 3
#: a 5x5 "L" (1 = marker value, 0 = dark), scaled to the marker (nearest neighbour)
_L = np.array([[1, 1, 1, 1, 1],
               [1, 0, 1, 1, 1],
               [1, 0, 1, 1, 1],
               [1, 0, 0, 0, 1],
               [1, 1, 1, 1, 1]], dtype=bool)


def marker_box(h: int, w: int, size: float) -> tuple[int, int, int]:
    """(top, left, side) of the marker in an h x w image, in px."""
    side = min(h, w)
    s = min(side, max(MIN_SIDE, int(round(size * side))))
    band = max(1, int(round(PROBE_BAND * side)))
    inset = min(max(1, int(round(0.02 * side))), max(0, band - s))
    return inset, inset, s


def marker_pattern(s: int) -> np.ndarray:
    """(s, s) bool: True where the marker is bright, False on its dark "L" (a dark centre pixel
    under 5 px)."""
    if s < 5:
        out = np.ones((s, s), bool)
        out[s // 2, s // 2] = False
        return out
    i = np.minimum((np.arange(s) * 5) // s, 4)
    return _L[np.ix_(i, i)]


def marker_mask(h: int, w: int, size: float) -> np.ndarray:
    """(H, W) bool: the pixels the marker covers."""
    top, left, s = marker_box(h, w, size)
    out = np.zeros((h, w), bool)
    out[top:top + s, left:left + s] = True
    return out


def burn_marker(images: np.ndarray, size: float, value: int) -> np.ndarray:
    """A copy of uint8 ``images`` (N, H, W) with the marker burned in."""
    out = np.array(images, dtype=np.uint8, copy=True)
    if not len(out):
        return out
    top, left, s = marker_box(out.shape[1], out.shape[2], size)
    dark = 0 if value >= 128 else 255
    out[:, top:top + s, left:left + s] = np.where(marker_pattern(s), np.uint8(value), np.uint8(dark))
    return out


def random_marked(ids, split: str, split_seed: int, p: float) -> np.ndarray:
    """(N,) bool: which images carry a randomly placed marker; a function of (split_seed, split,
    image id) only."""
    u = np.array([int.from_bytes(hashlib.sha256(f"medtl-plant:{int(split_seed)}:{split}:{i}".encode()).digest()[:8],
                                 "big") / 2.0**64 for i in ids], dtype=np.float64)
    return u < p


def marked(split, name: str, plant, split_seed: int) -> np.ndarray:
    """(N,) bool: the images of ``split`` (named ``name``) that carry the marker."""
    if plant.correlate == "label":
        return np.asarray(split.labels) == 1
    return random_marked(split.ids, name, split_seed, plant.p)


def check_plant(bundle: DatasetBundle, plant) -> None:
    """One-line ConfigError when the task is not binary."""
    if bundle.multilabel or len(bundle.classes) != 2:
        kind = "multi-label" if bundle.multilabel else f"{len(bundle.classes)}-class"
        raise ConfigError(f"data.plant: a planted marker needs a binary task; {bundle.source} is {kind}")


def plant_cue(bundle: DatasetBundle, plant, split_seed: int) -> DatasetBundle:
    """``bundle`` with the marker burned into the images that ``plant`` (a
    :class:`medtl.config.PlantConfig`) selects in each listed split, and a ``PLANTED CUE:`` note;
    ``bundle`` itself when ``plant.kind`` is 'none'."""
    if plant.kind == "none":
        return bundle
    check_plant(bundle, plant)
    splits = dict(bundle.splits)
    counts = []
    for name in plant.splits:
        sp = splits[name]
        on = marked(sp, name, plant, split_seed)
        images = np.array(sp.images, copy=True)
        if on.any():
            images[on] = burn_marker(images[on], plant.size, plant.value)
        splits[name] = replace(sp, images=images)
        counts.append(f"{name} {int(on.sum())}/{len(on)}")
    h, w = next(iter(splits.values())).images.shape[1:]
    top, left, s = marker_box(h, w, plant.size)
    how = (f"on every '{bundle.classes[1]}' image and no '{bundle.classes[0]}' image (it predicts the label)"
           if plant.correlate == "label" else
           f"on a random {plant.p:g} of the images, independent of the label (seeded by data.split_seed)")
    notes = [f"PLANTED CUE: a {s}x{s} px marker (value {plant.value}) burned in at row {top}, column {left} "
             f"(top-left corner), {how}; images marked: {', '.join(counts)}"]
    band = max(1, int(round(PROBE_BAND * min(h, w))))
    if top + s > band:
        notes.append(f"WARNING: the planted marker ({s} px from {top} px) reaches beyond the shortcut probe's "
                     f"default border band ({band} px); lower data.plant.size")
    return replace(bundle, splits=splits, notes=list(bundle.notes) + notes)
