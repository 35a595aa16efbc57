"""The task model: a pretrained backbone without its ImageNet head, plus a new linear head.

Inputs are float images in [0, 1], grayscale ``(B,1,H,W)`` or RGB ``(B,3,H,W)``;
normalisation with the weights' mean/std happens inside the model so that adversarial
attacks and saliency maps work in image space.  Global pooling makes any input size work
above an architecture's smallest side (:func:`medtl.models.archs.check_input_side`).

The backbone is any architecture of :mod:`medtl.models.archs` without its classifier (timm's
``reset_classifier(0)``, torchvision's ``fc`` replaced by the identity); ``info`` names its
head (whose tensors a checkpoint may carry in any shape: they are dropped) and first conv.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError, WeightsError
from ..io import sha256_file
from .archs import build_architecture, get_architecture, strip_head
from .fastconv import trim_dead_taps
from .weights import (IMAGENET_MEAN, IMAGENET_STD, get_weights, list_weights,
                      load_state_dict_file, matching_source, record_pin, resolve_weights_file)

log = logging.getLogger("medtl")

_NORM_TYPES = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm,
               nn.modules.instancenorm._InstanceNorm)


class ImageClassifier(nn.Module):
    def __init__(self, backbone: nn.Module, num_features: int, num_classes: int,
                 mean=IMAGENET_MEAN, std=IMAGENET_STD, drop_rate: float = 0.0,
                 info: dict[str, Any] | None = None) -> None:
        super().__init__()
        if num_classes < 1:
            raise ConfigError(f"num_classes must be >= 1, got {num_classes}")
        self.backbone = backbone
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).reshape(3))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32).reshape(3))
        self.dropout = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self.head = nn.Linear(num_features, num_classes)
        self.num_features = num_features
        self.num_classes = num_classes
        self.info: dict[str, Any] = dict(info or {})

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] not in (1, 3):
            raise ValueError(f"expected images of shape (B,1,H,W) or (B,3,H,W), got {tuple(x.shape)}")
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        mean = self.mean.to(x.dtype).view(1, 3, 1, 1)
        std = self.std.to(x.dtype).view(1, 3, 1, 1)
        return (x - mean) / std

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate (globally pooled) features, shape (B, num_features)."""
        return self.backbone(self.normalize(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(x)))

    def train(self, mode: bool = True) -> "ImageClassifier":
        super().train(mode)
        if mode:
            # a BatchNorm whose parameters are all frozen keeps its running statistics
            for m in self.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    params = [p for p in m.parameters(recurse=False)]
                    if params and not any(p.requires_grad for p in params):
                        m.eval()
        return self


@dataclass
class LoadReport:
    source: str
    loaded: int = 0
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    skipped_head: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)  # present but of the wrong shape
    adapted: list[str] = field(default_factory=list)  # e.g. a 1-channel first conv spread over RGB

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "loaded": self.loaded, "missing": self.missing,
                "unexpected": self.unexpected, "skipped_head": self.skipped_head,
                "mismatched": self.mismatched, "adapted": self.adapted}


def _short(names: list[str], n: int = 6) -> str:
    return ", ".join(names[:n]) + (f", … ({len(names)} in all)" if len(names) > n else "")


def _prefixes(names) -> tuple[str, ...]:
    names = (names,) if isinstance(names, str) else tuple(names or ())
    return tuple(f"{n}." for n in names if n)


def _gray_to_rgb(key: str, v: torch.Tensor, want: torch.Tensor, report: LoadReport) -> torch.Tensor:
    """A first convolution trained on 1-channel input, spread over the three channels the model
    sees: each RGB kernel is the gray kernel / 3, so on grayscale input (every medtl input is
    expanded 1->3) the convolution computes exactly what it computed on one channel."""
    if v.dim() == 4 and want.dim() == 4 and v.shape[1] == 1 and want.shape[1] == 3 \
            and v.shape[0] == want.shape[0] and v.shape[2:] == want.shape[2:]:
        report.adapted.append(f"{key}: 1 input channel repeated over 3 (divided by 3)")
        return v.repeat(1, 3, 1, 1) / 3.0
    return v


