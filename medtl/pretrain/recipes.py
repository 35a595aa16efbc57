"""The pretraining recipes, named as the seeds name them, as overrides of a fine-tuning config.

A pretraining run *is* a supervised training run on the source (fractals or a labelled image
folder), so it runs through :func:`medtl.train.finetune` (resume, progress, every recipe key)
and differs only in these settings:

``in``          plain supervised: SGD with momentum, step schedule (x0.1 at 1/2 and 3/4), no
                warmup, no label smoothing, no mixup, no zero-gamma, weight decay on every
                parameter (the standard ImageNet recipe of He et al. 2016);
``sin``         ``in`` with every training image re-textured (``data.augment.stylize`` = 1): only
                shape predicts the class (Geirhos et al., ICLR 2019);
``sin+in``      ``in`` with half the images re-textured;
``sin+in->in``  ``sin+in``, then a second stage on plain images from its weights, at a tenth of
                the learning rate (Geirhos et al.'s SIN+IN→IN);
``tricks``      Bag of Tricks (He et al., CVPR 2019): cosine schedule with linear warmup, label
                smoothing 0.1, mixup (α = 0.2), zero-gamma on the last BN of every residual block,
                no weight decay on biases and BN parameters.

The re-texturing is medtl's stylize (:mod:`medtl.data.stylize`): pixels permuted within small
windows and the histogram matched to another training image.  It destroys local texture and
keeps the global outline, and it is of another transform family than the shape-bias probe's
cue-conflict images (a low-pass of one image plus a high-pass of another).
"""
from __future__ import annotations

RECIPES = ("in", "sin", "sin+in", "sin+in->in", "tricks")
FAMILY = {"in": "IN", "sin": "SIN", "sin+in": "SIN+IN", "sin+in->in": "SIN+IN→IN", "tricks": "tricks"}
STYLIZE = {"in": 0.0, "sin": 1.0, "sin+in": 0.5, "sin+in->in": 0.5, "tricks": 0.0}

_PLAIN = {"train.schedule": "step", "train.warmup_epochs": 0.0, "train.label_smoothing": 0.0,
          "train.mixup_alpha": 0.0, "train.bn_gamma": {}, "train.no_bias_decay": False}
_TRICKS = {"train.schedule": "cosine", "train.label_smoothing": 0.1, "train.mixup_alpha": 0.2,
           "train.no_bias_decay": True}
# the last BN of each residual block: BasicBlock's bn2, Bottleneck's bn3 (zero-gamma, He et al. 2019)
ZERO_GAMMA = {"resnet18": "layer*.*.bn2", "resnet50": "layer*.*.bn3", "resnet50d": "layer*.*.bn3"}


def stage_overrides(recipe: str, stage: int, backbone: str, epochs: int, stylize: float | None) -> dict:
    """The fine-tuning-config overrides of ``recipe``'s stage (0, or 1 for the ``->in`` stage)."""
    p = STYLIZE[recipe] if stylize is None else float(stylize)
    if recipe == "tricks":
        out = dict(_TRICKS) | {"train.warmup_epochs": float(max(1, round(0.05 * epochs)))}
        pattern = ZERO_GAMMA.get(backbone)
        out["train.bn_gamma"] = {pattern: 0.0} if pattern else {}
        return out | {"data.augment.stylize": p}
    out = dict(_PLAIN) | {"data.augment.stylize": p}
    if recipe == "sin+in->in" and stage == 1:
        out["data.augment.stylize"] = 0.0
    return out


def stages(recipe: str) -> list[str]:
    """Stage names (run folders under the pretrain folder)."""
    return ["sin+in", "in"] if recipe == "sin+in->in" else [recipe]


__all__ = ["FAMILY", "RECIPES", "STYLIZE", "ZERO_GAMMA", "stage_overrides", "stages"]
