"""Knowledge distillation (Hinton et al., 2015), the teacher option of the Bag of Tricks recipe
(He et al., CVPR 2019, section 5.3).

``train.teacher`` names a finished run (a run folder, or a ``medtl pretrain`` output folder, whose
last stage is then the teacher) trained on the same classes.  Every training batch, after the
augmentation and mixup, goes through the teacher too (eval mode, no gradient), and the loss is

    (1 - alpha) * task loss + alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T))

(for multi-label targets, the binary cross-entropy against the teacher's tempered sigmoids).  The
T^2 keeps the soft term's gradient on the scale of the hard term's as T grows.  Written here
rather than taken from a library: timm's distillation lives in its training script, not in its
package, and it is these three lines.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ..errors import ConfigError


@dataclass
class Teacher:
    model: torch.nn.Module
    run_dir: str
    checkpoint_sha256: str
    alpha: float
    temperature: float

    def facts(self) -> dict:
        """What the run record says about the teacher."""
        return {"run": self.run_dir, "checkpoint_sha256": self.checkpoint_sha256, "alpha": self.alpha,
                "temperature": self.temperature}


def teacher_run_dir(path: str | Path) -> Path:
    """The teacher's run folder: ``path`` itself, or the last stage of a ``medtl pretrain`` output
    folder (its ``pretrain.json``)."""
    import json

    p = Path(path).expanduser()
    pj = p / "pretrain.json"
    if pj.is_file():
        try:
            stages = json.loads(pj.read_text(encoding="utf-8"))["stages"]
            return Path(stages[-1]["run"])
        except (ValueError, KeyError, IndexError, TypeError):
            raise ConfigError(f"{pj}: not a medtl pretrain record (no stages); name the teacher's run folder") from None
    return p


def load_teacher(path: str | Path, classes: list[str], multilabel: bool, device: torch.device,
                 alpha: float, temperature: float) -> Teacher:
    """The finished run at ``path`` as a frozen teacher; one-line errors for a folder that is not a
    finished run or whose classes differ from the student's."""
    from ..models.inference import load_finished

    run_dir = teacher_run_dir(path)
    fm = load_finished(run_dir, device=str(device))
    if list(fm.classes) != list(classes):
        raise ConfigError(f"train.teacher: {run_dir} was trained on other classes ({len(fm.classes)}: "
                          f"{', '.join(map(str, fm.classes[:4]))}...) than this run ({len(classes)}: "
                          f"{', '.join(map(str, classes[:4]))}...)")
    if (fm.task == "multilabel") != bool(multilabel):
        raise ConfigError(f"train.teacher: {run_dir} is a {fm.task} model; this run is "
                          f"{'multi-label' if multilabel else 'single-label'}")
    return Teacher(fm.model, str(run_dir), fm.checkpoint_sha256, float(alpha), float(temperature))


def distill_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float,
                 multilabel: bool = False) -> torch.Tensor:
    """T^2 times the divergence of the student's tempered outputs from the teacher's (batch mean)."""
    t = float(temperature)
    s, r = student.float() / t, teacher.float().detach() / t
    if multilabel:
        return F.binary_cross_entropy_with_logits(s, torch.sigmoid(r)) * t * t
    return F.kl_div(F.log_softmax(s, 1), F.log_softmax(r, 1), reduction="batchmean", log_target=True) * t * t


__all__ = ["Teacher", "distill_loss", "load_teacher", "teacher_run_dir"]
