"""A labelled list of image files (from a folder layout or a CSV manifest), not yet decoded."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DataError
from .split import holdout
from .types import SPLITS

TEST_FRACTION = 0.2  # used only when the data has no test split at all


@dataclass
class FilePlan:
    name: str
    format: str
    source: str
    root: Path                 # ids are relative to this folder (for cache fingerprints)
    classes: list[str]
    multilabel: bool
    paths: list[Path]
    ids: list[str]
    labels: np.ndarray         # int64 (N,) or float32 (N, C)
    patients: np.ndarray       # object (N,)
    given_splits: np.ndarray | None  # 'train'/'val'/'test' per file, None when the data has none
    notes: list[str] = field(default_factory=list)
    groups: dict[str, np.ndarray] | None = None  # data.group_columns: column -> value per file


def patient_from_name(file_name: str, rid: str, regex: re.Pattern | None) -> str:
    if regex is not None:
        m = regex.search(file_name)
        if m:
            return m.group(1) if m.groups() else m.group(0)
    return "img:" + rid


def compile_patient_regex(pattern: str | None) -> re.Pattern | None:
    if not pattern:
        return None
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise DataError(f"data.patient_regex {pattern!r}: invalid regular expression ({exc})") from None


def split_groups(patients: np.ndarray, hashes: np.ndarray | None) -> np.ndarray:
    """The units a split made by medtl keeps together: a patient, merged with every other
    patient that has a byte-identical image (union-find), so medtl never puts two copies of one
    image on both sides of a split it makes."""
    patients = np.asarray([str(p) for p in patients], dtype=object)
    if hashes is None:
        return patients
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    first_of: dict[str, str] = {}
    for p, h in zip(patients.tolist(), np.asarray(hashes).tolist()):
        find(p)
        if h in first_of:
            a, b = find(first_of[h]), find(p)
            if a != b:
                parent[b] = a
        else:
            first_of[h] = p
    return np.asarray([find(p) for p in patients.tolist()], dtype=object)


def assign_splits(labels: np.ndarray, patients: np.ndarray, given: np.ndarray | None,
                  val_fraction: float, seed: int, what: str, hashes: np.ndarray | None = None
                  ) -> tuple[np.ndarray, list[str]]:
    """Final 'train'/'val'/'test' per item, making the missing ones patient-level (patients with
    byte-identical images kept together: :func:`split_groups`)."""
    patients = split_groups(patients, hashes)
    n = len(patients)
    notes: list[str] = []
    strat = "any positive" if np.asarray(labels).ndim == 2 else "by class"

    def rule(seed_used: int, k: int) -> str:
        return (f"patient-level, stratified ({strat}), sklearn StratifiedGroupKFold(n_splits={k}, shuffle=True, "
                f"random_state={seed_used}), one fold held out")

    out = np.array(["train"] * n, dtype=object) if given is None else np.asarray(given, dtype=object).copy()
    present = set(out.tolist())
    if "train" not in present:
        if present and present <= {"val", "test"}:  # an evaluation-only set (another hospital's test export)
            return out, [f"no 'train' split: an evaluation-only set ({', '.join(sorted(present, key=SPLITS.index))} "
                         f"as given); training on it is refused"]
        raise DataError(f"{what}: no 'train' split found (splits present: {', '.join(sorted(present))})")
    if "test" not in present:
        idx = np.flatnonzero(out == "train")
        keep, held = holdout(labels[idx], patients[idx], TEST_FRACTION, seed + 1, what)
        out[idx[held]] = "test"
        notes.append(f"test split made from {'all images' if given is None else 'train'}: {len(held)} images "
                     f"(~{TEST_FRACTION:.0%}), {rule(seed + 1, int(round(1 / TEST_FRACTION)))}")
    if "val" not in present:
        idx = np.flatnonzero(out == "train")
        keep, held = holdout(labels[idx], patients[idx], val_fraction, seed, what)
        out[idx[held]] = "val"
        notes.append(f"val split carved out of train: {len(held)} images (~{val_fraction:.0%}), "
                     f"{rule(seed, int(round(1 / val_fraction)))}")
    return out, notes


def leak_summary(split_of: np.ndarray, keys: np.ndarray, max_examples: int = 5) -> dict:
    """Keys (patients or byte hashes) that occur in more than one split."""
    where: dict[str, set] = {}
    for s, k in zip(split_of.tolist(), keys.tolist()):
        where.setdefault(k, set()).add(s)
    leaked = sorted(k for k, ss in where.items() if len(ss) > 1)
    pairs: dict[str, int] = {}
    for k in leaked:
        ss = sorted(where[k], key=SPLITS.index)
        for i in range(len(ss)):
            for j in range(i + 1, len(ss)):
                pairs[f"{ss[i]}-{ss[j]}"] = pairs.get(f"{ss[i]}-{ss[j]}", 0) + 1
    return {"count": len(leaked), "by_split_pair": pairs,
            "examples": [{"key": k, "splits": sorted(where[k], key=SPLITS.index)} for k in leaked[:max_examples]]}


def duplicate_groups(hashes: list[str] | np.ndarray, ids: list[str]) -> list[dict]:
    groups: dict[str, list[str]] = {}
    for h, i in zip(list(hashes), ids):
        groups.setdefault(str(h), []).append(i)
    return [{"sha256": h, "ids": v} for h, v in groups.items() if len(v) > 1]
