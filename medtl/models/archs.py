"""Architecture registry: one name -> one builder of a randomly initialised network.

``resnet18`` and ``resnet50`` come from torchvision, ``resnet50d`` (deep stem, average-pool
downsampling: ResNet-D of "Bag of Tricks") from timm.  Builders never download anything;
pretrained weights are loaded separately (:mod:`medtl.models.weights`), so initialisation
is deterministic under ``torch.manual_seed``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

from ..errors import ConfigError


def _torchvision():
    from .._compat import import_torchvision

    return import_torchvision()


def _tv_resnet18() -> nn.Module:
    return _torchvision().models.resnet18(weights=None)


def _tv_resnet50() -> nn.Module:
    return _torchvision().models.resnet50(weights=None)


def _timm_resnet50d() -> nn.Module:
    _torchvision()  # must run before the first `import timm` on a CPU-only torch
    import timm

    return timm.create_model("resnet50d", pretrained=False)


@dataclass(frozen=True)
class ArchSpec:
    name: str
    builder: Callable[[], nn.Module]
    library: str  # 'torchvision' | 'timm'
    description: str


_ARCHS: dict[str, ArchSpec] = {
    "resnet18": ArchSpec("resnet18", _tv_resnet18, "torchvision", "ResNet-18 (He et al. 2016)"),
    "resnet50": ArchSpec("resnet50", _tv_resnet50, "torchvision", "ResNet-50 (He et al. 2016)"),
    "resnet50d": ArchSpec("resnet50d", _timm_resnet50d, "timm",
                          "ResNet-50-D: deep stem, avg-pool downsample (He et al. 2019)"),
}


def list_architectures() -> list[str]:
    return list(_ARCHS)


def get_architecture(name: str) -> ArchSpec:
    try:
        return _ARCHS[name]
    except KeyError:
        raise ConfigError(f"unknown backbone {name!r} (valid: {', '.join(_ARCHS)})") from None


def build_architecture(name: str) -> nn.Module:
    """Build ``name`` with random weights and its 1000-class ImageNet head (``fc``)."""
    return get_architecture(name).builder()
