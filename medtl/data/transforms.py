"""Tensor conversion and batch-wise, seeded augmentation (no per-image Python loop)."""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ..config import AugmentConfig


def to_tensor(images_uint8: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W) (or (H, W)) -> float32 (N, 1, H, W) in [0, 1]."""
    a = np.asarray(images_uint8)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3:
        raise ValueError(f"to_tensor expects (N, H, W) images, got shape {a.shape}")
    return torch.from_numpy(np.ascontiguousarray(a)).to(torch.float32).div_(255.0).unsqueeze(1)


def _uniform(n: int, lo: float, hi: float, generator: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=generator, dtype=torch.float32) * (hi - lo) + lo


def augment_batch(x: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """Random affine (translate/scale/rotate, zero padding), optional h-flip, brightness and
    contrast jitter, clamped to [0, 1]; then, where enabled, a bias field (MONAI's RandBiasField)
    and a gamma jitter (x**γ on [0, 1]), clamped again.  Every random number comes from
    ``generator`` (CPU), in a fixed order, so the same generator state gives the same output; the
    bias field and gamma draw from it only when enabled, after everything else, so a config
    without them consumes exactly the stream it did before they existed."""
    if x.ndim != 4:
        raise ValueError(f"augment_batch expects (N, C, H, W), got shape {tuple(x.shape)}")
    n = x.shape[0]
    # draw everything up front on the CPU generator (fixed order, fixed count)
    angle = _uniform(n, -cfg.rotate, cfg.rotate, generator) * (math.pi / 180.0)
    zoom = _uniform(n, 1.0 - cfg.scale, 1.0 + cfg.scale, generator)
    tx = _uniform(n, -cfg.translate, cfg.translate, generator) * 2.0  # fraction of side -> [-1,1] units
    ty = _uniform(n, -cfg.translate, cfg.translate, generator) * 2.0
    flip = torch.rand(n, generator=generator) < 0.5
    bright = _uniform(n, -cfg.brightness, cfg.brightness, generator)
    contrast = _uniform(n, 1.0 - cfg.contrast, 1.0 + cfg.contrast, generator)
    if not cfg.hflip:
        flip = torch.zeros_like(flip)

    out = x
    if cfg.rotate > 0 or cfg.scale > 0 or cfg.translate > 0 or cfg.hflip:
        cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
        sx = torch.where(flip, -1.0, 1.0)
        theta = torch.stack([
            torch.stack([cos * sx, -sin, tx], dim=1),
            torch.stack([sin * sx, cos, ty], dim=1),
        ], dim=1).to(device=x.device, dtype=x.dtype)  # maps output coords to input coords
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if cfg.brightness > 0 or cfg.contrast > 0:
        c = contrast.to(device=x.device, dtype=x.dtype).view(n, 1, 1, 1)
        b = bright.to(device=x.device, dtype=x.dtype).view(n, 1, 1, 1)
        mean = out.mean(dim=(1, 2, 3), keepdim=True)
        out = (out - mean) * c + mean + b
    out = out.clamp(0.0, 1.0)
    # intensity families (medtl/data/intensity.py): acquisition (bias field) before display (gamma)
    if cfg.bias_field > 0:  # one generator draw seeds MONAI's per-image fields
        from .intensity import apply_bias_field

        out = apply_bias_field(out, cfg.bias_field, generator).clamp(0.0, 1.0)
    if cfg.gamma > 0:  # n draws: ln γ per image; x**γ keeps [0, 1]
        g = torch.exp(_uniform(n, -cfg.gamma, cfg.gamma, generator))
        out = out ** g.to(device=x.device, dtype=x.dtype).view(n, 1, 1, 1)
    return out
