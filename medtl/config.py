"""One config schema for every run, loaded from YAML with ``key=value`` overrides.

Every model forbids unknown keys: a typo is an error that lists the valid keys.  A run
writes its resolved config (``config.yaml``) beside its results, and loading that file
gives back the same config.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import ConfigError

SYNTHETIC = "builtin:synthetic"
FRACTALDB = "builtin:fractaldb"
BUILTIN_DATASETS = (SYNTHETIC, FRACTALDB)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class CueConfig(_Strict):
    """Training inputs that carry one cue only (``data.augment.cue``; :mod:`medtl.data.cues`), to make
    models whose cue use is known by construction (validating the shape-bias probe).

    With probability ``p`` per training image and epoch (seeded per (seed, epoch, index)) the image
    is replaced by its cue version before the geometric/intensity augmentation; val and test are
    never filtered.  ``lowpass``: Gaussian blur of σ = ``sigma`` x side (shape only);
    ``highpass``: x - lowpass(x) + mean(x), clamped to [0, 1] (texture only); ``patch_shuffle``:
    ``grid`` x ``grid`` tiles permuted per image (local texture kept, global layout destroyed);
    ``conflict_shape`` / ``conflict_texture``: lowpass of one image + highpass of a training image of
    another class, labelled by the shape / texture source (the probe's own construction: for
    validating it only).  A list of kinds: each replaced image gets one of them, drawn uniformly.
    """

    kind: Literal["none", "lowpass", "highpass", "patch_shuffle", "conflict_shape", "conflict_texture"] | list[
        Literal["lowpass", "highpass", "patch_shuffle", "conflict_shape", "conflict_texture"]] = "none"
    p: float = Field(1.0, ge=0, le=1, description="probability that a training image is replaced by its cue version")
    sigma: float = Field(0.08, gt=0, le=0.5, description="lowpass/highpass: Gaussian sigma as a fraction of the side")
    grid: int = Field(4, ge=2, le=64, description="patch_shuffle: tiles per side")


class AugmentConfig(_Strict):
    """Training-time augmentation, applied batch-wise on tensors with a seeded generator.

    Defaults are mild and X-ray-safe: small translations and scaling, no horizontal flip
    (anatomy is lateralised: the heart is on the left), no mixup.
    """

    translate: float = Field(0.0625, ge=0, le=0.5, description="max shift as a fraction of the side")
    scale: float = Field(0.1, ge=0, le=0.5, description="max relative zoom in/out")
    rotate: float = Field(5.0, ge=0, le=45, description="max rotation in degrees")
    hflip: bool = False
    brightness: float = Field(0.1, ge=0, le=1, description="max additive brightness change")
    contrast: float = Field(0.1, ge=0, le=1, description="max relative contrast change")
    # stylized X-rays (Geirhos et al. 2019, for radiographs): with this probability an image's pixels are
    # permuted within stylize_window x side windows (local texture destroyed, layout kept) and its
    # intensities histogram-matched to another training image's (the "style"); seeded per
    # (seed, epoch, index); medtl/data/stylize.py
    stylize: float = Field(0.0, ge=0, le=1, description="probability that a training image is stylized")
    stylize_window: float = Field(0.1, gt=0, le=0.5, description="stylize: scramble window as a fraction of the side")
    # scramble: pixels permuted within windows; fill: the image's support (a morphological closing
    # over the window) filled with a random point texture drawn per image (for point-set sources
    # such as fractals, whose local density a scramble keeps); both then histogram-matched
    stylize_method: Literal["scramble", "fill"] = "scramble"
    # intensity families shared with the corruption probe (medtl/data/intensity.py), off by default;
    # applied after the affine and brightness/contrast jitter, in this order, on every image:
    # bias_field: MONAI's RandBiasField, x · exp(Σ c_ij P_i(row) P_j(col)) (Legendre degree 3), c_ij ~ U(-a, a);
    # gamma: x**γ on the fixed [0, 1] range, ln γ ~ U(-g, g) (γ and 1/γ equally likely)
    bias_field: float = Field(0.0, ge=0, le=0.3, description="bias field coefficient range a (0: off)")
    gamma: float = Field(0.0, ge=0, le=1.5, description="max |ln γ| of the gamma jitter (0: off)")
    cue: CueConfig = Field(default_factory=CueConfig)


class SRConfig(_Strict):
    """Upscaling applied after decoding at ``data.image_size`` (the native, low resolution).

    ``none``: the images go to the network at ``image_size``.  ``resize``: a Pillow resize
    (bicubic, bilinear or lanczos) by ``scale`` or to ``size``.  ``learned``: a super-resolution
    model file written by ``medtl sr train`` (its own scale).  The upscaled images are fed at
    their full size (ResNets end in global average pooling); they are never shrunk back unless
    ``size`` asks for a smaller side.  Upscaled datasets are computed once and cached.
    """

    method: Literal["none", "resize", "learned"] = "none"
    scale: float | None = Field(None, gt=1, le=16, description="upscale factor (resize; learned: must match the model)")
    size: int | None = Field(None, ge=8, le=4096, description="output side in px instead of scale")
    interpolation: Literal["bicubic", "bilinear", "lanczos"] = "bicubic"
    model: str | None = Field(None, description="learned: path of the SR model file")

    @model_validator(mode="after")
    def _consistent(self):
        if self.method == "none" and (self.scale is not None or self.size is not None or self.model):
            raise ValueError("scale/size/model are set but method is 'none' (use method: resize or learned)")
        if self.method == "resize" and self.scale is None and self.size is None:
            raise ValueError("method 'resize' needs scale or size")
        if self.method == "resize" and self.model:
            raise ValueError("model is only used with method 'learned'")
        if self.method == "learned" and not self.model:
            raise ValueError("method 'learned' needs model: the file written by `medtl sr train`")
        if self.scale is not None and self.size is not None:
            raise ValueError("give scale or size, not both")
        return self


class PlantConfig(_Strict):
    """A planted cue (``data.plant``; :mod:`medtl.data.plant`) for validating the shortcut probe: a
    burned-in bright square marker (a dark "L" inside, like a lead marker) in the top-left corner,
    outside the lung fields and inside the probe's border band (sizes up to 0.1 of the side).

    ``correlate: label``: on every image of class 1 and none of class 0 (the marker alone predicts
    the label); ``random``: on a fraction ``p`` of images, independently of the label.  Which images
    carry it depends on (data.split_seed, split, image id) only, never on the training seed.
    Binary tasks only; applied to the listed splits after decoding, caching and the leak policy.
    """

    kind: Literal["none", "marker"] = "none"
    correlate: Literal["label", "random"] = "label"
    size: float = Field(0.1, gt=0, le=0.25, description="marker side as a fraction of the image side (at least 3 px)")
    value: int = Field(255, ge=0, le=255, description="marker intensity (uint8)")
    p: float = Field(0.5, ge=0, le=1, description="correlate random: fraction of images marked")
    splits: list[Literal["train", "val", "test"]] = Field(default_factory=lambda: ["train", "val", "test"])

    @field_validator("splits")
    @classmethod
    def _unique_splits(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("lists a split twice")
        return v


class FractalConfig(_Strict):
    """``builtin:fractaldb`` (:mod:`medtl.data.fractaldb`): formula-driven classes for pretraining."""

    classes: int = Field(100, ge=2, le=10000)
    instances: int = Field(100, ge=2, description="training images per class")
    eval_instances: int = Field(10, ge=1, description="val and test images per class (each)")
    seed: int = 0
    # class: each class also carries its own texture (stripes) over the figure and, dimmer, the ground
    texture: Literal["none", "class"] = "none"


class DataConfig(_Strict):
    path: str = SYNTHETIC
    format: Literal["auto", "folder", "csv", "dicom", "npz", "synthetic", "fractaldb"] = "auto"
    image_size: int = Field(64, ge=8, le=2048)
    resize: Literal["squash", "pad", "crop"] = "squash"
    # CSV manifests
    path_column: str | None = None
    label_columns: list[str] | None = None
    patient_column: str | None = None
    split_column: str | None = None
    # CSV manifest columns whose values define subgroups (sex, view, age band, site, ...): the test
    # metrics then carry per-group AUC, sensitivity and specificity with CIs (never patient ids)
    group_columns: list[str] | None = None
    # CheXpert-style -1 (uncertain) labels: 'zeros' (U-Zeros, the default) or 'ones' (U-Ones).
    # 'ignore' (mask them out) is refused: the multi-label loss and metrics take every label
    uncertain: Literal["zeros", "ones"] = "zeros"

    @field_validator("uncertain", mode="before")
    @classmethod
    def _uncertain(cls, v):
        if isinstance(v, str) and v.strip().lower() == "ignore":
            raise ValueError("'ignore' is not supported: the multi-label loss (BCE) and metrics use every label "
                             "and cannot mask uncertain ones; use ones (U-Ones) or zeros (U-Zeros)")
        return v
    # folders: regex whose first group is the patient id in a file name.  The default reads
    # Kermany's names: personN_bacteria_M.jpeg (pneumonia) and IM-0115-0001.jpeg /
    # NORMAL2-IM-1427-0001.jpeg (normal: the IM number is the patient, the last number the image)
    patient_regex: str | None = r"^(person\d+(?=_)|(?:NORMAL\d*-)?IM-\d+(?=-))"
    # validation split made when the data has none: patient-level, stratified, seeded
    val_fraction: float = Field(0.1, gt=0, lt=0.5)
    # the test split shares patients or images with train/val: refuse (error), drop them from
    # train and val keeping the published test split (drop_train), or go on marked (warn)
    on_leak: Literal["error", "drop_train", "warn"] = "error"
    split_seed: int = 0
    # label fraction (data-efficiency curves): the train split, after the splits and the leak
    # policy, subsampled to this fraction of its patients, stratified by class, patient-level,
    # seeded by fraction_seed (None: split_seed) and nested (the 5% subset lies in the 10% one);
    # val and test are never touched (medtl.data.fraction)
    train_fraction: float = Field(1.0, gt=0, le=1)
    fraction_seed: int | None = None
    # embedded synthetic set: sizes per split
    synthetic_n: dict[str, int] = Field(default_factory=lambda: {"train": 1200, "val": 300, "test": 500})
    # builtin:fractaldb: classes, instances per class, seed of the IFS codes
    fractal: FractalConfig = Field(default_factory=FractalConfig)
    cache: bool = True
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    sr: SRConfig = Field(default_factory=SRConfig)
    plant: PlantConfig = Field(default_factory=PlantConfig)


class ModelConfig(_Strict):
    backbone: str = "resnet18"
    # 'none' (random init) | a registry weight name (`medtl weights list`) | a local file path
    weights: str = "none"
    drop_rate: float = Field(0.0, ge=0, lt=1)
    # 'blurpool': the antialiased ResNet of Zhang (ICML 2019), a low-pass filter before every strided
    # subsampling (timm's aa_layer; pretrained weights of the plain arch load fully; inputs >= 17 px)
    antialias: Literal["none", "blurpool"] = "none"
    # a weight file must fill every backbone tensor (the classifier head is always replaced);
    # false: load what fits and keep the rest random (warned, counted in train.log)
    weights_strict: bool = True


class TrainConfig(_Strict):
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(0.05, gt=0)
    # opt-in linear scaling (Goyal et al.): lr_used = lr * batch_size / lr_scale_batch
    lr_scale_batch: int | None = Field(None, ge=1)
    optimizer: Literal["sgd", "adamw"] = "sgd"
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = True
    weight_decay: float = Field(1e-4, ge=0)
    no_bias_decay: bool = True
    warmup_epochs: float = Field(1.0, ge=0)
    warmup_start_factor: float = Field(0.01, gt=0, le=1)
    schedule: Literal["cosine", "step", "constant"] = "cosine"
    step_milestones: list[float] = Field(default_factory=lambda: [0.5, 0.75])  # fractions of epochs
    step_gamma: float = Field(0.1, gt=0, le=1)
    min_lr_factor: float = Field(0.0, ge=0, le=1)
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    mixup_alpha: float = Field(0.0, ge=0)  # off by default for medical images
    # knowledge distillation (medtl/train/distill.py): a finished run folder (or a medtl pretrain
    # output folder) trained on the same classes; loss = (1 - alpha) task + alpha T^2 KL
    teacher: str | None = None
    distill_alpha: float = Field(0.5, ge=0, le=1)
    distill_temperature: float = Field(2.0, gt=0)
    class_weighting: Literal["none", "balanced"] = "none"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    channels_last: bool | None = None  # None: on where it helps (bf16 on CPU, CUDA)
    trainable: str = "all"  # 'all' | 'head' | 'last:N' (the last N residual stages + head)
    # selective BN gamma init, applied after the pretrained weights load; globs match module names.
    # {"layer4.*.bn3": 0.0} sets gamma only (beta keeps its pretrained value);
    # {"layer4.*.bn3": {gamma: 0.0, beta: 0.0}} also zeroes beta, so a pretrained residual block
    # starts as the identity; {"layer3.*.bn3": 1.0} overwrites the pretrained gamma with 1
    bn_gamma: dict[str, float | dict[str, float]] = Field(default_factory=dict)
    grad_clip: float | None = Field(None, gt=0)
    select_metric: Literal["auc", "loss", "acc"] = "auc"
    threshold_rule: Literal["youden", "0.5", "balanced_acc"] = "youden"
    # torch threads of the training process: applied by the entry points (CLI, sweep workers),
    # since a thread count is process-wide state that library code does not change
    num_threads: int | None = Field(None, ge=1, le=1024)
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$", description="auto | cpu | cuda | cuda:N")
    # exact fast paths for convolutions on tiny maps (medtl/models/fastconv.py); off: plain Conv2d
    fast_conv: bool = True

    @field_validator("trainable")
    @classmethod
    def _check_trainable(cls, v: str) -> str:
        if v in ("all", "head"):
            return v
        if v.startswith("last:") and v[5:].isdigit() and int(v[5:]) >= 1:
            return v
        raise ValueError("must be 'all', 'head' or 'last:N' with N >= 1")


class RunConfig(_Strict):
    name: str = "run"
    seed: int = 0
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)


# ---------------------------------------------------------------- loading and overrides

def _valid_keys(model_cls: type[BaseModel], prefix: str = "") -> list[str]:
    keys = []
    for name, field in model_cls.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            keys.extend(_valid_keys(ann, prefix + name + "."))
        else:
            keys.append(prefix + name)
    return keys


def _keys_at(loc, schema: type[BaseModel] | None = None) -> list[str]:
    """The valid keys one level below ``loc`` (sections shown as ``name.*``)."""
    cls: type[BaseModel] = schema or RunConfig
    prefix = ""
    for part in loc:
        field = cls.model_fields.get(str(part))
        ann = field.annotation if field else None
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return _valid_keys(schema or RunConfig)
        cls, prefix = ann, prefix + str(part) + "."
    out = []
    for name, field in cls.model_fields.items():
        ann = field.annotation
        sub = isinstance(ann, type) and issubclass(ann, BaseModel)
        out.append(prefix + name + (".*" if sub else ""))
    return out


def valid_keys() -> list[str]:
    return _valid_keys(RunConfig)


def _format_validation_error(exc: ValidationError, source: str, schema: type[BaseModel] | None = None) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            parent = ".".join(str(p) for p in err["loc"][:-1])
            parts.append(f"unknown key '{loc}' (valid keys{(' under ' + parent) if parent else ''}: "
                         f"{', '.join(_keys_at(err['loc'][:-1], schema))})")
        else:
            parts.append(f"'{loc}': {err['msg']}")
    return f"{source}: invalid config: " + "; ".join(parts)


def parse_value(text: str) -> Any:
    """Parse the right-hand side of ``--set key=value`` as YAML (numbers, bools, lists, dicts)."""
    try:
        return yaml.safe_load(text) if text != "" else ""
    except yaml.YAMLError:
        return text


def apply_override(raw: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    cur = raw
    for p in parts[:-1]:
        nxt = cur.get(p)
        if nxt is None:
            nxt = cur[p] = {}
        if not isinstance(nxt, dict):
            raise ConfigError(f"override {dotted}: '{p}' is not a section")
        cur = nxt
    cur[parts[-1]] = value


def build_config(raw: dict | None = None, overrides: list[str] | None = None,
                 source: str = "config", schema: type[BaseModel] | None = None) -> RunConfig:
    """A validated config (``schema``: :class:`RunConfig` by default) from ``raw`` plus
    ``key=value`` overrides; one-line :class:`ConfigError` naming the key at fault."""
    raw = dict(raw or {})
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key=value")
        key, val = item.split("=", 1)
        key = key.strip()
        if not key:
            raise ConfigError(f"override {item!r}: empty key")
        apply_override(raw, key, parse_value(val))
    try:
        return (schema or RunConfig).model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, source, schema)) from None


def read_yaml_mapping(path: str | Path, what: str) -> dict:
    """The YAML mapping in ``path`` (empty file: {}); one-line :class:`ConfigError` naming the
    file and ``what`` it should be ('sweep config', 'study config') when it is missing, not YAML,
    not UTF-8 text or not a mapping."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: {what} not found")
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML: {str(exc).splitlines()[0]}") from None
    except (UnicodeDecodeError, OSError) as exc:  # a binary file, no permission
        raise ConfigError(f"{p}: cannot read the {what} as UTF-8 text ({type(exc).__name__})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: a {what} must be a mapping")
    return raw


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                schema: type[BaseModel] | None = None) -> RunConfig:
    raw: dict = {}
    source = "config"
    if path is not None:
        p = Path(path)
        source = str(p)
        if not p.is_file():
            raise ConfigError(f"{p}: config file not found")
        try:
            loaded = yaml.safe_load(p.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise ConfigError(f"{p}: not valid YAML: {str(exc).splitlines()[0]}") from None
        except (UnicodeDecodeError, OSError) as exc:  # a binary file, a folder, no permission
            raise ConfigError(f"{p}: cannot read the config as UTF-8 text ({type(exc).__name__})") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{p}: a config must be a mapping of sections (data, model, train)")
        raw = loaded
    return build_config(raw, overrides, source=source, schema=schema)


def config_to_yaml(cfg: RunConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
