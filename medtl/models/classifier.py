"""The task model: a pretrained backbone without its ImageNet head, plus a new linear head.

Inputs are float images in [0, 1], grayscale ``(B,1,H,W)`` or RGB ``(B,3,H,W)``;
normalisation with the weights' mean/std happens inside the model so that adversarial
attacks and saliency maps work in image space.  Global average pooling makes any input
size work.
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
from .archs import build_architecture, get_architecture
from .fastconv import trim_dead_taps
from .weights import (IMAGENET_MEAN, IMAGENET_STD, get_weights, list_weights,
                      load_state_dict_file, matching_source, record_pin, resolve_weights_file)

log = logging.getLogger("medtl")

HEAD_PREFIXES = ("fc.",)
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

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "loaded": self.loaded, "missing": self.missing,
                "unexpected": self.unexpected, "skipped_head": self.skipped_head,
                "mismatched": self.mismatched}


def _short(names: list[str], n: int = 6) -> str:
    return ", ".join(names[:n]) + (f", … ({len(names)} in all)" if len(names) > n else "")


def load_pretrained(model: nn.Module, state_dict: dict[str, torch.Tensor],
                    source: str = "checkpoint") -> LoadReport:
    """Load backbone weights, dropping the classifier head (``fc.*``), strict=False.

    ``model`` is an :class:`ImageClassifier` (its backbone is loaded) or a bare backbone.
    Raises :class:`WeightsError` if most backbone tensors are missing or mis-shaped.
    """
    target = model.backbone if isinstance(model, ImageClassifier) else model
    report = LoadReport(source=source)
    expected = {k: v for k, v in target.state_dict().items() if not k.startswith(HEAD_PREFIXES)}
    sd: dict[str, torch.Tensor] = {}
    for k, v in state_dict.items():
        if k.startswith(HEAD_PREFIXES):
            report.skipped_head.append(k)
        elif k in expected and tuple(v.shape) != tuple(expected[k].shape):
            report.mismatched.append(f"{k} {tuple(v.shape)}≠{tuple(expected[k].shape)}")
        else:
            sd[k] = v
    core = [k for k in expected if not k.endswith("num_batches_tracked")]
    fitting = [k for k in core if k in sd]
    if len(fitting) * 2 < len(core):
        example = _short(sorted(set(core) - set(fitting)), 3)
        arch = getattr(model, "info", {}).get("arch", type(target).__name__)
        raise WeightsError(f"{source}: checkpoint does not fit the architecture {arch}: only "
                           f"{len(fitting)} of {len(core)} backbone tensors are present with the "
                           f"right shape (missing e.g. {example})")
    result = target.load_state_dict(sd, strict=False)
    report.missing = [k for k in result.missing_keys if not k.startswith(HEAD_PREFIXES)]
    report.unexpected = list(result.unexpected_keys)
    report.loaded = len(sd) - len(report.unexpected)
    suspicious = [k for k in report.missing if not k.endswith("num_batches_tracked")]
    if suspicious or report.mismatched:
        log.warning("%s: %d backbone tensors not loaded (kept random): %s", source,
                    len(suspicious) + len(report.mismatched),
                    _short(suspicious + report.mismatched))
    if report.unexpected:
        log.warning("%s: %d unexpected tensors ignored: %s", source, len(report.unexpected),
                    _short(report.unexpected))
    return report


def _num_features(backbone: nn.Module) -> int:
    fc = getattr(backbone, "fc", None)
    if isinstance(fc, nn.Linear):
        return fc.in_features
    n = getattr(backbone, "num_features", None)
    if isinstance(n, int):
        return n
    raise ConfigError(f"cannot find the classifier head of {type(backbone).__name__}")


def _looks_like_path(text: str) -> bool:
    return (os.sep in text or "/" in text or text.startswith("~")
            or Path(text).suffix.lower() in (".pth", ".pt", ".tar", ".safetensors", ".bin",
                                             ".ckpt"))


def create_model(backbone: str, num_classes: int, weights: str = "none", drop_rate: float = 0.0,
                 allow_download: bool = True, trim_convs: bool = True,
                 antialias: str = "none") -> tuple[ImageClassifier, LoadReport | None]:
    """Build ``backbone`` with a new ``num_classes`` head and load ``weights``.

    ``weights``: 'none' (random init, deterministic under ``torch.manual_seed``), a
    registry name (``medtl weights list``; must be for this backbone), or a local file
    (format detected; if its hash identifies a registry entry, that entry's metadata is used).
    ``antialias``: 'none' or 'blurpool' (Zhang 2019; :mod:`medtl.models.archs`).
    """
    spec = get_architecture(backbone)
    net = build_architecture(backbone, antialias)
    num_features = _num_features(net)
    net.fc = nn.Identity()
    if trim_convs:
        trim_dead_taps(net)  # exact: skips taps that only see padding on tiny maps (fastconv.py)
    info: dict[str, Any] = {"arch": backbone, "antialias": antialias,
                            "library": "timm" if antialias != "none" else spec.library, "weights": "none",
                            "weights_file": None, "weights_sha256": None, "family": None,
                            "format": None, "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD),
                            "input_size": [3, 224, 224]}
    weights = (weights or "none").strip()
    source = None
    path: Path | None = None
    fmt = "auto"
    if weights.lower() == "none":
        pass
    elif weights in list_weights():
        source = get_weights(weights)
        if source.arch != backbone:
            fits = list_weights(backbone)
            raise ConfigError(f"model.weights: {weights!r} are weights for {source.arch}, not "
                              f"{backbone} (weights for {backbone}: "
                              f"{', '.join(fits) if fits else 'none registered'})")
        path = resolve_weights_file(source, allow_download=allow_download)
        fmt = source.format
    elif _looks_like_path(weights) or Path(weights).expanduser().is_file():
        path = Path(weights).expanduser()
        if not path.is_file():
            raise WeightsError(f"{path}: weights file not found")
        source = matching_source(sha256_file(path))
        if source is not None:
            if source.arch != backbone:
                raise ConfigError(f"model.weights: {path} is {source.name}, weights for "
                                  f"{source.arch}, not {backbone}")
            fmt = source.format
            log.info("%s is the registered weights %s", path, source.name)
    else:
        raise ConfigError(f"model.weights: {weights!r} is not 'none', a registered weight name "
                          f"({', '.join(list_weights())}) or an existing file")

    report = None
    if path is not None:
        state = load_state_dict_file(path, fmt, backbone)
        sha = sha256_file(path)
        info.update(weights=source.name if source else str(path), weights_file=str(path),
                    weights_sha256=sha, format=fmt)
        if source is not None:
            info.update(family=source.family, mean=list(source.mean), std=list(source.std),
                        input_size=list(source.input_size))
    model = ImageClassifier(net, num_features, num_classes, mean=info["mean"], std=info["std"],
                            drop_rate=drop_rate, info=info)
    if path is not None:
        report = load_pretrained(model, state, source=str(path))
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
                        antialias=cfg.model.antialias)
