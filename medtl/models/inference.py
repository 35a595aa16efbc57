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


# ------------------------------------------------------------------------------ a finished run

def run_device(train_device: str, device: str | None = None) -> torch.device:
    """Where a finished run's model runs: ``device`` when given, else CUDA where the run's
    ``train.device`` allows it (auto/cuda) and one is present, else the CPU."""
    if device:
        return torch.device(device)
    return torch.device("cuda" if train_device in ("auto", "cuda") and torch.cuda.is_available() else "cpu")


class FinishedModel:
    """A finished run rebuilt for inference: the model (best checkpoint, fp32, eval mode, frozen)
    and the facts that turn its outputs into decisions: ``task``, ``classes``, ``threshold``
    (chosen on val), ``temperature`` (fitted on val; None where the run has none), ``device``,
    ``precision`` (the training precision), ``cfg``, ``record`` and ``checkpoint_sha256``."""

    def __init__(self, run, model: torch.nn.Module, cfg, device: torch.device, channels_last: bool):
        from ..io import sha256_file

        rec = run.record
        self.path, self.run, self.record, self.cfg = run.path, run, rec, cfg
        self.model, self.device, self.channels_last = model, device, channels_last
        self.task, self.classes = rec.task, list(rec.classes)
        self.threshold, self.temperature, self.precision = rec.decision_threshold, rec.temperature, rec.precision
        self.checkpoint_sha256 = sha256_file(run.checkpoint_path)

    def logits(self, x: torch.Tensor, batch_size: int = 256, amp_dtype: torch.dtype | None = None) -> np.ndarray:
        """fp32 logits (n, C) of images ``x`` (uint8 or float in [0, 1], (n,1,H,W))."""
        return predict_logits(self.model, x, device=self.device, batch_size=batch_size, amp_dtype=amp_dtype,
                              channels_last=self.channels_last).numpy()


def load_finished(run_dir, device: str | None = None, *, channels_last: bool = False,
                  plain_conv: bool = False) -> FinishedModel:
    """Rebuild a finished run for inference (the one loader of evaluate, the probes and export).

    ``plain_conv``: build with plain convolutions (``train.fast_conv`` off; the same weights and
    outputs up to float summation order), for a graph that is traced once for every input size.
    One-line :class:`~medtl.errors.DataError` for a folder that is not a finished run, or whose
    checkpoint does not fit the model its config describes."""
    from ..errors import DataError
    from ..runs import CHECKPOINT, Run
    from .classifier import model_for_run

    run = Run(run_dir).require_finished(CHECKPOINT)
    cfg = run.config()
    ckpt = run.load_checkpoint()
    classes = list(ckpt.get("classes") or run.record.classes)
    built = cfg.model_copy(update={"train": cfg.train.model_copy(update={"fast_conv": False})}) if plain_conv else cfg
    model, _ = model_for_run(built, len(classes))
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        raise DataError(f"{run.checkpoint_path}: does not fit the run's model ({str(exc).splitlines()[0]})") from None
    dev = run_device(cfg.train.device, device)
    model = model.float().to(dev).eval()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    for p in model.parameters():
        p.requires_grad_(False)
    return FinishedModel(run, model, cfg, dev, channels_last)
