"""Decoded-array cache: one .npz per (source fingerprint, size, resize, reader version)."""
from __future__ import annotations

import hashlib
import json
import os
import zipfile
from pathlib import Path

import numpy as np

from ..io import atomic_path
from ..paths import data_cache_dir


def cache_key(parts: dict) -> str:
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:32]


def file_fingerprint(paths: list[Path], ids: list[str]) -> str:
    """Hash of (id, size, mtime_ns) of every file: changes when any file changes."""
    h = hashlib.sha256()
    for p, i in zip(paths, ids):
        st = os.stat(p)
        h.update(f"{i}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def cache_file(cache_dir: Path | None, prefix: str, key: str) -> Path:
    return Path(cache_dir or data_cache_dir()) / f"{prefix}-{key}.npz"


def load(path: Path) -> dict[str, np.ndarray] | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError):
        return None  # unreadable cache: rebuild


def save(path: Path, arrays: dict[str, np.ndarray]) -> None:
    try:
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)
    except OSError:
        pass  # a read-only or full cache folder must not stop loading
