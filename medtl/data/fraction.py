"""``data.train_fraction``: the train split subsampled to a label fraction (data-efficiency curves).

Applied by :func:`medtl.data.load.load_dataset` after the splits, the leak policy, the checks
and any upscaling (so every decode and upscaling cache is shared by all fractions), to the
train split only: val and test are never touched, so every fraction is scored on the same cases.

* **Units.** Patients: all images of a patient are kept or dropped together.  Images that
  name no patient (medtl's one-per-image stand-ins ``npz:...``, ``img:...``) are their own
  unit, so data without patient ids is subsampled image by image (``level: image``; ``mixed``
  where only some images name a patient).
* **Strata.** A unit's stratum is the set of classes among its images (single-label: a patient
  with images of two classes is its own stratum) or, for multi-label data, whether any of its
  images has any positive label (as the splits stratify, :func:`medtl.data.split.strata`;
  label combinations would make thousands of tiny strata on ChestX-ray14).  Each stratum keeps
  ``floor(fraction * n + 0.5)`` of its ``n`` units.
* **Coverage.** For every class (multi-label: every label) that has images (positives) in the
  full train split, the first unit holding it in the seeded order is always kept (an *anchor*;
  anchors count towards their stratum's quota), so no class disappears.
* **Nested and seeded.** One seeded permutation of the units (seed ``data.fraction_seed``,
  default ``data.split_seed``; units in sorted-id order, so the image order does not matter)
  gives the order; a stratum keeps its anchors plus a prefix of its other units in that order,
  and the prefix only grows with the fraction.  Hence the same seed gives the same subset, and
  for one seed the subset at a smaller fraction is contained in the subset at a larger one
  (5 % within 10 % within 20 % ...), which a data-efficiency curve needs: each point adds data.
* **Refusal.** A subsample that leaves a class (multi-label: a label's positives) that had at
  least 2 train images with fewer than 2 is refused with one line naming the key and the counts.

The facts go into ``bundle.train_fraction`` and from there into ``metrics.json``
(``data.train_fraction``: fraction, seed, level, images and patients before and after, images
per class before and after); ``data.n`` gives the split sizes trained on, and
``data.leaks.n_without_patient.train`` counts the subsample.  At fraction 1 (the default)
nothing is done and nothing is recorded.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..errors import DataError
from .leaks import STANDIN_PREFIXES
from .types import DatasetBundle, Split

#: mixed into the seed so that the fraction's permutation is not the split's own draw
_STREAM = 0x7F2A


def _units(patients: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
    """(sorted unit ids, unit index of each image, level)."""
    ids = np.asarray([str(p) for p in patients], dtype=object)
    units, inv = np.unique(ids.astype(str), return_inverse=True)
    named = np.array([not x.startswith(STANDIN_PREFIXES) for x in units], dtype=bool)
    level = "patient" if named.all() else ("image" if not named.any() else "mixed")
    return units, inv.reshape(-1), level


def _membership(labels: np.ndarray, multilabel: bool, n_classes: int, inv: np.ndarray, n_units: int) -> np.ndarray:
    """(n_units, n_classes) bool: the unit has an image of the class (multi-label: a positive)."""
    per_image = (np.asarray(labels) > 0.5) if multilabel else \
        (np.asarray(labels, dtype=np.int64)[:, None] == np.arange(n_classes)[None, :])
    out = np.zeros((n_units, n_classes), dtype=bool)
    np.logical_or.at(out, inv, per_image.astype(bool))
    return out


def _class_counts(labels: np.ndarray, multilabel: bool, n_classes: int) -> np.ndarray:
    if multilabel:
        return (np.asarray(labels) > 0.5).sum(axis=0).astype(np.int64) if len(labels) else np.zeros(n_classes, np.int64)
    return np.bincount(np.asarray(labels, dtype=np.int64), minlength=n_classes)[:n_classes]


def select_units(member: np.ndarray, multilabel: bool, fraction: float, seed: int) -> np.ndarray:
    """Bool mask over units (rows of ``member``, in sorted-id order) kept at ``fraction``."""
    n_units = len(member)
    rank = np.empty(n_units, np.int64)
    rank[np.random.default_rng([int(seed) & 0xFFFFFFFF, _STREAM]).permutation(n_units)] = np.arange(n_units)
    if multilabel:
        stratum = member.any(axis=1).astype(np.int64)
    else:
        _, stratum = np.unique(member, axis=0, return_inverse=True)
        stratum = np.asarray(stratum).reshape(-1)
    keep = np.zeros(n_units, dtype=bool)
    for c in range(member.shape[1]):  # anchors: the first unit of each present class
        has = np.flatnonzero(member[:, c])
        if len(has):
            keep[has[np.argmin(rank[has])]] = True
    anchors = keep.copy()
    for s in np.unique(stratum):
        members = np.flatnonzero(stratum == s)
        quota = int(np.floor(fraction * len(members) + 0.5))
        rest = members[~anchors[members]]
        rest = rest[np.argsort(rank[rest], kind="stable")]
        keep[rest[:max(0, quota - int(anchors[members].sum()))]] = True
    return keep


def _take(split: Split, idx: np.ndarray) -> Split:
    return replace(split, images=split.images[idx], labels=split.labels[idx], patients=split.patients[idx],
                   ids=[split.ids[i] for i in idx], hashes=None if split.hashes is None else split.hashes[idx],
                   groups=None if split.groups is None else {c: np.asarray(v)[idx] for c, v in split.groups.items()})


def subsample_train(bundle: DatasetBundle, fraction: float, seed: int) -> DatasetBundle:
    """``bundle`` with its train split subsampled to ``fraction`` (module docstring); the facts in
    ``bundle.train_fraction``.  ``fraction`` 1 (the default) returns ``bundle`` as it is, with no
    record: ``data.n.train`` is then the whole train split."""
    if fraction >= 1.0:
        return bundle
    train = bundle.splits["train"]
    k = bundle.num_classes
    units, inv, level = _units(train.patients)
    before = _class_counts(train.labels, bundle.multilabel, k)
    member = _membership(train.labels, bundle.multilabel, k, inv, len(units))
    idx = np.flatnonzero(select_units(member, bundle.multilabel, float(fraction), seed)[inv])
    sub = _take(train, idx)
    after = _class_counts(sub.labels, bundle.multilabel, k)
    short = [c for c in range(k) if before[c] >= 2 and after[c] < 2]
    what = "positive images" if bundle.multilabel else "images"
    if short:
        counts = ", ".join(f"{bundle.classes[c]} {int(after[c])} of {int(before[c])}" for c in range(k))
        raise DataError(f"data.train_fraction={fraction:g} leaves the train split with fewer than 2 {what} of "
                        f"{', '.join(repr(bundle.classes[c]) for c in short)} ({what} kept per class: {counts}); "
                        f"raise data.train_fraction")
    n_units_after = len(np.unique(inv[idx])) if len(idx) else 0
    unit = {"patient": "patients", "image": "images (no patient ids: image-level)",
            "mixed": "units (patients; images without a patient id count alone)"}[level]
    facts = {"fraction": float(fraction), "seed": int(seed), "level": level,
             "n_train_before": int(len(train)), "n_train_after": int(len(sub)),
             "patients_before": int(len(units)), "patients_after": int(n_units_after),
             "per_class_before": {bundle.classes[c]: int(before[c]) for c in range(k)},
             "per_class_after": {bundle.classes[c]: int(after[c]) for c in range(k)}}
    notes = list(bundle.notes) + [
        f"data.train_fraction {fraction:g}: train subsampled to {len(sub)} of {len(train)} images ({n_units_after} "
        f"of {len(units)} {unit}), stratified by class, seed {seed}, nested across fractions; val and test untouched"]
    leaks = dict(bundle.leaks)
    if isinstance(leaks.get("n_without_patient"), dict):  # stand-in counts of the train split as trained
        missing = int(sum(str(p).startswith(STANDIN_PREFIXES) for p in sub.patients))
        leaks["n_without_patient"] = dict(leaks["n_without_patient"], train=missing)
    splits = dict(bundle.splits, train=sub)
    return replace(bundle, splits=splits, notes=notes, leaks=leaks, train_fraction=facts)
