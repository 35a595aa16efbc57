"""Learning-rate schedules as pure functions of the optimisation step.

Warmup is linear from ``warmup_start_factor`` to 1 over ``warmup_steps`` (Goyal et al. 2017;
He et al., Bag of Tricks 2019), then cosine or step decay over the remaining steps.
Written by hand rather than chaining torch's LinearLR/CosineAnnealingLR/SequentialLR so
the factor is an explicit, testable function of the step and survives resume exactly.
"""
from __future__ import annotations

import math
from typing import Sequence


def lr_factor(step: int, total_steps: int, warmup_steps: int = 0, schedule: str = "cosine",
              milestones: Sequence[int] = (), gamma: float = 0.1,
              warmup_start_factor: float = 0.01, min_factor: float = 0.0) -> float:
    """Multiplier of the base LR at optimisation step ``step`` (0-based)."""
    if total_steps <= 0:
        return 1.0
    if warmup_steps > 0 and step < warmup_steps:
        return warmup_start_factor + (1.0 - warmup_start_factor) * step / warmup_steps
    if schedule == "constant":
        return 1.0
    if schedule == "step":
        return gamma ** sum(1 for m in milestones if step >= m)
    if schedule == "cosine":
        span = max(total_steps - warmup_steps, 1)
        t = min(max(step - warmup_steps, 0) / span, 1.0)
        return min_factor + (1.0 - min_factor) * 0.5 * (1.0 + math.cos(math.pi * t))
    raise ValueError(f"unknown schedule {schedule!r}")


def scaled_lr(lr: float, batch_size: int, reference_batch: int | None) -> float:
    """Linear scaling rule (opt-in): lr * batch_size / reference_batch."""
    if not reference_batch:
        return lr
    return lr * batch_size / reference_batch
