"""A small FSRCNN/ESPCN-class super-resolution network for 1-channel images in [0, 1].

The network works in low-resolution space (cheap on CPU, any input size) and predicts a
residual on top of a bicubic upsample::

    y = bicubic(x) + PixelShuffle(conv3x3(expand(map(shrink(extract(x))))))

feature extraction conv5x5 (1->d) + PReLU, shrink conv1x1 (d->s) + PReLU, m mapping convs
3x3 (s->s) + PReLU each, expand conv1x1 (s->d) + PReLU, then conv3x3 (d->scale^2) and
PixelShuffle(scale).  The last convolution starts near zero, so an untrained model is
bicubic interpolation.  At inference (``model.eval()``) the output is clamped to [0, 1];
in training it is not (no dead gradients at the bounds).

Every hyper-parameter is in one plain ``arch`` dict stored in the model file, so a file
fully describes its model (:func:`medtl.sr.save_sr_model`).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import ConfigError

SCALES = (2, 3, 4)
DEFAULT_ARCH: dict[str, Any] = {"name": "fsrcnn-residual", "d": 56, "s": 12, "m": 4, "scale": 4}
ARCH_KEYS = frozenset(DEFAULT_ARCH)
# std of the last conv's initial weights: the residual starts below 0.1 grey level (Adam moves
# every weight by ~lr on its first step, so a small start does not slow training)
RESIDUAL_INIT_STD = 1e-5


def resolve_arch(arch: dict | None = None, **overrides) -> dict:
    """DEFAULT_ARCH updated with ``arch`` and ``overrides``; ConfigError on unknown keys or bad values."""
    out = dict(DEFAULT_ARCH)
    out.update(arch or {})
    out.update(overrides)
    unknown = sorted(set(out) - ARCH_KEYS)
    if unknown:
        raise ConfigError(f"SR arch: unknown key(s) {', '.join(unknown)} (valid: {', '.join(sorted(ARCH_KEYS))})")
    if out["name"] != DEFAULT_ARCH["name"]:
        raise ConfigError(f"SR arch: unknown name {out['name']!r} (available: {DEFAULT_ARCH['name']})")
    for k in ("d", "s", "m", "scale"):
        v = out[k]
        if isinstance(v, bool) or not isinstance(v, int):
            raise ConfigError(f"SR arch: {k} must be an integer (got {v!r})")
    if out["scale"] not in SCALES:
        raise ConfigError(f"SR arch: scale must be one of {', '.join(map(str, SCALES))} (got {out['scale']})")
    if out["d"] < 1 or out["s"] < 1 or out["m"] < 0:
        raise ConfigError(f"SR arch: need d >= 1, s >= 1, m >= 0 (got d={out['d']}, s={out['s']}, m={out['m']})")
    return out


class SRNet(nn.Module):
    """FSRCNN-style body, sub-pixel (ESPCN) output, global bicubic skip."""

    def __init__(self, d: int = 56, s: int = 12, m: int = 4, scale: int = 4):
        super().__init__()
        self.scale = int(scale)
        layers: list[nn.Module] = [nn.Conv2d(1, d, 5, padding=2), nn.PReLU(d),
                                   nn.Conv2d(d, s, 1), nn.PReLU(s)]
        for _ in range(m):
            layers += [nn.Conv2d(s, s, 3, padding=1), nn.PReLU(s)]
        layers += [nn.Conv2d(s, d, 1), nn.PReLU(d)]
        self.body = nn.Sequential(*layers)
        self.tail = nn.Conv2d(d, scale * scale, 3, padding=1)
        self.shuffle = nn.PixelShuffle(scale)
        self._init_weights()

    def _init_weights(self) -> None:
        for mod in self.body:
            if isinstance(mod, nn.Conv2d):
                # PReLU starts at slope 0.25: Kaiming for leaky ReLU with that slope
                nn.init.kaiming_normal_(mod.weight, a=0.25, nonlinearity="leaky_relu")
                nn.init.zeros_(mod.bias)
        nn.init.normal_(self.tail.weight, std=RESIDUAL_INIT_STD)
        nn.init.zeros_(self.tail.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, 1, H, W) in [0, 1] -> (N, 1, H*scale, W*scale)."""
        base = F.interpolate(x, scale_factor=self.scale, mode="bicubic", align_corners=False)
        y = base + self.shuffle(self.tail(self.body(x)))
        if not self.training:
            y = y.clamp(0.0, 1.0)
        return y


def build_sr_model(arch: dict) -> SRNet:
    """A fresh (randomly initialised, from torch's global RNG) model for ``arch``."""
    a = resolve_arch(arch)
    return SRNet(d=a["d"], s=a["s"], m=a["m"], scale=a["scale"])
