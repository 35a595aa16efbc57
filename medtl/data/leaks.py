"""The leak policy: what happens when the test split shares patients or images with train/val.

A test image whose patient (or whose exact bytes) also appear in training makes the test AUC
an optimistic, not an external, estimate.  Published splits do this (Kermany's shares 170
patients between train and test), so medtl counts such leaks for every dataset and applies
``data.on_leak``:

* ``error`` (default): refuse, with one line giving the counts and the two ways out;
* ``drop_train``: remove every train and val image whose patient or bytes occur in test; the
  test split stays exactly as published, so results remain comparable with others on it;
* ``warn``: go on; the run records ``status: leaky`` and every page that shows it warns.

Counts are per split pair (train-val, train-test, val-test), for patients (where the data
names them: folders via ``data.patient_regex``, CSV patient columns; npz files name none) and
for byte-identical images.  Only leaks that involve the test split trigger the policy; a
train-val overlap is counted and noted (it flatters model selection, not the test).

The recorded ``status`` never claims more than was counted, in this order:

* ``leaky``: test leaks were found and kept (``warn``);
* ``unchecked``: some or all images carry no patient id (medtl's one-per-image stand-ins,
  ``npz:...`` / ``img:...``), so patient overlap could not be counted; ``n_without_patient``
  gives how many per split (byte-identical images are still counted, and found leaks still go
  through the policy: ``dropped`` counts stay in the record);
* ``dropped``: test leaks were found and removed from train and val (``drop_train``);
* ``clean``: every image of train, val and test names its patient and no test leak was found.

``known_overlap`` (the registry's provenance note of a named dataset, e.g. PneumoniaMNIST's test
split taken from Kermany's, which shares patients with Kermany's train split) is recorded as is,
with a ``WARNING:`` data note: it is known, not counted.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..errors import DataError
from .types import SPLITS, DatasetBundle, Split

POLICIES = ("error", "drop_train", "warn")


STANDIN_PREFIXES = ("img:", "npz:")


def _known(patients: np.ndarray) -> np.ndarray:
    """Patient ids that name a patient (not medtl's one-per-image stand-ins)."""
    p = np.asarray([str(x) for x in patients], dtype=object)
    keep = np.array([not x.startswith(STANDIN_PREFIXES) for x in p], dtype=bool)
    return p[keep]


def without_patient(bundle: DatasetBundle) -> dict[str, int]:
    """Per split, how many images carry no patient id (a stand-in: ``npz:...``, ``img:...``)."""
    return {s: int(len(bundle.splits[s].patients) - len(_known(bundle.splits[s].patients))) for s in SPLITS}


def _unchecked_note(missing: dict[str, int], bundle: DatasetBundle) -> str:
    total = sum(len(bundle.splits[s]) for s in SPLITS)
    per = ", ".join(f"{s} {missing[s]}" for s in SPLITS)
    return (f"WARNING: UNCHECKED leak status: {sum(missing.values())} of {total} images name no patient ({per}), so "
            f"patient overlap between test and train/val could not be counted (byte-identical images were)")


def _pair_counts(sets: dict[str, set]) -> dict[str, int]:
    out = {}
    for i, a in enumerate(SPLITS):
        for b in SPLITS[i + 1:]:
            out[f"{a}-{b}"] = len(sets[a] & sets[b])
    return out


def leak_counts(bundle: DatasetBundle) -> dict:
    """``{"patients": {pair: n}, "images": {pair: n}, "images_checked": bool}`` for a bundle."""
    pats = {s: set(_known(bundle.splits[s].patients).tolist()) for s in SPLITS}
    checked = all(bundle.splits[s].hashes is not None for s in SPLITS)
    imgs = {s: set(np.asarray(bundle.splits[s].hashes).tolist()) if checked else set() for s in SPLITS}
    return {"patients": _pair_counts(pats), "images": _pair_counts(imgs), "images_checked": checked}


def _test_leak_total(counts: dict, kind: str) -> int:
    return counts[kind]["train-test"] + counts[kind]["val-test"]


def _drop_overlap(split: Split, patients: set, hashes: set) -> tuple[Split, int]:
    bad = np.array([str(p) in patients for p in split.patients], dtype=bool)
    if split.hashes is not None:
        bad |= np.array([h in hashes for h in np.asarray(split.hashes).tolist()], dtype=bool)
    keep = np.flatnonzero(~bad)
    kept = Split(images=split.images[keep], labels=split.labels[keep], patients=split.patients[keep],
                 ids=[split.ids[i] for i in keep], hashes=None if split.hashes is None else split.hashes[keep])
    return kept, int(bad.sum())


def _describe(counts: dict) -> str:
    p, i = counts["patients"], counts["images"]
    return (f"{_test_leak_total(counts, 'patients')} patients (train-test {p['train-test']}, val-test "
            f"{p['val-test']}) and {_test_leak_total(counts, 'images')} byte-identical images (train-test "
            f"{i['train-test']}, val-test {i['val-test']})")


def apply_leak_policy(bundle: DatasetBundle, policy: str, known_overlap: str = "") -> DatasetBundle:
    """Count leaks and apply ``policy`` (see the module docstring); the returned bundle's
    ``leaks`` records the counts, the policy, what was dropped, ``n_without_patient`` (per split),
    ``known_overlap`` (when given) and the resulting ``status`` (``leaky``, ``unchecked``,
    ``dropped`` or ``clean``)."""
    bundle = _apply_policy(bundle, policy)
    record, notes = dict(bundle.leaks), list(bundle.notes)
    missing = without_patient(bundle)
    record["n_without_patient"] = missing
    if any(missing.values()):
        notes.append(_unchecked_note(missing, bundle))
        if record["status"] != "leaky":
            record["status"] = "unchecked"
    if known_overlap:
        record["known_overlap"] = known_overlap
        notes.append(f"WARNING: KNOWN OVERLAP: {known_overlap}")
    return replace(bundle, leaks=record, notes=notes)


def _apply_policy(bundle: DatasetBundle, policy: str) -> DatasetBundle:
    """The counts and the policy on the leaks found; status ``clean``, ``dropped`` or ``leaky``."""
    if policy not in POLICIES:
        raise DataError(f"data.on_leak must be one of {', '.join(POLICIES)} (got {policy!r})")
    counts = leak_counts(bundle)
    n_test_leaks = _test_leak_total(counts, "patients") + _test_leak_total(counts, "images")
    record = {"policy": policy, "before": counts, "dropped": {"train": 0, "val": 0}, "status": "clean"}
    notes = list(bundle.notes)
    if counts["patients"]["train-val"] or counts["images"]["train-val"]:
        notes.append(f"train and val share {counts['patients']['train-val']} patients and "
                     f"{counts['images']['train-val']} byte-identical images (model selection may be optimistic)")
    if n_test_leaks == 0:
        return replace(bundle, leaks=record, notes=notes)
    what = _describe(counts)
    if policy == "error":
        raise DataError(f"{bundle.source}: the test split shares {what} with train/val; set data.on_leak: "
                        f"drop_train (drop them from train and val, keep the published test split) or "
                        f"data.on_leak: warn (train anyway, every output marked as leaky)")
    if policy == "warn":
        record["status"] = "leaky"
        notes.append(f"LEAKY SPLIT (data.on_leak: warn): the test split shares {what} with train/val; "
                     f"test metrics are optimistic")
        return replace(bundle, leaks=record, notes=notes)
    test = bundle.splits["test"]
    pats = set(_known(test.patients).tolist())
    hashes = set(np.asarray(test.hashes).tolist()) if test.hashes is not None else set()
    splits = dict(bundle.splits)
    for s in ("train", "val"):
        splits[s], record["dropped"][s] = _drop_overlap(bundle.splits[s], pats, hashes)
    record["status"] = "dropped"
    after = leak_counts(replace(bundle, splits=splits))
    record["after"] = after
    notes.append(f"data.on_leak: drop_train: the test split shared {what} with train/val; dropped "
                 f"{record['dropped']['train']} train and {record['dropped']['val']} val images; the test split "
                 f"is unchanged")
    return replace(bundle, splits=splits, leaks=record, notes=notes)
