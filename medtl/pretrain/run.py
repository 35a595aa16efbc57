"""``medtl pretrain``: train a source backbone on formula-driven fractals or a labelled image folder,
by a named recipe, and register it as a weight source that any config can name.

The config is a fine-tuning config (``data``, ``model``, ``train``, ``seed``) plus a ``pretrain``
section (:class:`PretrainSpec`); the recipe's settings (:mod:`medtl.pretrain.recipes`) are applied
over it, so ``--set train.lr=...`` still tunes what the recipe leaves alone.  Each stage is an
ordinary run folder ``OUT/<stage>/`` trained by :func:`medtl.train.finetune`: a progress bar, and
an interrupted pretrain (kill -9 included) resumes from its last finished epoch when re-run.

At the end the backbone of the best checkpoint (the head dropped) is written to
``OUT/backbone.pt`` (a plain state dict in the architecture's own tensor names, loaded with
``weights_only=True``), registered under ``pretrain.name`` with its sha256 pinned and its
provenance (:mod:`medtl.models.local_weights`), and described in ``OUT/pretrain.json``.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from .. import __version__
from ..config import FRACTALDB, RunConfig, _Strict, apply_override, build_config, load_config
from ..errors import ConfigError
from ..io import json_safe, write_json_atomic
from .recipes import FAMILY, RECIPES, stage_overrides, stages

log = logging.getLogger("medtl")

PRETRAIN_JSON = "pretrain.json"
BACKBONE_FILE = "backbone.pt"


class PretrainSpec(_Strict):
    """What to pretrain on and how (``pretrain.*`` keys)."""

    source: str = FRACTALDB
    recipe: Literal["in", "sin", "sin+in", "sin+in->in", "tricks"] = "in"
    name: str | None = Field(None, description="registry name of the weights made (default: the config's name)")
    # builtin:fractaldb only (a folder source has its own classes and images)
    classes: int = Field(100, ge=2)
    instances: int = Field(100, ge=2, description="training images per class")
    eval_instances: int = Field(10, ge=1, description="val and test images per class")
    fractal_seed: int = 0
    # class: every fractal class also carries its own texture (medtl.data.fractaldb.class_texture)
    fractal_texture: Literal["none", "class"] = "none"
    image_size: int = Field(32, ge=8, le=1024)
    epochs: int = Field(10, ge=1)
    # sin+in->in: epochs of the plain-image stage (default: a third of epochs, at least 1)
    in_epochs: int | None = Field(None, ge=1)
    # probability that a training image is re-textured (default: the recipe's: sin 1, sin+in 0.5)
    stylize: float | None = Field(None, ge=0, le=1)
    # tricks only: distil from this teacher (a medtl pretrain output folder or a finished run folder
    # on the same source classes); train.distill_alpha / train.distill_temperature tune it
    teacher: str | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v):
        if v is not None and (not v or any(c in v for c in "/\\ \t\n") or v.lower() == "none"):
            raise ValueError("a weight name has no spaces or slashes and is not 'none'")
        return v


class PretrainConfig(RunConfig):
    """A fine-tuning config plus ``pretrain``."""

    name: str = "pretrain"
    pretrain: PretrainSpec = Field(default_factory=PretrainSpec)


def load_pretrain_config(path: str | Path | None, overrides: list[str] | None = None) -> PretrainConfig:
    """``--config FILE`` (optional) and ``--set key=value`` overrides, as finetune reads them."""
    if path is None:
        return build_config({}, overrides, source="pretrain config", schema=PretrainConfig)
    return load_config(path, overrides, schema=PretrainConfig)


def stage_config(cfg: PretrainConfig, stage: int, previous: Path | None) -> RunConfig:
    """The fine-tuning config of one stage: the run's keys, the source, the recipe on top."""
    p = cfg.pretrain
    raw = cfg.model_dump(mode="json")
    raw.pop("pretrain")
    raw["name"] = f"{cfg.name}-{stages(p.recipe)[stage]}"
    raw["data"] |= {"path": p.source, "image_size": p.image_size}
    if p.source == FRACTALDB:
        raw["data"]["fractal"] = {"classes": p.classes, "instances": p.instances,
                                  "eval_instances": p.eval_instances, "seed": p.fractal_seed} | (
            {"texture": p.fractal_texture} if p.fractal_texture != "none" else {})
    elif p.model_fields_set & {"classes", "instances", "eval_instances", "fractal_seed", "fractal_texture"}:
        raise ConfigError(f"pretrain.classes/instances/eval_instances/fractal_seed/fractal_texture describe {FRACTALDB}; "
                          f"the source {p.source} has its own classes and images")
    epochs = p.epochs if stage == 0 else (p.in_epochs or max(1, p.epochs // 3))
    over = stage_overrides(p.recipe, stage, cfg.model.backbone, epochs, p.stylize) | {"train.epochs": epochs}
    if p.teacher:
        if p.recipe != "tricks":
            raise ConfigError(f"pretrain.teacher: knowledge distillation is the tricks recipe's option (recipe is "
                              f"{p.recipe}); for another recipe set train.teacher")
        over["train.teacher"] = str(Path(p.teacher).expanduser().resolve())
    if stage == 1:  # sin+in -> in: from the first stage's backbone, at a tenth of the learning rate
        over |= {"model.weights": str(previous), "train.lr": cfg.train.lr * 0.1}
    for key, value in over.items():
        apply_override(raw, key, value)
    return RunConfig.model_validate(raw)


def export_backbone(run_dir: Path, out: Path) -> Path:
    """The best checkpoint's backbone (``backbone.*`` tensors, prefix dropped; no head, no
    normalisation buffers) as a plain state dict, atomically."""
    from ..lifecycle import save_torch_atomic
    from ..runs import Run

    ckpt = Run(run_dir).load_checkpoint()
    sd = {k[len("backbone."):]: v.detach().cpu().contiguous() for k, v in ckpt["model"].items()
          if k.startswith("backbone.")}
    if not sd:
        raise ConfigError(f"{run_dir}: its checkpoint holds no backbone tensors")
    save_torch_atomic(sd, out)
    return out


def pretrain(cfg: PretrainConfig, out: str | Path, progress: bool = True, restart: bool = False) -> dict:
    """Pretrain per ``cfg`` into ``out`` (one run folder per stage), export and register the
    backbone; returns the provenance record (also ``OUT/pretrain.json``)."""
    from ..models.archs import get_architecture
    from ..models.local_weights import register_local
    from ..models.weights import IMAGENET_MEAN, IMAGENET_STD
    from ..train import finetune
    from ..train.distributed import current

    out = Path(out)
    p = cfg.pretrain
    name = p.name or cfg.name
    spec = get_architecture(cfg.model.backbone)
    if cfg.model.weights.lower() != "none":
        raise ConfigError("model.weights: a pretrain run starts from random init (give 'none')")
    d = current()  # data-parallel (torchrun): every rank trains, rank 0 exports and registers
    previous: Path | None = None
    records = []
    names = stages(p.recipe)
    for i, stage in enumerate(names):
        run_dir = out / stage
        rec = finetune(stage_config(cfg, i, previous), run_dir, progress=progress, restart=restart)
        records.append({"stage": stage, "run": str(run_dir), "epochs": rec.run.epochs, "best_epoch": rec.run.best_epoch,
                        "val_acc": rec.val.acc, "val_auc": rec.val.auc, "test_acc": rec.test.acc,
                        "test_auc": rec.test.auc, "wall_time_s": rec.run.wall_time_s,
                        "teacher": rec.run.as_dict().get("teacher")})
        last = i + 1 == len(names)  # an earlier stage's backbone starts the next stage
        previous = out / (BACKBONE_FILE if last else f"{stage}-{BACKBONE_FILE}")
        if d.main:
            export_backbone(run_dir, previous)
        d.barrier()
    if not d.main:
        d.barrier()  # rank 0 registers the weights and writes pretrain.json
        return json.loads((out / PRETRAIN_JSON).read_text(encoding="utf-8"))
    fmt = "timm" if (spec.library == "timm" or cfg.model.antialias != "none") else "torchvision"
    provenance = json_safe({
        "recipe": p.recipe, "family": FAMILY[p.recipe], "source": p.source,
        "fractal": {"classes": p.classes, "instances": p.instances, "seed": p.fractal_seed} | (
            {"texture": p.fractal_texture} if p.fractal_texture != "none" else {}) if p.source == FRACTALDB
        else None, "image_size": p.image_size, "epochs": [r["epochs"] for r in records], "seed": cfg.seed,
        "backbone": cfg.model.backbone, "antialias": cfg.model.antialias, "stages": records,
        "teacher": records[-1].get("teacher"),
        "medtl_version": __version__, "out": str(out)})
    entry = register_local(name, out / BACKBONE_FILE, arch=cfg.model.backbone, fmt=fmt, family=FAMILY[p.recipe],
                           provenance=provenance, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                           input_size=(3, p.image_size, p.image_size), replace=restart,
                           notes=f"pretrained by medtl: recipe {p.recipe} on {p.source}")
    result = {"kind": "medtl.pretrain", "name": name, "sha256": entry["sha256"], "weights_file": entry["filename"],
              **provenance}
    write_json_atomic(out / PRETRAIN_JSON, result)
    log.info("registered %s (%s, sha256 %s...)", name, FAMILY[p.recipe], entry["sha256"][:12])
    d.barrier()
    return result


__all__ = ["PretrainConfig", "PretrainSpec", "RECIPES", "load_pretrain_config", "pretrain", "stage_config"]