def load_pretrained(model: nn.Module, state_dict: dict[str, torch.Tensor],
                    source: str = "checkpoint", strict: bool = True) -> LoadReport:
    """Load backbone weights, dropping the checkpoint's classifier head (any shape).

    ``model`` is an :class:`ImageClassifier` (its backbone is loaded; its ``info`` names the
    head and first conv) or a bare ResNet backbone.  A 1-channel first convolution is spread over
    RGB (:func:`_gray_to_rgb`).  ``strict``: every backbone tensor must be filled with the right
    shape, else :class:`WeightsError` counting what did not fit; not strict: what fits loads, the
    rest stays random (warned), and a checkpoint that fills under half is still refused.
    """
    target = model.backbone if isinstance(model, ImageClassifier) else model
    info = getattr(model, "info", {}) or {}
    head = _prefixes(info.get("head", "fc"))
    first = info.get("first_conv") or "conv1"
    first_conv = {f"{c}.weight" for c in ((first,) if isinstance(first, str) else first)}
    report = LoadReport(source=source)
    expected = {k: v for k, v in target.state_dict().items() if not (head and k.startswith(head))}
    sd: dict[str, torch.Tensor] = {}
    for k, v in state_dict.items():
        if k not in expected and head and k.startswith(head):
            report.skipped_head.append(k)
            continue
        if k in first_conv and k in expected:
            v = _gray_to_rgb(k, v, expected[k], report)
        if k in expected and tuple(v.shape) != tuple(expected[k].shape):
            report.mismatched.append(f"{k} {tuple(v.shape)}≠{tuple(expected[k].shape)}")
        else:
            sd[k] = v
    _check_fit(model, target, expected, sd, report, source, strict)
    result = target.load_state_dict(sd, strict=False)
    shaped = {m.split(" ", 1)[0] for m in report.mismatched}  # listed once, as mismatched
    report.missing = [k for k in result.missing_keys if not (head and k.startswith(head)) and k not in shaped]
    report.unexpected = list(result.unexpected_keys)
    report.loaded = len(sd) - len(report.unexpected)
    suspicious = [k for k in report.missing if not k.endswith("num_batches_tracked")]
    if suspicious or report.mismatched:
        log.warning("%s: %d backbone tensors not loaded (kept random): %s", source,
                    len(suspicious) + len(report.mismatched), _short(suspicious + report.mismatched))
    if report.unexpected:
        log.warning("%s: %d unexpected tensors ignored: %s", source, len(report.unexpected),
                    _short(report.unexpected))
    for line in report.adapted:
        log.info("%s: %s", source, line)
    return report


def _check_fit(model, target, expected, sd, report: LoadReport, source: str, strict: bool) -> None:
    core = [k for k in expected if not k.endswith("num_batches_tracked")]
    fitting = [k for k in core if k in sd]
    if len(fitting) == len(core) or (not strict and len(fitting) * 2 >= len(core)):
        return
    arch = getattr(model, "info", {}).get("arch", type(target).__name__)
    unfit = len(core) - len(fitting)
    shaped = [m.split(" ", 1)[0] for m in report.mismatched]
    missing = [k for k in core if k not in sd and k not in shaped]
    example = ", ".join((report.mismatched[:1] + missing[:1] + report.mismatched[1:2])[:2])
    if strict:
        raise WeightsError(f"{source}: checkpoint does not fit the architecture {arch}: {unfit} of {len(core)} "
                           f"backbone tensors did not fit ({len(missing)} missing, {len(shaped)} of another shape; "
                           f"e.g. {example}); set model.weights_strict: false to train those from random init")
    raise WeightsError(f"{source}: checkpoint does not fit the architecture {arch}: only "
                       f"{len(fitting)} of {len(core)} backbone tensors are present with the "
                       f"right shape (missing e.g. {example})")


def _looks_like_path(text: str) -> bool:
    return (os.sep in text or "/" in text or text.startswith("~")
            or Path(text).suffix.lower() in (".pth", ".pt", ".tar", ".safetensors", ".bin",
                                             ".ckpt"))


def _arch_info(backbone: str, net: nn.Module, antialias: str, library: str) -> dict[str, Any]:
    """What a built network is: arch, head and first conv names, and its default normalisation
    (timm's default pretrained config for timm models; registered weights override it)."""
    cfg = dict(getattr(net, "pretrained_cfg", None) or {})
    mean, std = cfg.get("mean", IMAGENET_MEAN), cfg.get("std", IMAGENET_STD)
    if len(mean) != 3 or len(std) != 3:
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    return {"arch": backbone, "antialias": antialias, "library": "timm" if antialias != "none" else library,
            "weights": "none", "weights_file": None, "weights_sha256": None, "family": None,
            "format": None, "mean": list(mean), "std": list(std), "input_size": [3, 224, 224],
            "head": cfg.get("classifier", "fc"), "first_conv": cfg.get("first_conv", "conv1")}


