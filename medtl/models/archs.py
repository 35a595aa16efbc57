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

BlurPool is built for these ResNets only: timm's ``aa_layer`` wiring differs between
architectures (DenseNet blurs its transitions, EfficientNet some depthwise convs, ConvNeXt and
ViT take none), so another backbone with ``antialias="blurpool"`` is refused with one line.

Other backbones are timm's (its model registry, ``timm.create_model(name, pretrained=False)``):
DenseNet-121, EfficientNet-B0, ConvNeXt-T and ViT-S/16 are registered with a description and
their smallest input side; any other name timm knows builds too (not listed; its input side is
checked with one forward pass of the run's size).  ViT-S/16 is built with timm's dynamic image
size (``dynamic_img_size``, ``dynamic_img_pad``): the position embedding is interpolated to the
input's patch grid and inputs that are not a multiple of 16 px are zero-padded, so 28-224 px
inputs all work, with the tensors (and pretrained weights) of the 224 px model.
"""
from __future__ import annotations

import re
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


def _import_timm():
    _torchvision()  # must run before the first `import timm` on a CPU-only torch
    import timm

    return timm


def _timm(name: str, antialias: str = "none", **kwargs) -> nn.Module:
    timm = _import_timm()
    if antialias == "blurpool":
        from .blurpool import BinomialBlurPool  # timm's BlurPool2d filter, computed faster on CPU

        return timm.create_model(name, pretrained=False, aa_layer=BinomialBlurPool, **kwargs)
    return timm.create_model(name, pretrained=False, **kwargs)


def _timm_builder(name: str, **kwargs) -> Callable[..., nn.Module]:
    return lambda antialias="none": _timm(name, antialias, **kwargs)


_DYNAMIC_SIZE = {"dynamic_img_size": True, "dynamic_img_pad": True}  # timm ViTs: any input side


def _timm_any(name: str) -> Callable[..., nn.Module]:
    """Builder of an unregistered timm model: with dynamic image size where the model takes it."""
    def build(antialias: str = "none") -> nn.Module:
        try:  # a model that does not take the argument refuses it before any initialisation
            return _timm(name, antialias, **_DYNAMIC_SIZE)
        except TypeError:
            return _timm(name, antialias)
    return build


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
    #: the smallest input side (px) the network takes; None: not known (checked by a forward pass)
    min_side: int | None = 1
    blurpool: bool = False  # model.antialias: blurpool is built for it (ResNets)
    registered: bool = True  # False: a timm name resolved on the fly


ARCHITECTURES: Registry[ArchSpec] = Registry("architecture", lambda name, known: ConfigError(
    f"unknown backbone {name!r} (registered: {', '.join(known)}; or any model name timm knows)"))
for _spec in (
    ArchSpec("resnet18", _tv_resnet18, "torchvision", "ResNet-18 (He et al. 2016)", blurpool=True),
    ArchSpec("resnet50", _tv_resnet50, "torchvision", "ResNet-50 (He et al. 2016)", blurpool=True),
    ArchSpec("resnet50d", _timm_resnet50d, "timm", "ResNet-50-D: deep stem, avg-pool downsample (He et al. 2019)",
             blurpool=True),
    # min_side: below it a feature map vanishes before the last downsampling (measured, tested)
    ArchSpec("densenet121", _timm_builder("densenet121"), "timm",
             "DenseNet-121 (Huang et al. 2017); torchvision's tensor names", min_side=29),
    ArchSpec("efficientnet_b0", _timm_builder("efficientnet_b0"), "timm", "EfficientNet-B0 (Tan & Le 2019)"),
    ArchSpec("convnext_tiny", _timm_builder("convnext_tiny"), "timm",
             "ConvNeXt-T (Liu et al. 2022); LayerNorm, no BatchNorm", min_side=32),
    ArchSpec("vit_small_patch16_224", _timm_builder("vit_small_patch16_224", **_DYNAMIC_SIZE), "timm",
             "ViT-S/16 (Dosovitskiy et al. 2021), dynamic input size; LayerNorm, no BatchNorm"),
):
    ARCHITECTURES.register(_spec.name, _spec)
_ARCHS = ARCHITECTURES.entries
_UNREGISTERED: dict[str, ArchSpec] = {}  # timm names resolved on the fly (not listed)


def register_architecture(spec: ArchSpec, overwrite: bool = False) -> ArchSpec:
    """Add an architecture (one name -> one builder; :mod:`medtl.fetch`'s registry)."""
    return ARCHITECTURES.register(spec.name, spec, overwrite)


def list_architectures() -> list[str]:
    return ARCHITECTURES.names()


def get_architecture(name: str) -> ArchSpec:
    """The registered architecture ``name``, else timm's model of that name (unregistered)."""
    if name in ARCHITECTURES or name in _UNREGISTERED:
        return ARCHITECTURES.entries.get(name) or _UNREGISTERED[name]
    if isinstance(name, str) and re.fullmatch(r"[a-z][a-z0-9_]*", name) and _import_timm().is_model(name):
        spec = ArchSpec(name, _timm_any(name), "timm", f"timm {name} (not registered in medtl)",
                        min_side=None, registered=False)
        return _UNREGISTERED.setdefault(name, spec)
    return ARCHITECTURES.get(name)  # raises the unknown-backbone error


def build_architecture(name: str, antialias: str = "none") -> nn.Module:
    """Build ``name`` with random weights and its 1000-class ImageNet head;
    ``antialias="blurpool"``: the BlurPool variant (module docstring; ResNets only)."""
    if antialias not in ANTIALIAS:
        raise ConfigError(f"unknown antialias {antialias!r} (valid: {', '.join(ANTIALIAS)})")
    spec = get_architecture(name)
    if antialias == "blurpool" and not spec.blurpool:
        fits = [s.name for s in ARCHITECTURES if s.blurpool]
        raise ConfigError(f"model.antialias: blurpool is built for {', '.join(fits)}, not {name} "
                          "(timm's aa_layer wiring differs between architectures); use antialias: none")
    return spec.builder(antialias)


def strip_head(net: nn.Module) -> int:
    """Remove ``net``'s classifier in place (timm's ``reset_classifier(0)``; torchvision's ``fc``
    becomes the identity); returns the width of the pooled features it now outputs."""
    if hasattr(net, "reset_classifier"):
        net.reset_classifier(0)
        width = getattr(net, "head_hidden_size", None) or getattr(net, "num_features", None)
    else:
        fc = getattr(net, "fc", None)
        width = fc.in_features if isinstance(fc, nn.Linear) else None
        net.fc = nn.Identity()
    if not isinstance(width, int):
        raise ConfigError(f"cannot find the classifier head of {type(net).__name__}")
    return width


def check_input_side(name: str, side: int) -> None:
    """Refuse, in one line, inputs smaller than ``name`` takes: the registered minimum, or for an
    unregistered timm model one forward pass of a ``side`` px image (outside the run's RNG)."""
    spec = get_architecture(name)
    if spec.min_side is not None:
        if side < spec.min_side:
            raise ConfigError(f"model.backbone: {name} needs inputs of at least {spec.min_side} px (smaller "
                              f"feature maps vanish before its last downsampling); this run feeds {side} px "
                              "(raise data.image_size or upscale with data.sr)")
        return
    import torch

    with torch.random.fork_rng(), torch.no_grad():
        net = spec.builder("none")
        strip_head(net)
        try:
            net.eval()(torch.zeros(1, 3, side, side))
        except Exception as exc:  # noqa: BLE001 - timm/torch say why in their own words
            reason = " ".join(str(exc).split())[:200] or type(exc).__name__
            raise ConfigError(f"model.backbone: timm's {name} does not take {side} px inputs ({reason}); "
                              "raise data.image_size or upscale with data.sr") from None
