"""What a dataset must satisfy before training, and what is legal but odd.

:func:`findings` looks at class names and the labels of each split and returns
:class:`Finding` s of two levels:

* ``error``: training refuses the data, because no reading of it can be what was meant —
  a label column mixing integers, fractions and names (``0, 1, 2.5, NORMAL``: five unrelated
  classes), classes without a single image (a stray label 7 in a 0/1 set makes an 8-class
  task), a training split holding one class;
* ``warning``: legal but odd — a class with a handful of images, a validation or test split
  with one class (its AUC is undefined), a multi-label class never positive in training.

:func:`validate_bundle` (called by :func:`medtl.data.load.load_dataset`) raises the first
error as a one-line :class:`~medtl.errors.DataError` naming the data and the fix, and records
each warning in the bundle's notes (so in ``train.log`` and ``metrics.json``) and the log.
``medtl data check`` reports both levels.  Pixel-level problems (NaN or infinite float pixels,
an unusable DICOM rescale) are refused by the readers themselves, file by file.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from ..errors import DataError
from .types import SPLITS

log = logging.getLogger("medtl")

#: a class with fewer images than this (all splits together) is warned about
MIN_CLASS_IMAGES = 10


@dataclass(frozen=True)
class Finding:
    level: str    # "error" (training refuses) or "warning" (legal but odd)
    message: str  # one line, naming the data; errors also name the fix


def label_kinds(names) -> dict[str, list[str]]:
    """Class names by kind: ``integer`` (``3``, ``3.0``), ``fraction`` (``2.5``), ``name``."""
    kinds: dict[str, list[str]] = {}
    for n in names:
        try:
            x = float(str(n).strip())
            kind = "integer" if np.isfinite(x) and x == int(x) else ("fraction" if np.isfinite(x) else "name")
        except ValueError:
            kind = "name"
        kinds.setdefault(kind, []).append(str(n))
    return kinds


def _examples(values: list[str], k: int = 3) -> str:
    return ", ".join(values[:k]) + (", ..." if len(values) > k else "")


def _mixed_kinds(classes: list[str], source: str) -> Finding | None:
    kinds = label_kinds(classes)
    if len(kinds) < 2:
        return None
    what = "; ".join(f"{k}s {_examples(v)}" for k, v in kinds.items())
    return Finding("error", f"{source}: the label column mixes kinds of labels ({what}), which would make "
                            f"{len(classes)} unrelated classes; make every label a class name, or every label an "
                            f"integer class index")


def _single_label(classes: list[str], source: str, labels: dict[str, np.ndarray]) -> list[Finding]:
    out = []
    k = len(classes)
    total = np.zeros(k, np.int64)
    per_split = {}
    for s, y in labels.items():
        c = np.bincount(np.asarray(y, dtype=np.int64), minlength=k)[:k] if len(y) else np.zeros(k, np.int64)
        per_split[s] = c
        total += c
    empty = [classes[i] for i in range(k) if total[i] == 0]
    if empty:
        out.append(Finding("error", f"{source}: classes {_examples(empty, 5)} have no images ({k} classes from "
                                    f"labels 0..{k - 1}: a stray label?); fix the labels so that every class "
                                    f"0..K-1 has images"))
    train = per_split.get("train")
    if train is not None and train.sum() and (train > 0).sum() < 2:
        only = classes[int(np.argmax(train))]
        out.append(Finding("error", f"{source}: the train split holds one class only ({only!r}, {int(train.sum())} "
                                    f"images); a classifier needs at least two: put images of the other classes "
                                    f"into train, or let medtl make the splits"))
    for i in range(k):
        if 0 < total[i] < MIN_CLASS_IMAGES:
            out.append(Finding("warning", f"class {classes[i]!r} has only {int(total[i])} images in all splits "
                                          f"together: too few to learn it or to evaluate it"))
    for s in ("val", "test"):
        c = per_split.get(s)
        if c is not None and c.sum() and (c > 0).sum() < 2:
            out.append(Finding("warning", f"the {s} split holds one class only ({classes[int(np.argmax(c))]!r}): "
                                          f"its AUC is undefined"))
    return out


def _multi_label(classes: list[str], source: str, labels: dict[str, np.ndarray]) -> list[Finding]:
    out = []
    train = labels.get("train")
    if train is not None and len(train):
        pos = np.asarray(train).sum(axis=0)
        if not (pos > 0).any():
            out.append(Finding("error", f"{source}: no image of the train split has a positive label; fix the "
                                        f"label columns"))
        never = [c for c, p in zip(classes, pos) if p == 0]
        if never and (pos > 0).any():
            out.append(Finding("warning", f"classes never positive in the train split: {_examples(never, 5)}"))
    return out


def findings(classes: list[str], multilabel: bool, fmt: str, source: str,
             labels: dict[str, np.ndarray]) -> list[Finding]:
    """Errors (training refuses) and warnings for a dataset's classes and per-split labels."""
    classes = [str(c) for c in classes]
    out: list[Finding] = []
    if fmt == "csv" and not multilabel:
        mixed = _mixed_kinds(classes, source)
        if mixed is not None:
            out.append(mixed)
    labels = {s: np.asarray(y) for s, y in labels.items() if s in SPLITS}
    out += _multi_label(classes, source, labels) if multilabel else _single_label(classes, source, labels)
    return out


def validate_bundle(bundle):
    """Refuse (DataError, the first error) or annotate (``WARNING:`` notes, logged) a loaded
    :class:`~medtl.data.types.DatasetBundle`; returns the bundle."""
    found = findings(bundle.classes, bundle.multilabel, bundle.format, str(bundle.source),
                     {s: sp.labels for s, sp in bundle.splits.items()})
    errors = [f for f in found if f.level == "error"]
    if errors:
        raise DataError(errors[0].message)
    for f in found:
        note = f"WARNING: {f.message}"
        if note not in bundle.notes:
            bundle.notes.append(note)
            log.warning("data: %s", f.message)
    return bundle
