"""Atomic file writes: a reader never sees a half-written result or checkpoint."""
from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()  # read once: os.umask can only be read by setting it (not thread-safe)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in the same folder; rename it onto ``path`` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; results get the usual permissions
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def json_safe(obj: Any) -> Any:
    """JSON has no NaN/inf: write null.  Also converts numpy scalars/arrays and Paths."""
    import math

    import numpy as np

    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, np.generic):
        return json_safe(obj.item())
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, dict) or hasattr(obj, "items"):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, (str, Path)):  # Path, and str subclasses such as torch.__version__
        return str(obj)
    return obj


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False, allow_nan=False) + "\n")


def array_digest(arr) -> str:
    """sha256 of an array's dtype, shape and bytes (a cache key / data fingerprint)."""
    import hashlib

    import numpy as np

    h = hashlib.sha256(f"{arr.dtype}:{arr.shape}\n".encode())
    h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


def file_digests(path: str | os.PathLike, algorithms: tuple[str, ...] = ("sha256",),
                 chunk: int = 1 << 20) -> dict[str, str]:
    """``{algorithm: hex digest}`` of a file, every algorithm in one pass over the bytes
    (md5 only as a published checksum, never for security)."""
    import hashlib

    hs = {a: hashlib.new(a, usedforsecurity=False) if a == "md5" else hashlib.new(a) for a in algorithms}
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            for h in hs.values():
                h.update(b)
    return {a: h.hexdigest() for a, h in hs.items()}


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    return file_digests(path, ("sha256",), chunk)["sha256"]
