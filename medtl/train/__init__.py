"""The X-ray fine-tuning recipe: schedules, loop, resume."""
from .loop import finetune
from .resumable import Progress, TrainingState, check_finite, settings_diff
from .runtime import Runtime, configure_process, resolve_runtime
from .schedule import lr_factor, scaled_lr

__all__ = ["Progress", "Runtime", "TrainingState", "check_finite", "configure_process", "finetune", "lr_factor",
           "resolve_runtime", "scaled_lr", "settings_diff"]
