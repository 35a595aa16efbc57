"""The BlurPool filter of antialiased ResNets, as timm's ``aa_layer``.

:class:`BinomialBlurPool` computes exactly what timm's ``BlurPool2d(filt_size=3, stride=2)`` does
(reflect padding by 1, the binomial low-pass [1,2,1]x[1,2,1]/16, stride 2), but as two 2x2 box
filters (a binomial kernel is the convolution of box kernels): reflect-pad, average-pool 2x2
stride 1, average-pool 2x2 stride 2.  Why not timm's module as is: it runs the filter as a
depthwise (grouped) convolution, whose CPU kernels are slow in training -- a ResNet-18 step at
28 px took 1.7x the plain network's time with it and 1.2x with the pooling form (bf16,
channels-last, 2-core Xeon; ``scripts/bench_blurpool.py``).  The network wiring (where the blur
goes) stays timm's; ``tests/test_antialias_stylize.py`` checks equality with ``BlurPool2d``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class BinomialBlurPool(nn.Module):
    """Low-pass ([1,2,1]⊗[1,2,1]/16, reflect padding) then subsample by 2; no parameters."""

    def __init__(self, channels: int | None = None, filt_size: int = 3, stride: int = 2, **_: object) -> None:
        super().__init__()
        if filt_size != 3 or stride != 2:
            raise ValueError(f"BinomialBlurPool supports filt_size=3, stride=2 (got {filt_size}, {stride})")
        self.channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (1, 1, 1, 1), mode="reflect")
        return F.avg_pool2d(F.avg_pool2d(x, 2, 1), 2, 2)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, filter=binomial3, stride=2"
