"""`render_preview`: a PNG grid of images exactly as the model receives them."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from ..config import DataConfig, RunConfig
from ..errors import DataError
from ..io import atomic_path
from . import images as _images
from .dicom import is_dicom_file
from .load import load_dataset
from .transforms import augment_batch, to_tensor
from .types import DICOM_EXTS, IMAGE_EXTS, SPLITS

MIN_TILE = 96      # tiny images are upscaled (nearest neighbour) to at least this many pixels
TITLE_H = 18
CAPTION_H = 14
PAD = 2


def _as_cfg(path_or_cfg) -> DataConfig:
    if isinstance(path_or_cfg, RunConfig):
        return path_or_cfg.data
    if isinstance(path_or_cfg, DataConfig):
        return path_or_cfg
    return DataConfig(path=str(path_or_cfg))


def _single_file(cfg: DataConfig) -> Path | None:
    p = Path(cfg.path).expanduser()
    if not p.is_file():
        return None
    if p.suffix.lower() in IMAGE_EXTS + DICOM_EXTS or is_dicom_file(p):
        return p
    return None


def tile_scale(size: int) -> int:
    return max(1, math.ceil(MIN_TILE / size))


def _caption(label, classes: list[str], multilabel: bool) -> str:
    if multilabel:
        pos = [c for c, v in zip(classes, np.asarray(label).tolist()) if v > 0.5]
        return "+".join(pos) if pos else "no finding"
    return classes[int(label)]


def preview_images(path_or_cfg, n: int = 16, split: str = "train", augment: bool = False, seed: int = 0,
                   cache_dir: Path | None = None) -> tuple[np.ndarray, list[str], str]:
    """(uint8 (k, S, S) model-input images, captions, title)."""
    cfg = _as_cfg(path_or_cfg)
    single = _single_file(cfg)
    if single is not None:
        imgs = _images.load_image_resized(single, cfg.image_size, cfg.resize)[None]
        captions = [single.name]
        title = f"{single.name} | {cfg.image_size}px {cfg.resize}"
    else:
        if split not in SPLITS:
            raise DataError(f"split {split!r}: must be one of {', '.join(SPLITS)}")
        bundle = load_dataset(cfg, cache_dir=cache_dir, on_leak="warn")  # a look at images, not training
        sp = bundle.splits[split]
        if len(sp) == 0:
            raise DataError(f"{cfg.path}: split '{split}' is empty")
        rng = np.random.default_rng(seed)
        idx = np.sort(rng.choice(len(sp), size=min(n, len(sp)), replace=False))
        imgs = sp.images[idx]
        captions = [_caption(sp.labels[i], bundle.classes, bundle.multilabel) for i in idx]
        side = imgs.shape[-1]
        size_txt = f"{side}px" if cfg.sr.method == "none" else f"{cfg.image_size}px -> {side}px ({cfg.sr.method} SR)"
        title = f"{bundle.name} | {split} | {len(idx)} of {len(sp)} | {size_txt}"
        if bundle.synthetic and "SYNTHETIC" not in title:
            title += " | SYNTHETIC"
    if augment:
        gen = torch.Generator().manual_seed(int(seed))
        x = augment_batch(to_tensor(imgs), cfg.augment, gen)
        imgs = (x[:, 0] * 255.0).round().clamp(0, 255).to(torch.uint8).numpy()
        title += " | augmented"
    return imgs, captions, title


def compose_grid(imgs: np.ndarray, captions: list[str], title: str) -> Image.Image:
    k, size = len(imgs), imgs.shape[1]
    scale = tile_scale(size)
    tile = size * scale
    cols = max(1, math.ceil(math.sqrt(k)))
    rows = math.ceil(k / cols)
    cell_h = tile + CAPTION_H + PAD
    width = max(cols * (tile + PAD) + PAD, 6 * len(title) + 2 * PAD)
    grid = Image.new("L", (width, TITLE_H + rows * cell_h + PAD), 0)
    draw = ImageDraw.Draw(grid)
    font = ImageFont.load_default()
    draw.text((PAD, 3), title, fill=255, font=font)
    max_chars = max(3, tile // 6)
    for i in range(k):
        r, c = divmod(i, cols)
        x0, y0 = PAD + c * (tile + PAD), TITLE_H + r * cell_h
        im = Image.fromarray(np.ascontiguousarray(imgs[i]), "L")
        if scale > 1:
            im = im.resize((tile, tile), Image.NEAREST)
        grid.paste(im, (x0, y0))
        cap = captions[i] if len(captions[i]) <= max_chars else captions[i][: max_chars - 1] + "~"
        draw.text((x0 + 1, y0 + tile + 1), cap, fill=255, font=font)
    return grid


def tile_box(i: int, k: int, size: int) -> tuple[int, int, int, int]:
    """Pixel box (left, top, right, bottom) of tile ``i`` in a grid of ``k`` images."""
    tile = size * tile_scale(size)
    cols = max(1, math.ceil(math.sqrt(k)))
    r, c = divmod(i, cols)
    x0, y0 = PAD + c * (tile + PAD), TITLE_H + r * (tile + CAPTION_H + PAD)
    return x0, y0, x0 + tile, y0 + tile


def render_preview(path_or_cfg, out: Path, n: int = 16, split: str = "train", augment: bool = False,
                   seed: int = 0) -> Path:
    """Write a PNG grid of ``n`` images from ``split`` as the model receives them; return ``out``.

    A single .dcm or image file is shown alone, processed the same way (decode, VOI/invert,
    resize to image_size, [0, 1]).  Tiles are labelled with their class.
    """
    if n < 1:
        raise DataError(f"n {n}: must be at least 1")
    out = Path(out)
    check_output_png(out)
    imgs, captions, title = preview_images(path_or_cfg, n=n, split=split, augment=augment, seed=seed)
    grid = compose_grid(imgs, captions, title)
    try:
        with atomic_path(out) as tmp:
            grid.save(tmp, format="PNG")
    except OSError as exc:
        raise DataError(f"{out}: cannot write the preview ({exc.strerror or type(exc).__name__})") from None
    return out


def check_output_png(out: Path) -> None:
    """Refuse, before any work, an output that is a folder, lies under a file, or is an existing
    file other than a PNG (a user's file is never overwritten)."""
    if out.is_dir():
        raise DataError(f"{out}: is a folder; the preview output is a PNG file name")
    if out.exists():
        try:
            with open(out, "rb") as f:
                head = f.read(8)
        except OSError as exc:
            raise DataError(f"{out}: cannot read the existing file ({exc.strerror})") from None
        if head != b"\x89PNG\r\n\x1a\n":
            raise DataError(f"{out}: exists and is not a PNG image; it is not overwritten: choose another file name")
    anc = out.parent
    while not anc.exists() and anc != anc.parent:
        anc = anc.parent
    if not anc.is_dir():
        raise DataError(f"{out}: cannot be created: {anc} is a file")
