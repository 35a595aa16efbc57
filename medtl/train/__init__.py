"""The X-ray fine-tuning recipe: schedules, loop, resume."""
from .loop import finetune, resolve_runtime
from .schedule import lr_factor, scaled_lr

__all__ = ["finetune", "resolve_runtime", "lr_factor", "scaled_lr"]
