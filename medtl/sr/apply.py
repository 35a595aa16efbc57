"""Upscaling (learned and Pillow resize) and the low-resolution degradation model.

All functions take and return uint8 stacks ``(N, H, W)``.  :func:`degrade` is the one
degradation used both to make training pairs and to evaluate, so a model is scored on the
same kind of input it was trained on.
"""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image

RESAMPLE = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "lanczos": Image.LANCZOS}


def _check_stack(images: np.ndarray, name: str = "images") -> np.ndarray:
    images = np.asarray(images)
    if images.ndim != 3:
        raise ValueError(f"{name}: expected a uint8 array (N, H, W), got shape {images.shape}")
    if images.dtype != np.uint8:
        raise ValueError(f"{name}: expected dtype uint8, got {images.dtype}")
    return images


def _model_device(model: torch.nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


@torch.no_grad()
def upscale_learned(images: np.ndarray, model: torch.nn.Module, batch_size: int = 64) -> np.ndarray:
    """Upscale uint8 (N, H, W) by ``model.scale`` with the SR model: fp32, no grad, in eval
    mode (output clamped to [0, 1]), rounded to uint8 (N, H*s, W*s).

    Uses the threads torch is set to (``torch.set_num_threads`` is the caller's choice) and the
    device the model is on.  The model's train/eval mode is restored afterwards.
    """
    images = _check_stack(images)
    s = int(model.scale)
    n, h, w = images.shape
    out = np.empty((n, h * s, w * s), np.uint8)
    if n == 0:
        return out
    device = _model_device(model)
    was_training = model.training
    model.eval()
    try:
        bs = max(1, int(batch_size))
        for i in range(0, n, bs):
            x = torch.from_numpy(np.ascontiguousarray(images[i:i + bs])).to(device).unsqueeze(1).float().div_(255.0)
            y = model(x).float().clamp_(0.0, 1.0).mul_(255.0).round_()
            out[i:i + bs] = y.squeeze(1).to(torch.uint8).cpu().numpy()
    finally:
        model.train(was_training)
    return out


def upscale_resize(images: np.ndarray, size: tuple[int, int], method: str = "bicubic") -> np.ndarray:
    """Resize uint8 (N, H, W) to ``size`` = (h, w) with Pillow's ``Image.resize`` (mode 'L').

    Pillow is the reference: medtl's plain-resize preprocessing and MedMNIST's larger sets are
    Pillow resizes.  ``method``: 'bicubic' | 'bilinear' | 'lanczos'.
    """
    images = _check_stack(images)
    if method not in RESAMPLE:
        raise ValueError(f"unknown resize method {method!r} (use one of {', '.join(RESAMPLE)})")
    h, w = int(size[0]), int(size[1])
    out = np.empty((len(images), h, w), np.uint8)
    for i, im in enumerate(images):
        out[i] = np.asarray(Image.fromarray(np.ascontiguousarray(im), "L").resize((w, h), RESAMPLE[method]))
    return out


def crop_to_multiple(images: np.ndarray, scale: int) -> np.ndarray:
    """The top-left (H - H % scale, W - W % scale) part, so that HR and LR grids align exactly."""
    h, w = images.shape[-2:]
    return images[..., : h - h % scale, : w - w % scale]


def add_noise(lr: np.ndarray, noise_std: float, rng: np.random.Generator | None) -> np.ndarray:
    """Add N(0, noise_std^2) (0-255 units) and round back to uint8; a no-op for noise_std == 0."""
    if not noise_std:
        return lr
    if rng is None:
        raise ValueError("degrade: noise_std > 0 needs a seeded rng (np.random.default_rng(seed))")
    noisy = lr.astype(np.float32) + rng.normal(0.0, float(noise_std), size=lr.shape).astype(np.float32)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def degrade(hr: np.ndarray, scale: int, noise_std: float = 0.0, rng: np.random.Generator | None = None) -> np.ndarray:
    """HR uint8 (N, H, W) -> LR uint8 (N, H // scale, W // scale).

    Pillow BICUBIC downsampling of the top-left (H // scale * scale, W // scale * scale) part
    (Pillow's convolution resize antialiases when reducing; cropping first keeps the LR pixel
    grid aligned with the HR one), then optional Gaussian noise of std ``noise_std`` (0-255
    units) drawn from ``rng``, rounded to uint8.
    """
    hr = _check_stack(hr, "hr")
    scale = int(scale)
    if scale < 1:
        raise ValueError(f"scale must be >= 1 (got {scale})")
    hr = crop_to_multiple(hr, scale)
    h, w = hr.shape[1] // scale, hr.shape[2] // scale
    if h < 1 or w < 1:
        raise ValueError(f"images of {hr.shape[1:]} px are too small for x{scale}")
    lr = np.empty((len(hr), h, w), np.uint8)
    for i, im in enumerate(hr):
        lr[i] = np.asarray(Image.fromarray(np.ascontiguousarray(im), "L").resize((w, h), Image.BICUBIC))
    return add_noise(lr, noise_std, rng)
