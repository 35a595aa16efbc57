"""`check_dataset`: counts, patients, sizes, duplicates and leaks without decoding pixels."""
from __future__ import annotations

import hashlib
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ..config import DataConfig
from ..errors import DataError
from . import images as _images
from . import synthetic as _synthetic
from .dicom import dicom_info
from .load import _workers, image_hashes, make_plan, resolve_format, synthetic_sizes
from .medmnist import read_npz
from .plan import assign_splits, duplicate_groups, leak_summary
from .types import DICOM_EXTS, SPLITS

MAX_EXAMPLES = 5


def _counts(split_of: np.ndarray, labels: np.ndarray, classes: list[str], multilabel: bool) -> dict:
    out = {}
    for s in SPLITS:
        m = split_of == s
        if multilabel:
            pos = labels[m].sum(axis=0) if m.any() else np.zeros(len(classes))
            per = {c: int(v) for c, v in zip(classes, pos)}
            per["(no positive)"] = int((labels[m].sum(axis=1) == 0).sum()) if m.any() else 0
        else:
            per = {c: int((labels[m] == k).sum()) for k, c in enumerate(classes)}
        out[s] = {"total": int(m.sum()), "by_class": per}
    return out


def _patients(split_of: np.ndarray, patients: np.ndarray) -> dict:
    return {s: len(set(np.asarray(patients)[split_of == s].tolist())) for s in SPLITS}


def _size_stats(sizes: list[tuple[int, int]]) -> dict:
    if not sizes:
        return {}
    hs, ws = [h for h, _ in sizes], [w for _, w in sizes]
    (mh, mw), cnt = Counter(sizes).most_common(1)[0]
    return {"min_hw": [min(hs), min(ws)], "max_hw": [max(hs), max(ws)], "most_common_hw": [mh, mw],
            "most_common_count": cnt, "distinct": len(set(sizes))}


def _dups(hashes, ids) -> dict:
    groups = duplicate_groups(hashes, ids)
    return {"groups": len(groups), "extra_copies": sum(len(g["ids"]) - 1 for g in groups),
            "examples": [{"sha256": g["sha256"], "ids": g["ids"][:4], "n": len(g["ids"])} for g in groups[:MAX_EXAMPLES]]}


def _leaks(split_of, patients, hashes, ids) -> dict:
    pl = leak_summary(split_of, np.asarray([str(p) for p in patients], dtype=object), MAX_EXAMPLES)
    bl = leak_summary(split_of, np.asarray(hashes, dtype=object), MAX_EXAMPLES)
    first_id: dict[str, str] = {}
    for h, i in zip(np.asarray(hashes).tolist(), ids):
        first_id.setdefault(h, i)
    for ex in bl["examples"]:
        ex["id"] = first_id.get(ex["key"])
    return {"patient": {"count": pl["count"], "by_split_pair": pl["by_split_pair"],
                        "examples": [{"patient": e["key"], "splits": e["splits"]} for e in pl["examples"]]},
            "bytes": {"count": bl["count"], "by_split_pair": bl["by_split_pair"],
                      "examples": [{"sha256": e["key"], "id": e["id"], "splits": e["splits"]} for e in bl["examples"]]}}


