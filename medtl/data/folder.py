"""Image folders: ROOT/{train,val,test}/{CLASS}/* or ROOT/{CLASS}/*."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DataError
from .plan import FilePlan, compile_patient_regex, patient_from_name
from .types import DICOM_EXTS, IMAGE_EXTS, SPLIT_ALIASES

_EXTS = IMAGE_EXTS + DICOM_EXTS


def _visible_dirs(p: Path) -> list[Path]:
    return sorted(d for d in p.iterdir() if d.is_dir() and not d.name.startswith((".", "__")))


def _images_under(d: Path) -> list[Path]:
    return sorted(f for f in d.rglob("*") if f.is_file() and f.suffix.lower() in _EXTS
                  and not any(part.startswith(".") for part in f.relative_to(d).parts))


def class_dirs_with_images(root: Path) -> tuple[bool, int]:
    """(has split folders, number of sub-folders holding images)."""
    try:
        dirs = _visible_dirs(root)
    except OSError:
        return False, 0
    if any(d.name.lower() in SPLIT_ALIASES for d in dirs):
        return True, 0
    n = sum(next((f for f in d.rglob("*") if f.suffix.lower() in _EXTS), None) is not None for d in dirs)
    return False, n


def has_class_layout(root: Path) -> bool:
    """True when ROOT has split folders or at least two sub-folders holding images."""
    split, n = class_dirs_with_images(root)
    return split or n >= 2


def scan_folder(root: Path, patient_regex: str | None) -> FilePlan:
    root = Path(root)
    regex = compile_patient_regex(patient_regex)
    dirs = _visible_dirs(root)
    split_dirs = [d for d in dirs if d.name.lower() in SPLIT_ALIASES]
    notes: list[str] = []
    entries: list[tuple[str | None, str, Path]] = []  # (split, class, file)
    if split_dirs:
        ignored = [d.name for d in dirs if d not in split_dirs]
        if ignored:
            notes.append(f"folders outside the split folders ignored: {', '.join(ignored)}")
        for sd in split_dirs:
            split = SPLIT_ALIASES[sd.name.lower()]
            for cd in _visible_dirs(sd):
                entries += [(split, cd.name, f) for f in _images_under(cd)]
    else:
        for cd in dirs:
            entries += [(None, cd.name, f) for f in _images_under(cd)]
    if not entries:
        raise DataError(f"{root}: no images found in class folders (expected ROOT/CLASS/*.png or "
                        f"ROOT/{{train,val,test}}/CLASS/*; image types: {', '.join(_EXTS)})")
    classes = sorted({c for _, c, _ in entries})
    if len(classes) < 2:
        raise DataError(f"{root}: found only one class folder ('{classes[0]}'); need at least two classes")
    cidx = {c: i for i, c in enumerate(classes)}
    ids = [f.relative_to(root).as_posix() for _, _, f in entries]
    patients = np.array([patient_from_name(f.name, rid, regex) for (_, _, f), rid in zip(entries, ids)],
                        dtype=object)
    given = None if not split_dirs else np.array([s for s, _, _ in entries], dtype=object)
    return FilePlan(
        name=root.resolve().name, format="folder", source=str(root), root=root,
        classes=classes, multilabel=False, paths=[f for _, _, f in entries], ids=ids,
        labels=np.array([cidx[c] for _, c, _ in entries], dtype=np.int64), patients=patients,
        given_splits=given, notes=notes,
    )
