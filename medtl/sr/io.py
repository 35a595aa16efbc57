"""SR model files: one torch file holding only plain data (tensors, numbers, strings, lists,
dicts), loadable with ``torch.load(..., weights_only=True)``::

    {"format": "medtl-sr-v1", "arch": {"name", "d", "s", "m", "scale"}, "state_dict": {...},
     "train": {training settings, data source and fingerprint, seed, steps, final loss, ...},
     "medtl_version": "..."}
"""
from __future__ import annotations

import io

import json
import os
import re
from pathlib import Path

import torch

from .. import __version__
from ..errors import ConfigError
from ..io import atomic_path, json_safe, sha256_file
from .model import SRNet, build_sr_model

FORMAT = "medtl-sr-v1"


def save_sr_model(path: str | os.PathLike, model: SRNet, arch: dict, info: dict | None = None) -> Path:
    """Write the model file atomically; returns its path."""
    from .model import resolve_arch

    path = Path(path)
    arch = resolve_arch(arch)
    if getattr(model, "scale", arch["scale"]) != arch["scale"]:
        raise ValueError(f"model scale {model.scale} != arch scale {arch['scale']}")
    payload = {
        "format": FORMAT,
        "arch": dict(arch),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "train": json_safe(dict(info or {})),
        "medtl_version": __version__,
    }
    try:  # plain data only, so that weights_only loading accepts the file
        json.dumps(payload["train"], allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"info: cannot be stored in an SR model file (plain data only): {exc}") from None
    buf = io.BytesIO()  # serialised in memory: torch names the zip's folder after the file it writes,
    torch.save(payload, buf)  # so a random temporary name would make the same model other bytes
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(buf.getvalue())
    return path


def read_sr_file(path: str | os.PathLike) -> dict:
    """The raw payload of a model file (weights_only); ConfigError naming the file when it is
    missing, not a torch file, holds pickled objects, or is not a medtl SR model file."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: SR model file not found")
    if not path.is_file():
        raise ConfigError(f"{path}: SR model path is not a file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (KeyboardInterrupt, MemoryError):
        raise
    except Exception as exc:  # torch raises many types for a non-torch file (KeyError, EOFError, ...)
        text = str(exc)
        m = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
        if m:
            raise ConfigError(f"{path}: refused to load: the file holds a pickled Python object ({m.group(1)}), "
                              f"not plain tensors and data (torch.load weights_only=True)") from None
        raise ConfigError(f"{path}: not a torch file written by medtl ({type(exc).__name__})") from None
    if not isinstance(obj, dict):
        raise ConfigError(f"{path}: not a medtl SR model file (holds a {type(obj).__name__}, expected a dict "
                          f"with format {FORMAT!r})")
    fmt = obj.get("format")
    if fmt is None:
        raise ConfigError(f"{path}: not a medtl SR model file (no 'format' key; expected {FORMAT!r})")
    if fmt != FORMAT:
        raise ConfigError(f"{path}: unsupported SR model format {fmt!r} (expected {FORMAT!r})")
    for key in ("arch", "state_dict"):
        if not isinstance(obj.get(key), dict):
            raise ConfigError(f"{path}: SR model file has no {key!r} dict")
    return obj


def load_sr_model(path: str | os.PathLike) -> tuple[SRNet, dict]:
    """(model in eval mode on the CPU, meta) for a file written by :func:`save_sr_model`.

    meta: ``{"path", "sha256", "format", "arch", "train", "medtl_version"}``.
    """
    path = Path(path)
    obj = read_sr_file(path)
    try:
        model = build_sr_model(obj["arch"])
    except ConfigError as exc:
        raise ConfigError(f"{path}: bad arch in SR model file: {exc}") from None
    try:
        model.load_state_dict(obj["state_dict"], strict=True)
    except (RuntimeError, KeyError, TypeError) as exc:
        first = " ".join(str(exc).split())
        raise ConfigError(f"{path}: SR model weights do not match its arch {obj['arch']}: {first[:300]}") from None
    model.eval()
    meta = {
        "path": str(path),
        "sha256": sha256_file(path),
        "format": obj["format"],
        "arch": dict(obj["arch"]),
        "train": dict(obj.get("train") or {}),
        "medtl_version": obj.get("medtl_version"),
    }
    return model, meta
