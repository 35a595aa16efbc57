"""Fine-tuning controls: selective BN gamma init, partial freezing, optimizer groups."""
from __future__ import annotations

import fnmatch
import logging
import math
from typing import Any

from torch import nn

from ..errors import ConfigError
from .classifier import _NORM_TYPES, ImageClassifier

log = logging.getLogger("medtl")

STAGES = ("layer1", "layer2", "layer3", "layer4")


def _backbone(model: nn.Module) -> nn.Module:
    return model.backbone if isinstance(model, ImageClassifier) else model


def _bn_rule(rule: str, value) -> dict[str, float]:
    """A rule's value as ``{"gamma": g}`` and/or ``{"beta": b}``: a number sets gamma only."""
    def finite(v) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    if finite(value):
        return {"gamma": float(value)}
    if isinstance(value, dict) and value and set(value) <= {"gamma", "beta"} and all(map(finite, value.values())):
        return {k: float(v) for k, v in value.items()}
    raise ConfigError(f"train.bn_gamma: rule {rule!r} needs a finite number (gamma) or "
                      f"{{gamma: G, beta: B}} (either or both), got {value!r}")


def apply_bn_gamma(model: nn.Module, rules: dict[str, Any]) -> list[tuple[str, Any]]:
    """Set the weight (gamma), and optionally the bias (beta), of BatchNorm layers whose names
    match glob rules.

    A rule's value is a number (gamma; beta keeps its value: random init's 0, or the
    pretrained beta) or ``{gamma: G, beta: B}`` (either or both).  Zero-init of a *pretrained*
    residual block needs ``{gamma: 0, beta: 0}``: with gamma 0 alone the block still adds the
    pretrained beta, so it does not start as the identity.  Names are relative to the backbone
    (``bn1``, ``layer4.2.bn3``, ``layer1.0.downsample.1``; resnet50d's stem BNs are
    ``conv1.1``/``conv1.4``/``bn1``).  When several rules match a layer the last rule wins.  A
    rule matching no BatchNorm layer is a ConfigError.  Returns ``[(name, value), …]`` in module
    order, value as given (number or dict).
    """
    if not rules:
        return []
    bns = [(n, m) for n, m in _backbone(model).named_modules()
           if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        norms = sorted({type(m).__name__ for m in _backbone(model).modules() if isinstance(m, _NORM_TYPES)})
        raise ConfigError(f"train.bn_gamma: {_arch(model)} has no BatchNorm layer (it normalises with "
                          f"{', '.join(norms) or 'no normalisation layer'}); BN gamma rules apply to "
                          "BatchNorm networks only, so leave train.bn_gamma empty")
    parsed = {rule: _bn_rule(rule, value) for rule, value in rules.items()}
    unmatched = [r for r in rules if not any(fnmatch.fnmatchcase(n, r) for n, _ in bns)]
    if unmatched:
        names = [n for n, _ in bns]
        examples = list(dict.fromkeys(names[:2] + names[-2:]))
        raise ConfigError(f"train.bn_gamma: rule {unmatched[0]!r} matches no BatchNorm layer "
                          f"(names look like {', '.join(examples)} in {_arch(model)})")
    resolved: list[tuple[str, Any]] = []
    import torch

    with torch.no_grad():
        for name, m in bns:
            matched = [r for r in rules if fnmatch.fnmatchcase(name, r)]
            if not matched:
                continue
            rule = matched[-1]  # later rules override earlier ones
            if m.weight is None:
                raise ConfigError(f"train.bn_gamma: BatchNorm {name!r} has no affine weight")
            if "gamma" in parsed[rule]:
                m.weight.fill_(parsed[rule]["gamma"])
            if "beta" in parsed[rule]:
                m.bias.fill_(parsed[rule]["beta"])
            resolved.append((name, rules[rule] if not isinstance(rules[rule], dict) else parsed[rule]))
    log.info("bn_gamma: set %d BatchNorm layers: %s", len(resolved),
             ", ".join(f"{n}={v:g}" if isinstance(v, float) else f"{n}={v}" for n, v in resolved))
    return resolved


def _arch(model: nn.Module) -> str:
    return (getattr(model, "info", None) or {}).get("arch") or type(_backbone(model)).__name__


def stages(backbone: nn.Module) -> list[list[nn.Parameter]] | None:
    """The backbone's stages in forward order, as parameter lists (the stem excluded), or None.

    ResNets: ``layer1``..``layer4``.  Other timm models: timm's coarse parameter groups
    (``group_matcher(coarse=True)``, the grouping timm's layer-wise LR decay uses: DenseNet's dense
    block + its transition, EfficientNet's block rows, ConvNeXt's stages, ViT's blocks); a final
    group of parameters no pattern names (DenseNet's ``norm5``, ConvNeXt's ``head.norm``) joins
    the last stage, as timm's own trailing norms (``MATCH_PREV_GROUP``) do."""
    if all(hasattr(backbone, s) for s in STAGES):
        return [list(getattr(backbone, s).parameters()) for s in STAGES]
    matcher = getattr(backbone, "group_matcher", None)
    if matcher is None:
        return None
    import re

    from timm.models import group_parameters

    spec = matcher(coarse=True)
    params = dict(backbone.named_parameters())
    groups = [[params[n] for n in names] for _, names in sorted(group_parameters(backbone, spec).items())]
    patterns = [p if isinstance(p, str) else p[0] for v in spec.values() if v is not None
                for p in ([v] if isinstance(v, str) else v)]
    names_of = {id(p): n for n, p in params.items()}
    if len(groups) > 2 and not any(re.match(pat, names_of[id(p)]) for p in groups[-1] for pat in patterns):
        groups[-2:] = [groups[-2] + groups[-1]]
    stem = spec.get("stem")
    if stem and isinstance(stem, str) and groups and all(re.match(stem, names_of[id(p)]) for p in groups[0]):
        groups = groups[1:]
    return groups


def _covering(module: nn.Module, prefix: str, keep: set[int]) -> list[str]:
    """Names of the largest submodules (and loose parameters) whose parameters are all in ``keep``."""
    out = [prefix + n for n, p in module.named_parameters(recurse=False) if id(p) in keep]
    for n, child in module.named_children():
        on = [id(p) in keep for p in child.parameters()]
        if on and all(on):
            out.append(prefix + n)
        elif any(on):
            out += _covering(child, f"{prefix}{n}.", keep)
    return out


def set_trainable(model: ImageClassifier, spec: str) -> list[str]:
    """Freeze parts of the model: 'all' | 'head' | 'last:N' (the last N stages + head; stages:
    :func:`stages`).

    Frozen BatchNorm layers stay in eval mode (running statistics frozen) through
    ``model.train()``.  Returns the trainable module names (the largest wholly trainable ones).
    """
    if not isinstance(model, ImageClassifier):
        raise TypeError("set_trainable expects an ImageClassifier")
    if spec == "all":
        keep = {id(p) for p in model.parameters()}
    elif spec == "head":
        keep = {id(p) for p in model.head.parameters()}
    elif isinstance(spec, str) and spec.startswith("last:") and spec[5:].isdigit():
        found = stages(model.backbone)
        if not found:
            raise ConfigError(f"train.trainable: {spec!r} needs the stages of the backbone, and {_arch(model)} "
                              "has neither ResNet stages nor timm parameter groups; use 'all' or 'head'")
        n = int(spec[5:])
        if not 1 <= n <= len(found):
            raise ConfigError(f"train.trainable: {spec!r}: N must be between 1 and {len(found)} "
                              f"({_arch(model)} has {len(found)} stages)")
        keep = {id(p) for p in model.head.parameters()} | {id(p) for group in found[-n:] for p in group}
    else:
        raise ConfigError(f"train.trainable: {spec!r} is not 'all', 'head' or 'last:N'")
    for p in model.parameters():
        p.requires_grad_(id(p) in keep)
    trainable = _covering(model.backbone, "backbone.", keep) + (["head"] if any(
        id(p) in keep for p in model.head.parameters()) else [])
    model.train(model.training)  # put newly frozen BatchNorms into eval mode now
    log.info("trainable (%s): %s", spec, ", ".join(trainable))
    return trainable


def param_groups(model: nn.Module, weight_decay: float,
                 no_bias_decay: bool = True) -> list[dict[str, Any]]:
    """Optimizer parameter groups over trainable parameters only.

    With ``no_bias_decay``, biases and all normalisation parameters (every 1-D parameter)
    get weight decay 0.
    """
    norm_params = {id(p) for m in model.modules() if isinstance(m, _NORM_TYPES)
                   for p in m.parameters(recurse=False)}
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if no_bias_decay and (p.ndim <= 1 or name.endswith(".bias") or id(p) in norm_params):
            no_decay.append(p)
        else:
            decay.append(p)
    groups = []
    if decay:
        groups.append({"params": decay, "weight_decay": weight_decay, "name": "decay"})
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0, "name": "no_decay"})
    return groups
