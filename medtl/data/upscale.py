"""``data.sr``: upscale a decoded dataset (plain resize or a learned SR model), once, cached.

The low-resolution images are decoded at ``data.image_size`` as usual; this step then
upscales every split to the output side and the network sees that full size.  The result is
cached beside the decoded arrays, keyed by the exact input pixels, the method and (for a
learned model) the model file's sha256, so a sweep computes it once and every run reuses it.
"""
from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

from ..config import DataConfig
from ..errors import ConfigError
from ..io import array_digest
from . import cache as _cache
from .types import SPLITS, DatasetBundle

UPSCALE_VERSION = 1  # bump when the upscaling code changes, so cached results are rebuilt


def _pixels_digest(bundle: DatasetBundle) -> str:
    parts = "".join(f"{s}:{array_digest(bundle.splits[s].images)}\n" for s in SPLITS)
    return hashlib.sha256(parts.encode()).hexdigest()


def output_side(cfg: DataConfig, model_scale: int | None = None) -> int:
    """The side (px) the network sees for this data config."""
    sr = cfg.sr
    if sr.method == "none":
        return cfg.image_size
    if sr.size is not None:
        return sr.size
    scale = model_scale if sr.method == "learned" else sr.scale
    return int(round(cfg.image_size * float(scale)))


def _load_model(cfg: DataConfig):
    from ..sr import load_sr_model

    path = Path(cfg.sr.model).expanduser()
    model, meta = load_sr_model(path)
    scale = int(meta["arch"]["scale"])
    if cfg.sr.scale is not None and abs(float(cfg.sr.scale) - scale) > 1e-9:
        raise ConfigError(f"{path}: data.sr.scale={cfg.sr.scale:g} but this SR model upscales x{scale}")
    return model, meta, scale


def apply_sr(bundle: DatasetBundle, cfg: DataConfig, cache_dir: Path | None = None) -> DatasetBundle:
    """Return ``bundle`` with every split upscaled per ``cfg.sr`` (unchanged for method none)."""
    sr = cfg.sr
    if sr.method == "none":
        return bundle
    from ..sr import upscale_learned, upscale_resize

    model = meta = None
    if sr.method == "learned":
        model, meta, scale = _load_model(cfg)
        side = output_side(cfg, scale)
        described = f"learned x{scale} ({Path(sr.model).name}, sha256 {meta['sha256'][:12]})"
    else:
        side = output_side(cfg)
        described = f"{sr.interpolation} resize"
    key = _cache.cache_key({"kind": "sr", "version": UPSCALE_VERSION, "pixels": _pixels_digest(bundle),
                            "method": sr.method, "side": side, "interpolation": sr.interpolation,
                            "model": meta["sha256"] if meta else None})
    cfile = _cache.cache_file(cache_dir, "sr", key)
    arrays = _cache.load(cfile) if cfg.cache else None
    if arrays is None or any(arrays.get(f"{s}_images") is None for s in SPLITS):
        arrays = {}
        for s in SPLITS:
            imgs = bundle.splits[s].images
            if sr.method == "learned":
                up = upscale_learned(imgs, model)
                if up.shape[1:] != (side, side):  # data.sr.size asked for another side
                    up = upscale_resize(up, (side, side), sr.interpolation)
            else:
                up = upscale_resize(imgs, (side, side), sr.interpolation)
            arrays[f"{s}_images"] = up
        if cfg.cache:
            _cache.save(cfile, arrays)
    splits = {s: replace(bundle.splits[s], images=arrays[f"{s}_images"]) for s in SPLITS}
    note = f"super-resolution: {described}, {cfg.image_size} px -> {side} px, fed at {side} px"
    return replace(bundle, splits=splits, notes=list(bundle.notes) + [note])
