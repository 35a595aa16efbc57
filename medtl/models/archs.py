"""Architecture registry: one name -> one builder of a randomly initialised network.

``resnet18`` and ``resnet50`` come from torchvision, ``resnet50d`` (deep stem, average-pool
downsampling: ResNet-D of "Bag of Tricks") from timm.  Builders never download anything;
pretrained weights are loaded separately (:mod:`medtl.models.weights`), so initialisation
is deterministic under ``torch.manual_seed``.

``antialias="blurpool"`` builds the antialiased ResNet of Zhang (ICML 2019, "Making
convolutional networks shift-invariant again"): every strided subsampling of the main path is
preceded by a low-pass (binomial [1,2,1] x [1,2,1], reflect padding) filter.  It is timm's
``aa_layer=BlurPool2d`` variant of the same network (timm builds all three archs; its ResNet-18/50
have torchvision's tensor names), so:

* the stem max-pool becomes max-pool(stride 1) + BlurPool(stride 2), and each strided 3x3 conv
  becomes conv(stride 1) + BlurPool(stride 2) (Zhang's "ConvBlurPool"); the stem 7x7 conv stays
  strided, as in Zhang's models;
* the 1x1 stride-2 shortcut convs are *not* blurred (timm's choice; Zhang blurs them too);
* the blur (:class:`medtl.models.blurpool.BinomialBlurPool`, timm's ``BlurPool2d`` filter computed
  with pooling kernels) has no tensors, so the state dict has exactly the plain
  network's tensor names and shapes: every pretrained ImageNet checkpoint of the plain arch loads
  fully (the weights then meet a blurred signal; Zhang trains from scratch or fine-tunes);
* the conv1 of a downsampling block now runs at the input resolution (4x its FLOPs), and the
  reflect padding needs inputs of at least :data:`BLURPOOL_MIN_SIDE` px.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

from torch import nn

from ..errors import ConfigError
from ..fetch import Registry


def _torchvision():
    from .._compat import import_torchvision

    return import_torchvision()


Antialias = Literal["none", "blurpool"]
ANTIALIAS = ("none", "blurpool")
#: the smallest input side a BlurPool ResNet accepts (the last blur's reflect pad needs >= 2 px maps)
BLURPOOL_MIN_SIDE = 17


def _timm(name: str, antialias: str = "none") -> nn.Module:
    _torchvision()  # must run before the first `import timm` on a CPU-only torch
    import timm

    if antialias == "blurpool":
        from .blurpool import BinomialBlurPool  # timm's BlurPool2d filter, computed faster on CPU

        return timm.create_model(name, pretrained=False, aa_layer=BinomialBlurPool)
    return timm.create_model(name, pretrained=False)


def _tv_resnet18(antialias: str = "none") -> nn.Module:
    if antialias != "none":
        return _timm("resnet18", antialias)  # the same tensor names as torchvision's
    return _torchvision().models.resnet18(weights=None)


def _tv_resnet50(antialias: str = "none") -> nn.Module:
    if antialias != "none":
        return _timm("resnet50", antialias)
    return _torchvision().models.resnet50(weights=None)


def _timm_resnet50d(antialias: str = "none") -> nn.Module:
    return _timm("resnet50d", antialias)


@dataclass(frozen=True)
class ArchSpec:
    name: str
    builder: Callable[..., nn.Module]  # builder(antialias="none")
    library: str  # 'torchvision' | 'timm'
    description: str


ARCHITECTURES: Registry[ArchSpec] = Registry("architecture", lambda name, known: ConfigError(
    f"unknown backbone {name!r} (valid: {', '.join(known)})"))
for _spec in (
    ArchSpec("resnet18", _tv_resnet18, "torchvision", "ResNet-18 (He et al. 2016)"),
    ArchSpec("resnet50", _tv_resnet50, "torchvision", "ResNet-50 (He et al. 2016)"),
    ArchSpec("resnet50d", _timm_resnet50d, "timm", "ResNet-50-D: deep stem, avg-pool downsample (He et al. 2019)"),
):
    ARCHITECTURES.register(_spec.name, _spec)
_ARCHS = ARCHITECTURES.entries


def register_architecture(spec: ArchSpec, overwrite: bool = False) -> ArchSpec:
    """Add an architecture (one name -> one builder; :mod:`medtl.fetch`'s registry)."""
    return ARCHITECTURES.register(spec.name, spec, overwrite)


def list_architectures() -> list[str]:
    return ARCHITECTURES.names()


def get_architecture(name: str) -> ArchSpec:
    return ARCHITECTURES.get(name)


def build_architecture(name: str, antialias: str = "none") -> nn.Module:
    """Build ``name`` with random weights and its 1000-class ImageNet head (``fc``);
    ``antialias="blurpool"``: the BlurPool variant (module docstring)."""
    if antialias not in ANTIALIAS:
        raise ConfigError(f"unknown antialias {antialias!r} (valid: {', '.join(ANTIALIAS)})")
    return get_architecture(name).builder(antialias)
