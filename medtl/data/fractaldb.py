"""``builtin:fractaldb``: formula-driven images for licence-free supervised pretraining, after
FractalDB (Kataoka et al., "Pre-training without Natural Images", ACCV 2020).

No natural image and no licence: every image is the attractor of an iterated function system
(IFS) drawn by the chaos game, and every class is one IFS code.

* **A class** is a set of N (2 to 4) random affine maps ``x -> A x + b`` with entries uniform in
  [-1, 1]. Each A is made contractive: its largest singular value is rescaled to at most 0.95 (a
  non-contractive map has no attractor, which is how FractalDB's rejection step usually fails).
  A code is kept only when its attractor fills at least :data:`MIN_FILL` of a 64 px canvas, as
  FractalDB filters by filling rate; otherwise it is redrawn.
* **An instance** of a class (FractalDB's intra-category variation) scales the six parameters of
  one of its maps by a factor in [0.8, 1.2], and flips the image at random.
* **Rendering:** 32 parallel chaos-game chains with map k chosen with probability ∝ |det A_k|;
  20 burn-in steps, then as many points as the image size needs (about 2 per pixel). The points
  are fitted to the canvas with a 1-pixel margin and drawn white on black.

Every draw comes from ``np.random.default_rng([GENERATOR_VERSION, seed, ...])``, so the same
(classes, instances, size, seed) gives the same bytes on every machine; the arrays are cached
like any decoded dataset.  Splits: ``instances`` images per class for train, and
``eval_instances`` further instances per class for val and for test.  No image shares a
"patient" with another (each is its own id): there is nothing to leak.
"""
from __future__ import annotations

import numpy as np

GENERATOR_VERSION = 1
NAME = "fractaldb (formula-driven, SYNTHETIC)"
MIN_FILL = 0.08            # of a 64 px canvas
MAX_SINGULAR = 0.95
_CHAINS = 32
_BURN_IN = 20
_STREAM = {"code": 1, "instance": 2}
_SPLIT_OFFSET = {"train": 0, "val": 1_000_000, "test": 2_000_000}


def _contractive(params: np.ndarray) -> np.ndarray:
    """(N, 6) [a, b, c, d, e, f] with each A = [[a, b], [c, d]] rescaled to spectral norm <= MAX_SINGULAR."""
    out = params.copy()
    for k in range(len(out)):
        s = np.linalg.norm(out[k, :4].reshape(2, 2), 2)
        if s > MAX_SINGULAR:
            out[k, :4] *= MAX_SINGULAR / s
    return out


def render(codes: np.ndarray, size: int, rng: np.random.Generator, points_per_pixel: float = 2.0) -> np.ndarray:
    """uint8 images (I, size, size) of the attractors of ``codes`` (I, N, 6), one per row."""
    codes = np.asarray(codes, dtype=np.float64)
    n_img, n_maps = codes.shape[:2]
    det = np.abs(codes[:, :, 0] * codes[:, :, 3] - codes[:, :, 1] * codes[:, :, 2]) + 1e-3
    cum = np.cumsum(det / det.sum(1, keepdims=True), axis=1)                      # (I, N)
    steps = max(8, int(np.ceil(points_per_pixel * size * size / _CHAINS)))
    x = np.zeros((n_img, _CHAINS, 2))
    pts = np.empty((steps, n_img, _CHAINS, 2))
    rows = np.arange(n_img)[:, None]
    for t in range(_BURN_IN + steps):
        u = rng.random((n_img, _CHAINS, 1))
        k = np.minimum((u > cum[:, None, :]).sum(-1), n_maps - 1)                  # (I, C)
        p = codes[rows, k]                                                         # (I, C, 6)
        x = np.stack([p[..., 0] * x[..., 0] + p[..., 1] * x[..., 1] + p[..., 4],
                      p[..., 2] * x[..., 0] + p[..., 3] * x[..., 1] + p[..., 5]], axis=-1)
        if t >= _BURN_IN:
            pts[t - _BURN_IN] = x
    pts = pts.transpose(1, 0, 2, 3).reshape(n_img, -1, 2)                          # (I, P, 2)
    lo, hi = pts.min(1, keepdims=True), pts.max(1, keepdims=True)
    span = np.maximum((hi - lo).max(-1, keepdims=True), 1e-9)                       # keep the aspect ratio
    centre = (lo + hi) / 2
    pix = np.clip(np.rint((pts - centre) / span * (size - 3) + (size - 1) / 2), 0, size - 1).astype(np.int64)
    img = np.zeros((n_img, size * size), dtype=np.uint8)
    flat = pix[..., 1] * size + pix[..., 0]
    np.put_along_axis(img, flat, 255, axis=1)
    return img.reshape(n_img, size, size)


def fill_rate(code: np.ndarray, rng: np.random.Generator, size: int = 64) -> float:
    return float((render(code[None], size, rng) > 0).mean())


def class_code(seed: int, index: int) -> np.ndarray:
    """The IFS code (N, 6) of class ``index``: drawn until contractive maps fill >= MIN_FILL."""
    rng = np.random.default_rng([GENERATOR_VERSION, int(seed), _STREAM["code"], int(index)])
    while True:
        n = int(rng.integers(2, 5))
        code = _contractive(rng.uniform(-1.0, 1.0, size=(n, 6)))
        if fill_rate(code, rng) >= MIN_FILL:
            return code


