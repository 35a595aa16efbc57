"""Data-parallel training on torch.distributed (launched by ``torchrun``), CPU (gloo) or CUDA (nccl).

    torchrun --standalone --nproc_per_node 2 -m medtl pretrain --recipe sin --name NAME --out OUT
    torchrun --standalone --nproc_per_node 4 -m medtl finetune --config C.yaml --out OUT

The same command and config as a one-process run; ``train.batch_size`` stays the **global**
batch.  Designed so that an N-process run equals the one-process run at the same global batch up
to float summation order:

* every rank draws the whole global batch from the same seeded generators (order, augmentation,
  stylize, mixup) and keeps its own contiguous shard of it, so the data are those of the
  one-process run (the batch must split evenly: ``batch_size % world_size == 0``);
* BatchNorm normalises over the global batch (CUDA: :class:`torch.nn.SyncBatchNorm`; CPU:
  :class:`GlooSyncBatchNorm` below, since torch's runs on CUDA only);
* gradients are averaged by :class:`~torch.nn.parallel.DistributedDataParallel`: with equal
  shards the mean of the shard means is the global mean;
* rank 0 alone evaluates, writes checkpoints, the resumable state, logs and ``metrics.json``; the
  other ranks wait at a barrier after each epoch and read the finished record at the end.  A
  killed run resumes from the state rank 0 wrote, on every rank.

Not supported with more than one process (one-line refusal): ``class_weighting: balanced``
(its weighted mean is not a mean of shard means).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from ..errors import ConfigError


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def shard(self, *tensors):
        """This rank's contiguous shard of each global-batch tensor (None passes through)."""
        if not self.enabled:
            return tensors
        out = []
        for t in tensors:
            if t is None:
                out.append(None)
                continue
            n = len(t) // self.world
            out.append(t[self.rank * n:(self.rank + 1) * n])
        return tuple(out)

    def mean(self, value: torch.Tensor) -> float:
        """The mean over ranks of a scalar (the global-batch loss from the shard losses)."""
        if not self.enabled:
            return float(value.detach())
        v = value.detach().float().reshape(1).clone()
        dist.all_reduce(v)
        return float(v) / self.world


def current() -> Dist:
    """This process's place in the process group (one process when none is initialised)."""
    if dist.is_available() and dist.is_initialized():
        return Dist(dist.get_rank(), dist.get_world_size())
    return Dist()


def init_from_env() -> Dist:
    """Join the process group that ``torchrun`` describes (``WORLD_SIZE`` > 1); an entry point
    calls this once, since a process group is process-wide state.  One process otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1 or (dist.is_available() and dist.is_initialized()):
        return current()
    if not dist.is_available():
        raise ConfigError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    cuda = torch.cuda.is_available() and os.environ.get("MEDTL_DIST_BACKEND", "") != "gloo"
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend="nccl" if cuda else "gloo")
    return current()


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks whose gradient is the sum over ranks of the incoming gradients."""

    @staticmethod
    def forward(ctx, x):
        y = x.clone()
        dist.all_reduce(y)
        return y

    @staticmethod
    def backward(ctx, g):
        g = g.clone()
        dist.all_reduce(g)
        return g


class GlooSyncBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are those of the global batch over all ranks.

    Written here because :class:`torch.nn.SyncBatchNorm` runs on CUDA only.  Two-pass statistics
    (mean, then the mean squared deviation) in fp32; running statistics updated as BatchNorm2d
    does (unbiased variance); eval mode is plain BatchNorm2d.  Tensor names are BatchNorm2d's, so
    checkpoints are interchangeable."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or not (dist.is_available() and dist.is_initialized()):
            return super().forward(x)
        xf = x.float()
        c = x.shape[1]
        count = torch.tensor([x.numel() / c], dtype=torch.float32, device=x.device)
        dist.all_reduce(count)
        n = count.squeeze(0)
        mean = _AllReduceSum.apply(xf.sum((0, 2, 3))) / n
        centred = xf - mean.view(1, c, 1, 1)
        var = _AllReduceSum.apply((centred * centred).sum((0, 2, 3))) / n
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(var.detach() * (n / max(float(n) - 1, 1.0)), alpha=m)
        y = centred * torch.rsqrt(var + self.eps).view(1, c, 1, 1)
        if self.affine:
            y = y * self.weight.view(1, c, 1, 1) + self.bias.view(1, c, 1, 1)
        return y.to(x.dtype)


def _to_gloo_sync(module: nn.Module) -> nn.Module:
    """BatchNorm2d layers replaced by :class:`GlooSyncBatchNorm` sharing their tensors."""
    if isinstance(module, nn.BatchNorm2d) and not isinstance(module, GlooSyncBatchNorm):
        new = GlooSyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                                module.track_running_stats)
        if module.affine:
            new.weight, new.bias = module.weight, module.bias
        if module.track_running_stats:
            new.running_mean, new.running_var = module.running_mean, module.running_var
            new.num_batches_tracked = module.num_batches_tracked
        new.train(module.training)
        return new
    for name, child in module.named_children():
        setattr(module, name, _to_gloo_sync(child))
    return module


def check_config(cfg, d: Dist) -> None:
    """One-line refusals of settings a data-parallel run cannot reproduce."""
    if not d.enabled:
        return
    if cfg.train.batch_size % d.world:
        raise ConfigError(f"train.batch_size {cfg.train.batch_size} (the global batch) does not split evenly over "
                          f"{d.world} processes")
    if cfg.train.class_weighting != "none":
        raise ConfigError("train.class_weighting: balanced is not supported data-parallel (run one process)")


def wrap(model: nn.Module, device: torch.device, d: Dist) -> nn.Module:
    """The module to train: ``model`` itself in one process; else ``model`` with synchronised
    BatchNorm (in place: ``model`` keeps its tensor names) inside DistributedDataParallel."""
    if not d.enabled:
        return model
    if device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    else:
        model = _to_gloo_sync(model)
    if not any(p.requires_grad for p in model.parameters()):
        return model
    return nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                               broadcast_buffers=False)


__all__ = ["Dist", "GlooSyncBatchNorm", "check_config", "current", "init_from_env", "wrap"]