def _probe(path: Path) -> tuple[tuple[int, int] | None, str | None, str | None]:
    """(H, W) from the header, sha256 of the bytes, or an error message."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        return None, None, f"cannot read file ({exc.strerror or exc})"
    digest = hashlib.sha256(data).hexdigest()
    try:
        hw = _images.header_size(path)
    except DataError as exc:
        return None, digest, str(exc).split(": ", 1)[-1]
    return hw, digest, None


def _check_dicom(path: Path, cfg: DataConfig) -> dict:
    files = [path] if path.is_file() else sorted(f for f in path.iterdir() if f.is_file() and f.suffix.lower() in DICOM_EXTS)
    infos, problems = [], []
    for f in files:
        try:
            info = dicom_info(f)
            infos.append({"file": f.name, **info})
        except DataError as exc:
            problems.append({"id": f.name, "error": str(exc).split(": ", 1)[-1]})
    sizes = [(i["Rows"], i["Columns"]) for i in infos if "Rows" in i and "Columns" in i]
    return {"format": "dicom", "name": path.stem if path.is_file() else path.name, "path": str(cfg.path),
            "classes": [], "files": len(files), "dicom": infos[:20], "image_size": _size_stats(sizes),
            "unreadable": {"count": len(problems), "examples": problems[:MAX_EXAMPLES]},
            "notes": ["DICOM files carry no labels: put them in class folders or a CSV manifest to train",
                      "only non-identifying header fields are shown (modality, photometric, bits, size, "
                      "transfer syntax)"]}


def check_dataset(path: str, cfg: DataConfig | None = None) -> dict:
    """A JSON-serialisable report on a dataset; never includes DICOM patient fields."""
    from .registry import resolve_data_config

    cfg = DataConfig(path=str(path)) if cfg is None else cfg.model_copy(update={"path": str(path)})
    cfg, _ = resolve_data_config(cfg)  # a dataset name (medmnist:pneumoniamnist) -> its local copy
    fmt = resolve_format(cfg)
    if fmt == "dicom":
        return _check_dicom(Path(cfg.path).expanduser(), cfg)
    if fmt == "synthetic":
        sizes = synthetic_sizes(cfg)
        labels, patients, split_of = [], [], []
        for s in SPLITS:
            lab, pat = _synthetic.labels_and_patients(s, sizes[s])
            labels.append(lab)
            patients.append(pat)
            split_of += [s] * sizes[s]
        labels_a, patients_a, split_a = np.concatenate(labels), np.concatenate(patients), np.array(split_of, dtype=object)
        return {"format": "synthetic", "name": _synthetic.NAME, "path": cfg.path, "synthetic": True,
                "classes": list(_synthetic.CLASSES), "multilabel": False,
                "counts": _counts(split_a, labels_a, _synthetic.CLASSES, False),
                "patients": _patients(split_a, patients_a),
                "image_size": {"min_hw": [cfg.image_size] * 2, "max_hw": [cfg.image_size] * 2,
                               "most_common_hw": [cfg.image_size] * 2, "distinct": 1},
                "duplicates": {"groups": 0, "extra_copies": 0, "examples": []},
                "leaks": {"patient": {"count": 0, "by_split_pair": {}, "examples": []},
                          "bytes": {"count": 0, "by_split_pair": {}, "examples": []}},
                "unreadable": {"count": 0, "examples": []},
                "notes": [f"SYNTHETIC data (generator v{_synthetic.GENERATOR_VERSION}), rendered on demand"]}
    if fmt == "npz":
        src = read_npz(Path(cfg.path).expanduser())
        present = [s for s in SPLITS if s in src["splits"]]
        imgs = [src["splits"][s][0] for s in present]
        labels = np.concatenate([src["splits"][s][1] for s in present])
        ids = [f"npz:{s}:{i}" for s in present for i in range(len(src["splits"][s][0]))]
        hashes = np.concatenate([image_hashes(a) for a in imgs])
        given = np.array([s for s in present for _ in range(len(src["splits"][s][0]))], dtype=object)
        patients = np.array(ids, dtype=object)
        split_of, notes = assign_splits(labels, patients, given, cfg.val_fraction, cfg.split_seed, cfg.path)
        sizes = [tuple(a.shape[1:3]) for a in imgs for _ in range(len(a))]
        return {"format": "npz", "name": src["name"], "path": cfg.path, "synthetic": False,
                "classes": src["classes"], "multilabel": src["multilabel"],
                "counts": _counts(split_of, labels, src["classes"], src["multilabel"]),
                "patients": _patients(split_of, patients), "image_size": _size_stats(sizes),
                "duplicates": _dups(hashes, ids), "leaks": _leaks(split_of, patients, hashes, ids),
                "unreadable": {"count": 0, "examples": []},
                "notes": ["patients unknown in .npz: each image counts as its own patient",
                          "duplicates are identical image arrays (sha256 of the pixels)"] + notes}

    plan = make_plan(cfg, fmt)
    with ThreadPoolExecutor(_workers()) as pool:
        probes = list(pool.map(_probe, plan.paths))
    sizes = [hw for hw, _, _ in probes if hw is not None]
    hashes = np.array([h or f"unreadable:{i}" for i, (_, h, _) in zip(plan.ids, probes)], dtype=object)
    problems = [{"id": i, "error": e} for i, (_, _, e) in zip(plan.ids, probes) if e]
    split_of, split_notes = assign_splits(plan.labels, plan.patients, plan.given_splits,
                                          cfg.val_fraction, cfg.split_seed, plan.source)
    return {"format": fmt, "name": plan.name, "path": cfg.path, "synthetic": False,
            "classes": plan.classes, "multilabel": plan.multilabel,
            "counts": _counts(split_of, plan.labels, plan.classes, plan.multilabel),
            "patients": _patients(split_of, plan.patients), "image_size": _size_stats(sizes),
            "duplicates": _dups(hashes, plan.ids), "leaks": _leaks(split_of, plan.patients, hashes, plan.ids),
            "unreadable": {"count": len(problems), "examples": problems[:MAX_EXAMPLES]},
            "notes": list(plan.notes) + split_notes
            + ["duplicates: sha256 of file bytes; size from image headers (pixels not decoded)"]}
