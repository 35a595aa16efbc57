"""One fetch layer for everything medtl downloads or looks up by name: weights
(:mod:`medtl.models.weights`), datasets (:mod:`medtl.data.registry`), and what later sources add.

* :class:`Registry`: one name -> one typed entry (a frozen dataclass of data: URL, hash, file
  name, ...), with the register / list / get every table needs, so each table is data plus a
  thin typed entry;
* :func:`offline`: ``MEDTL_OFFLINE=1`` turns every download off (cached or local copies only);
* :func:`download_url`: the one streaming, atomic, hashing downloader;
* hashes are pinned per cache by :class:`medtl.pins.PinStore`; cache places are
  :mod:`medtl.paths`.

Written by hand rather than through ``monai.apps.download_url`` or ``huggingface_hub``: the
weights and datasets live on several hosts (PyTorch, GitHub releases, Bitbucket, Zenodo), some
entries are pinned by the first verified copy rather than by a published hash, and a failed or
refused download must leave nothing behind; neither helper streams to a temporary file, hashes
on the way and lets the caller veto before the rename.
"""
from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable, Generic, Iterator, TypeVar

from .io import atomic_path

T = TypeVar("T")


def offline() -> bool:
    """True when ``MEDTL_OFFLINE`` is set (1, true, yes, on): no download is attempted."""
    return os.environ.get("MEDTL_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


class Registry(Generic[T]):
    """Entries by name.  ``missing(name, known)`` builds the error for an unknown name (each
    table words it for its users: which names exist, what else may be given)."""

    def __init__(self, kind: str, missing: Callable[[str, list[str]], Exception]):
        self.kind = kind
        self.entries: dict[str, T] = {}
        self._missing = missing
        self._refreshers: list[Callable[[], None]] = []

    def add_refresher(self, fn: Callable[[], None]) -> None:
        """``fn()`` runs before every lookup (e.g. re-reading an index of entries made since)."""
        if fn not in self._refreshers:
            self._refreshers.append(fn)

    def _refresh(self) -> None:
        for fn in self._refreshers:
            fn()

    def register(self, name: str, entry: T, overwrite: bool = False) -> T:
        if name in self.entries and not overwrite:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self.entries[name] = entry
        return entry

    def unregister(self, name: str) -> None:
        self.entries.pop(name, None)

    def names(self) -> list[str]:
        self._refresh()
        return list(self.entries)

    def get(self, name: str) -> T:
        self._refresh()
        try:
            return self.entries[name]
        except KeyError:
            raise self._missing(name, list(self.entries)) from None

    def __contains__(self, name: object) -> bool:
        self._refresh()
        return name in self.entries

    def __iter__(self) -> Iterator[T]:
        self._refresh()
        return iter(list(self.entries.values()))


def _progress(total: int | None, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=desc,
                disable=None, leave=False)


def download_url(url: str, dest: Path, *, timeout: float = 60.0,
                 urlopen: Callable[..., Any] | None = None,
                 verify: Callable[[str, Path], None] | None = None) -> str:
    """Download ``url`` to ``dest`` atomically and return its sha256.

    Streams to a temporary file beside ``dest`` while hashing, checks the length against
    Content-Length, calls ``verify(sha, tmp_path)`` (which raises to refuse), then renames.
    On any failure no file is left at ``dest`` or beside it.  Raises ``OSError``/``URLError``
    for transport failures (callers turn them into their one-line errors).
    """
    opener = urlopen or urllib.request.urlopen
    req = urllib.request.Request(url, headers={"User-Agent": "medtl"})
    with atomic_path(dest) as tmp:
        h = hashlib.sha256()
        n = 0
        with opener(req, timeout=timeout) as resp:
            length = resp.headers.get("Content-Length") if getattr(resp, "headers", None) else None
            total = int(length) if length and length.isdigit() else None
            with open(tmp, "wb") as f, _progress(total, dest.name) as bar:
                while True:
                    chunk = resp.read(1 << 20)
                    if not chunk:
                        break
                    f.write(chunk)
                    h.update(chunk)
                    n += len(chunk)
                    bar.update(len(chunk))
        if total is not None and n != total:
            raise urllib.error.ContentTooShortError(
                f"got {n} of {total} bytes", None)  # type: ignore[arg-type]
        sha = h.hexdigest()
        if verify is not None:
            verify(sha, tmp)
    return sha


def transport_reason(exc: BaseException) -> str:
    """One line for a failed download (HTTP status, URL error reason, or the exception)."""
    if isinstance(exc, urllib.error.HTTPError):
        reason: Any = f"HTTP {exc.code} {exc.reason}"
    else:
        reason = getattr(exc, "reason", None) or exc
    return " ".join(str(reason).split()) or type(exc).__name__


__all__ = ["Registry", "download_url", "offline", "transport_reason"]