def _resolve_weights(weights: str, backbone: str, allow_download: bool):
    """(registry entry or None, file or None, format) for a ``model.weights`` value."""
    weights = (weights or "none").strip()
    if weights.lower() == "none":
        return None, None, "auto"
    if weights in list_weights():
        source = get_weights(weights)
        if source.arch != backbone:
            fits = list_weights(backbone)
            raise ConfigError(f"model.weights: {weights!r} are weights for {source.arch}, not "
                              f"{backbone} (weights for {backbone}: "
                              f"{', '.join(fits) if fits else 'none registered'})")
        return source, resolve_weights_file(source, allow_download=allow_download), source.format
    if _looks_like_path(weights) or Path(weights).expanduser().is_file():
        path = Path(weights).expanduser()
        if not path.is_file():
            raise WeightsError(f"{path}: weights file not found")
        source = matching_source(sha256_file(path))
        if source is None:
            return None, path, "auto"
        if source.arch != backbone:
            raise ConfigError(f"model.weights: {path} is {source.name}, weights for "
                              f"{source.arch}, not {backbone}")
        log.info("%s is the registered weights %s", path, source.name)
        return source, path, source.format
    raise ConfigError(f"model.weights: {weights!r} is not 'none', a registered weight name "
                      f"({', '.join(list_weights())}) or an existing file")


def create_model(backbone: str, num_classes: int, weights: str = "none", drop_rate: float = 0.0,
                 allow_download: bool = True, trim_convs: bool = True,
                 antialias: str = "none", strict: bool = True) -> tuple[ImageClassifier, LoadReport | None]:
    """Build ``backbone`` with a new ``num_classes`` head and load ``weights``.

    ``backbone``: a registered architecture or any timm model name (:mod:`medtl.models.archs`).
    ``weights``: 'none' (random init, deterministic under ``torch.manual_seed``), a
    registry name (``medtl weights list``; must be for this backbone), or a local file
    (format detected; if its hash identifies a registry entry, that entry's metadata is used).
    ``antialias``: 'none' or 'blurpool' (Zhang 2019; ResNets only).  ``strict``: the file must
    fill every backbone tensor (:func:`load_pretrained`).
    """
    spec = get_architecture(backbone)
    net = build_architecture(backbone, antialias)
    num_features = strip_head(net)
    if trim_convs:
        trim_dead_taps(net)  # exact: skips taps that only see padding on tiny maps (fastconv.py)
    info = _arch_info(backbone, net, antialias, spec.library)
    source, path, fmt = _resolve_weights(weights, backbone, allow_download)
    state = None
    if path is not None:
        state = load_state_dict_file(path, fmt, backbone)
        info.update(weights=source.name if source else str(path), weights_file=str(path),
                    weights_sha256=sha256_file(path), format=fmt)
        if source is not None:
            info.update(family=source.family, mean=list(source.mean), std=list(source.std),
                        input_size=list(source.input_size))
    model = ImageClassifier(net, num_features, num_classes, mean=info["mean"], std=info["std"],
                            drop_rate=drop_rate, info=info)
    report = None
    if state is not None:
        report = load_pretrained(model, state, source=str(path), strict=strict)
        if source is not None:
            record_pin(source, info["weights_sha256"])
        log.info("loaded %s into %s: %d tensors (head %s dropped, %d missing, %d unexpected)",
                 info["weights"], backbone, report.loaded, len(report.skipped_head),
                 len(report.missing), len(report.unexpected))
    else:
        log.info("built %s with random initialisation", backbone)
    return model, report


def model_for_run(cfg, num_classes: int, weights: str = "none", allow_download: bool = True
                  ) -> tuple[ImageClassifier, LoadReport | None]:
    """The network a run config describes (backbone, antialias, dropout, fast convs), with
    ``weights`` ('none' to rebuild a trained run and load its checkpoint)."""
    return create_model(cfg.model.backbone, num_classes, weights=weights, drop_rate=cfg.model.drop_rate,
                        allow_download=allow_download, trim_convs=cfg.train.fast_conv,
                        antialias=cfg.model.antialias, strict=cfg.model.weights_strict)
