"""Weights made on this machine (``medtl pretrain``), registered beside the published ones.

The index ``<weights cache>/local.json`` maps each name to its entry: the file (kept in the
weights cache as ``<name>-<sha8>.pt``), its full sha256 (pinned when it was made: a changed file
is refused like a published one), the architecture, the family (IN, SIN, SIN+IN, SIN+IN→IN,
tricks) and the provenance (recipe, source, image size, classes, epochs, seed, medtl version).
:func:`sync` registers the index's entries in :data:`medtl.models.weights.WEIGHTS`, so
``model.weights: NAME`` and ``medtl weights list`` find them; the weights functions call it,
so an index written by another process (a pretrain run) is seen without a restart: it is a
refresher of that registry, added when this module is imported (``medtl.models`` imports it).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from ..errors import WeightsError
from ..io import sha256_file, write_json_atomic
from ..paths import weights_dir
from .weights import WEIGHTS, WeightSource

INDEX = "local.json"
_SEEN: dict[str, float] = {}  # index path -> mtime already registered


def index_path() -> Path:
    return weights_dir() / INDEX


def read_index() -> dict[str, dict[str, Any]]:
    p = index_path()
    if not p.is_file():
        return {}
    try:
        obj = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WeightsError(f"{p}: unreadable index of locally made weights ({type(exc).__name__})") from None
    if not isinstance(obj, dict):
        raise WeightsError(f"{p}: not an index of locally made weights (expected a JSON object)")
    return obj


def _source(name: str, e: dict[str, Any]) -> WeightSource:
    return WeightSource(
        name=name, arch=e["arch"], url=Path(weights_dir() / e["filename"]).as_uri(), sha256=e["sha256"],
        sha256_prefix=e["sha256"][:8], filename=e["filename"], format=e["format"], family=e["family"], top1=None,
        citation=e.get("citation", "made by medtl pretrain"), notes=e.get("notes", ""),
        mean=tuple(e["mean"]), std=tuple(e["std"]), input_size=tuple(e["input_size"]),
        provenance=dict(e.get("provenance") or {}))


def sync() -> None:
    """Register (again) every entry of this cache's index (cheap when it has not changed)."""
    p = index_path()
    try:
        mtime = p.stat().st_mtime_ns
    except OSError:
        return
    if _SEEN.get(str(p)) == mtime:
        return
    for name, e in read_index().items():
        WEIGHTS.register(name, _source(name, e), overwrite=True)
    _SEEN[str(p)] = mtime


def register_local(name: str, weights_file: Path, *, arch: str, fmt: str, family: str, provenance: dict,
                   mean, std, input_size, notes: str = "", replace: bool = False) -> dict:
    """Copy ``weights_file`` into the weights cache, pin its sha256, add ``name`` to the index and
    the registry.  The same name for the same bytes is a no-op; for other bytes it is refused
    unless ``replace``; a published name is always refused."""
    sha = sha256_file(weights_file)
    index = read_index()
    old = index.get(name)
    if name in WEIGHTS and old is None:
        raise WeightsError(f"{name}: a published weight name; choose another name for locally made weights")
    if old is not None and old["sha256"] != sha and not replace:
        raise WeightsError(f"{name}: already names other locally made weights (sha256 {old['sha256'][:12]}...); "
                           f"choose another name (pretrain.name), or replace them by restarting the pretrain (restart)")
    filename = f"{name.replace('/', '_')}-{sha[:8]}.pt"
    dest = weights_dir() / filename
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not dest.is_file() or sha256_file(dest) != sha:
        tmp = dest.with_name(dest.name + ".tmp")
        shutil.copyfile(weights_file, tmp)
        tmp.replace(dest)
    entry = {"arch": arch, "filename": filename, "sha256": sha, "format": fmt, "family": family,
             "mean": list(mean), "std": list(std), "input_size": list(input_size), "notes": notes,
             "citation": "made by medtl pretrain (see provenance)", "provenance": provenance}
    index[name] = entry
    write_json_atomic(index_path(), index)
    WEIGHTS.register(name, _source(name, entry), overwrite=True)
    return entry


WEIGHTS.add_refresher(sync)

__all__ = ["index_path", "read_index", "register_local", "sync"]
