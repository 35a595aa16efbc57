"""Device and precision of a run, and the process-wide settings that entry points apply.

Library functions never change process-wide state: the CLI and the sweep's worker entry point
call :func:`configure_process` (thread count, malloc tuning) before they train.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import ConfigError


@dataclass
class Runtime:
    device: torch.device
    amp_dtype: torch.dtype | None  # None: fp32
    channels_last: bool
    use_scaler: bool

    @property
    def precision(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.amp_dtype]

    def autocast(self):
        """The autocast context of this runtime (disabled for fp32)."""
        if self.amp_dtype is None:
            return torch.autocast(device_type=self.device.type, enabled=False)
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)


def cpu_has_bf16() -> bool:
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:  # noqa: BLE001 - older torch without the op
        return False


def resolve_runtime(train_cfg) -> Runtime:
    """Device, autocast dtype, memory format and gradient scaling for ``train_cfg``."""
    dev = train_cfg.device
    if dev == "auto":
        dev = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(dev)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device={train_cfg.device}: CUDA is not available on this machine")
    prec = train_cfg.precision
    if prec == "auto":
        prec = "fp16" if device.type == "cuda" else ("bf16" if cpu_has_bf16() else "fp32")
    if prec == "fp16" and device.type != "cuda":
        raise ConfigError("train.precision=fp16 needs CUDA; use bf16 or fp32 on CPU")
    amp = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[prec]
    cl = train_cfg.channels_last
    if cl is None:
        cl = device.type == "cuda" or amp is not None
    return Runtime(device, amp, bool(cl), use_scaler=(amp == torch.float16))


def configure_process(num_threads: int | None = None) -> None:
    """Process-wide settings for a training process; call from entry points only.

    ``num_threads`` sets torch's intra-op threads (None keeps the default); glibc malloc keeps
    freed per-step buffers in the heap (:mod:`medtl._malloc`).
    """
    from .._malloc import keep_freed_memory

    if num_threads:
        torch.set_num_threads(int(num_threads))
    keep_freed_memory()
