"""Where medtl caches things.

``MEDTL_CACHE`` (if set) is the root of medtl's cache; otherwise ``$XDG_CACHE_HOME/medtl``
or ``~/.cache/medtl``.  Weight files are looked up in medtl's cache first and then in
torch.hub's checkpoint folder (``$TORCH_HOME/hub/checkpoints``), so files already fetched
by torchvision or timm are reused.
"""
from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    env = os.environ.get("MEDTL_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "medtl"


def weights_dir() -> Path:
    return cache_root() / "weights"


def data_cache_dir() -> Path:
    return cache_root() / "data"


def torch_hub_checkpoints() -> Path:
    torch_home = os.environ.get("TORCH_HOME")
    if torch_home:
        return Path(torch_home).expanduser() / "hub" / "checkpoints"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "torch" / "hub" / "checkpoints"
