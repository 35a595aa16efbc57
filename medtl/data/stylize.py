"""Stylized X-ray augmentation (``data.augment.stylize``): Stylized-ImageNet for radiographs.

Geirhos et al. (ICLR 2019) trained on ImageNet images whose texture was replaced by a painting's
(AdaIN style transfer) so that only shape predicts the label; the networks became shape-biased and
more robust to noise.  The AdaIN route needs a trained VGG encoder/decoder, which cannot be
downloaded here, so medtl replaces texture with the Fourier *amplitude–phase recombination* of
Chen et al. (CVPR 2021, "Amplitude-Phase Recombination"; Oppenheim & Lim 1981 for the principle):
the Fourier phase of an image carries its structure (edges, contours, where things are) and the
amplitude spectrum its texture and energy statistics.  A stylized image keeps the phase of the
training image and takes the amplitude spectrum of another, randomly chosen training image
(its "style"), with the image's own mean intensity (the DC term) kept, so brightness is not a
partner's cue.  The result is clamped to [0, 1].

It differs on purpose from the cue-conflict construction of ``medtl probe shape-bias`` (a
low-/high-frequency split, :mod:`medtl.probes.shape_bias`): a probe built from the training
transform itself would only measure that the model learned the transform.

Determinism: which images are stylized in epoch ``e`` and the partner of each is a function of
(seed, epoch, dataset index) only -- drawn for the whole training set at the start of an epoch
from ``numpy.random.default_rng([seed, epoch, STREAM])`` -- so neither batch order nor resuming
changes it.  Partners are drawn from the un-augmented training images (any class, never the image
itself), and stylizing happens before the geometric/intensity augmentation.
"""
from __future__ import annotations

import numpy as np
import torch

#: seed stream of the stylize plan (distinct from the data-order and augmentation streams)
STREAM = 0x5717


def stylize_plan(n: int, p: float, seed: int, epoch: int) -> tuple[np.ndarray, np.ndarray]:
    """``(apply, partner)`` for the ``n`` training images in ``epoch``: ``apply[i]`` says whether
    image ``i`` is stylized, ``partner[i]`` (!= i) whose amplitude spectrum it takes."""
    rng = np.random.default_rng([int(seed) % (2**63), int(epoch), STREAM])
    apply = rng.random(n) < p
    if n < 2:
        return np.zeros(n, dtype=bool), np.zeros(n, dtype=np.int64)
    partner = rng.integers(0, n - 1, n)
    partner = partner + (partner >= np.arange(n))  # skip the image itself
    return apply, partner.astype(np.int64)


def amplitude_swap(x: torch.Tensor, style: torch.Tensor, keep_dc: bool = True) -> torch.Tensor:
    """Images (B,C,H,W) in [0,1] with the phase of ``x`` and the amplitude spectrum of ``style``
    (same shape); ``keep_dc`` keeps each image's own mean intensity.  Clamped to [0, 1]."""
    if x.shape != style.shape:
        raise ValueError(f"amplitude_swap: shapes differ {tuple(x.shape)} vs {tuple(style.shape)}")
    fx = torch.fft.rfft2(x.float())
    amp = torch.fft.rfft2(style.float()).abs()
    if keep_dc:
        amp[..., 0, 0] = fx[..., 0, 0].abs()
    out = torch.fft.irfft2(torch.polar(amp, torch.angle(fx)), s=x.shape[-2:])
    return out.clamp_(0.0, 1.0).to(x.dtype)


def stylize_batch(x: torch.Tensor, idx: torch.Tensor, images: torch.Tensor, apply: np.ndarray,
                  partner: np.ndarray) -> torch.Tensor:
    """Stylize the images of a batch that the epoch's plan selects.

    ``x``: float (B,1,H,W) in [0,1], the training images ``images[idx]`` (uint8 (N,1,H,W));
    returns a new tensor (``x`` is not modified)."""
    sel = torch.from_numpy(apply[idx.numpy()])
    if not bool(sel.any()):
        return x
    src = torch.from_numpy(partner[idx.numpy()[sel.numpy()]])
    style = images[src].float().div_(255.0).to(x.device)
    out = x.clone()
    out[sel.to(x.device)] = amplitude_swap(x[sel.to(x.device)], style)
    return out