def instance_codes(code: np.ndarray, seed: int, cls: int, indices) -> tuple[np.ndarray, np.ndarray]:
    """(codes (I, N, 6), flips (I, 2) bool) of the instances ``indices`` of one class."""
    out, flips = [], []
    for j in indices:
        rng = np.random.default_rng([GENERATOR_VERSION, int(seed), _STREAM["instance"], int(cls), int(j)])
        c = code.copy()
        c[int(rng.integers(0, len(c)))] *= rng.uniform(0.8, 1.2)
        out.append(_contractive(c))
        flips.append(rng.random(2) < 0.5)
    return np.stack(out), np.array(flips)


#: ``texture: class``: the figure is drawn solid to this fraction of white, the ground to GROUND
FIGURE, GROUND = 1.0, 0.3
_TEXTURE_STREAM = 4


def support(points: np.ndarray) -> np.ndarray:
    """bool (..., H, W): the figure of rendered attractors ``points`` (uint8), their points
    dilated by one pixel and closed over 3 x 3 (gaps of a pixel or two filled), so a filament is a
    band a texture can show in."""
    from scipy import ndimage

    pts = np.asarray(points) > 0
    box = np.ones((3, 3), bool)
    one = lambda m: ndimage.binary_closing(ndimage.binary_dilation(m, box), box, border_value=0)  # noqa: E731
    return np.stack([one(m) for m in pts.reshape(-1, *pts.shape[-2:])]).reshape(pts.shape)


def class_texture(cls: int, size: int) -> tuple[float, float]:
    """(orientation in radians, period in px) of class ``cls``'s stripes: orientations spread over
    [0, pi) by the golden ratio, periods 3, 4 or 5 px at 32 px (scaled with the size)."""
    theta = np.pi * ((int(cls) * 0.6180339887498949) % 1.0)
    return float(theta), float((3 + int(cls) % 3) * size / 32.0)


def stripes(theta: float, period: float, phase: float, size: int) -> np.ndarray:
    """float (size, size) in [0, 1]: a sinusoidal grating."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    return 0.5 + 0.5 * np.cos(2 * np.pi * (xx * np.cos(theta) + yy * np.sin(theta)) / period + phase)


def textured(figure: np.ndarray, theta: float, period: float, phase: float) -> np.ndarray:
    """uint8 (H, W): the grating over the whole frame, at full contrast on the figure (bool) and at
    :data:`GROUND` on the ground, so the shape is the contrast envelope and the texture the stripes."""
    g = stripes(theta, period, phase, figure.shape[-1])
    return np.rint(255 * g * np.where(figure, FIGURE, GROUND)).astype(np.uint8)


def texture_all(points: np.ndarray, labels: np.ndarray, seed: int, split: str) -> np.ndarray:
    """``texture: class`` of rendered ``points`` (n, H, W): each image's figure over its class's
    stripes, at a random phase per image (from seed, split and index)."""
    figs = support(points)
    size = points.shape[-1]
    out = np.empty_like(points)
    for i, (fig, c) in enumerate(zip(figs, labels)):
        rng = np.random.default_rng([GENERATOR_VERSION, int(seed), _TEXTURE_STREAM, _SPLIT_OFFSET[split] + i])
        theta, period = class_texture(int(c), size)
        out[i] = textured(fig, theta, period, float(rng.uniform(0, 2 * np.pi)))
    return out


def generate(n_classes: int, per_split: dict[str, int], size: int, seed: int = 0, texture: str = "none"
             ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{split: (uint8 images (n, size, size), int64 labels (n,))}``, classes in order.

    ``texture="class"``: every class also carries a texture by construction (its own stripes,
    :func:`class_texture`) over the whole frame, bright on the figure and dim on the ground, so
    that shape and texture both predict the class, as in natural images (the plain attractors
    carry almost none: reports/pretrain/shape_bias_source.md)."""
    if texture not in ("none", "class"):
        raise ValueError(f"fractal texture must be none or class (got {texture!r})")
    out: dict[str, list] = {s: [[], []] for s in per_split}
    for c in range(int(n_classes)):
        code = class_code(seed, c)
        for split, n in per_split.items():
            idx = range(_SPLIT_OFFSET[split], _SPLIT_OFFSET[split] + int(n))
            codes, flips = instance_codes(code, seed, c, idx)
            rng = np.random.default_rng([GENERATOR_VERSION, int(seed), 3, c, _SPLIT_OFFSET[split]])
            imgs = render(codes, size, rng)
            imgs = np.where(flips[:, 0, None, None], imgs[:, :, ::-1], imgs)
            imgs = np.where(flips[:, 1, None, None], imgs[:, ::-1, :], imgs)
            out[split][0].append(imgs)
            out[split][1].append(np.full(len(imgs), c, dtype=np.int64))
    made = {s: (np.ascontiguousarray(np.concatenate(a)), np.concatenate(b)) for s, (a, b) in out.items()}
    if texture == "class":
        made = {s: (texture_all(x, y, seed, s), y) for s, (x, y) in made.items()}
    return made


def class_names(n_classes: int) -> list[str]:
    width = len(str(max(int(n_classes) - 1, 0)))
    return [f"ifs{c:0{width}d}" for c in range(int(n_classes))]


__all__ = ["GENERATOR_VERSION", "NAME", "class_code", "class_names", "generate", "render"]
