"""Batched inference, shared by training-time evaluation and the probes."""
from __future__ import annotations

import numpy as np
import torch


@torch.no_grad()
def predict_logits(model: torch.nn.Module, x: torch.Tensor, *, device: torch.device | str = "cpu",
                   batch_size: int = 256, amp_dtype: torch.dtype | None = None,
                   channels_last: bool = False) -> torch.Tensor:
    """Logits (float32, CPU) for images ``x`` (N,1,H,W) in eval mode.

    ``x`` is uint8 (scaled by 1/255 batch by batch, so the whole set is never held as floats)
    or float in [0, 1].  ``amp_dtype`` None runs fp32 with autocast disabled.
    """
    model.eval()
    device = torch.device(device)
    outs = []
    for i in range(0, len(x), batch_size):
        xb = x[i:i + batch_size].to(device, non_blocking=True)
        xb = xb.float().div_(255.0) if xb.dtype == torch.uint8 else xb.float()
        if channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        if amp_dtype is None:
            ctx = torch.autocast(device_type=device.type, enabled=False)
        else:
            ctx = torch.autocast(device_type=device.type, dtype=amp_dtype)
        with ctx:
            outs.append(model(xb).float().cpu())
    return torch.cat(outs) if outs else torch.empty(0)


def predict_proba(model: torch.nn.Module, x: torch.Tensor, device: torch.device | str = "cpu",
                  batch_size: int = 512, amp_dtype: torch.dtype | None = None,
                  channels_last: bool = False) -> np.ndarray:
    """Softmax probabilities (n, C) as float64 numpy, in eval mode; fp32 forward unless ``amp_dtype``."""
    logits = predict_logits(model, x, device=device, batch_size=batch_size, amp_dtype=amp_dtype,
                            channels_last=channels_last)
    if logits.numel() == 0:
        return np.zeros((0, 0))
    return torch.softmax(logits, 1).double().numpy()
