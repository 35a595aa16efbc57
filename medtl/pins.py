"""Pinned sha256 hashes for downloads that have no published full hash (the Geirhos weights,
the Kermany archive): the first good fetch pins the file's sha256, and every later fetch must
match it.  One JSON file per registry: ``{name: {sha256, url, filename, pinned_at}}``."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

from .errors import MedtlError
from .io import write_json_atomic


class PinStore:
    """The pin file at ``path()`` (a callable: the cache folder may move with $MEDTL_CACHE);
    unreadable files raise ``error`` (the registry's own error type)."""

    def __init__(self, path: Callable[[], Path], error: type[MedtlError]):
        self._path = path
        self._error = error

    @property
    def path(self) -> Path:
        return self._path()

    def read(self) -> dict[str, dict[str, str]]:
        p = self.path
        if not p.is_file():
            return {}
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise self._error(f"{p}: unreadable pin file ({exc}); fix or delete it") from None
        if not isinstance(data, dict):
            raise self._error(f"{p}: pin file must be a JSON object; fix or delete it")
        return data

    def pinned(self, name: str, url: str) -> str | None:
        """The pinned sha256 of ``name`` when it was pinned for this ``url``."""
        entry = self.read().get(name)
        if isinstance(entry, dict) and entry.get("url") == url:
            return entry.get("sha256")
        return None

    def record(self, name: str, url: str, filename: str, sha256: str) -> None:
        pins = self.read()
        pins[name] = {"sha256": sha256, "url": url, "filename": filename,
                      "pinned_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        write_json_atomic(self.path, pins)
