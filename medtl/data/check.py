"""`check_dataset`: an integrity check of every file, then counts, patients, sizes, duplicates,
leaks and what training would refuse or warn about (:mod:`medtl.data.validate`).

Every file is verified in worker processes (one per core) by training's own decode
(:func:`medtl.data.images.verify_image`: DICOM header checks, rescale and VOI/window; images in
full, a PNG's chunk checksums too; then the resize to ``data.image_size``), so every file that
training or ``medtl data preview`` refuses is a bad file here.  ``fast=True`` reads headers only
(sizes, hashes; a DICOM header is still checked as decoding would check it).

The verdict agrees with training: the leaks training's leak policy counts
(:func:`medtl.data.leaks.leak_counts` on the same patients and bytes) make ``ok`` False when
``data.on_leak`` is ``error`` (the default), with the reason in ``refused`` and
``refused_by_leak_policy``; a leak status training would record as ``unchecked`` (images that
name no patient) or a dataset's known overlap is a warning.
"""
from __future__ import annotations

import hashlib
import os
import time
import warnings
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
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
from .validate import findings

MAX_EXAMPLES = 5
PARALLEL_MIN = 32  # fewer files are verified in this process (a pool costs more than it saves)


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
    """(H, W) from the header, sha256 of the bytes, or an error message (the fast pass)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        return None, None, f"cannot read file ({exc.strerror or exc})"
    digest = hashlib.sha256(data).hexdigest()
    if not data:
        return None, digest, "empty file (0 bytes)"
    try:
        hw = _images.header_size(path)
    except DataError as exc:
        return None, digest, _reason(exc, path)
    return hw, digest, None


def _reason(exc: DataError, path) -> str:
    msg = str(exc)
    return msg[len(f"{path}: "):] if msg.startswith(f"{path}: ") else msg


def verify_file(path: str | Path, size: int | None = None,
                mode: str = "squash") -> tuple[tuple[int, int] | None, str | None, str | None, list[str]]:
    """(H, W), sha256, error message or None, notes: the full integrity check of one file
    (:func:`medtl.data.images.verify_image`: training's decode, resized to ``size`` as training
    resizes).  Runs in a worker process."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        return None, None, f"cannot read file ({exc.strerror or exc})", []
    digest = hashlib.sha256(data).hexdigest()
    try:
        with warnings.catch_warnings():  # a worker's own state: decoders' warnings say nothing more
            warnings.simplefilter("ignore")
            hw, notes = _images.verify_image(path, data, size, mode)
    except DataError as exc:
        return None, digest, _reason(exc, path), []
    except MemoryError:
        return None, digest, "too large to decode in memory", []
    return hw, digest, None, notes


def _verify_chunk(paths: list[str], size: int | None = None, mode: str = "squash") -> list[tuple]:
    return [verify_file(p, size, mode) for p in paths]


def verify_files(paths: list[Path], fast: bool = False, workers: int | None = None,
                 meanwhile=None, size: int | None = None, mode: str = "squash") -> tuple[list[tuple], dict, object]:
    """Per file (H, W), sha256, error, notes; how the check ran (mode, workers, seconds); and
    the result of ``meanwhile()``, called in this process while the workers verify.

    ``fast``: headers only, in threads.  Otherwise every file is verified, in ``workers``
    processes (default: one per core) when there are at least :data:`PARALLEL_MIN` files."""
    t0 = time.perf_counter()
    n = len(paths)
    side = meanwhile or (lambda: None)
    if fast:
        with ThreadPoolExecutor(_workers()) as pool:
            out = [(hw, h, e, []) for hw, h, e in pool.map(_probe, paths)]
        how = {"mode": "fast (headers only)", "workers": _workers(), "seconds": time.perf_counter() - t0}
        return out, how, side()
    workers = max(1, workers or os.cpu_count() or 1)
    pool, futures = None, []
    if workers > 1 and n >= PARALLEL_MIN:
        chunk = max(1, min(64, n // (workers * 4)))
        try:
            pool = ProcessPoolExecutor(workers)
            futures = [pool.submit(_verify_chunk, [str(p) for p in paths[i:i + chunk]], size, mode)
                       for i in range(0, n, chunk)]
        except (OSError, RuntimeError):  # no process pool here (a sandbox, no /dev/shm): this process
            pool = None
    extra = side()
    out = None
    if pool is not None:
        with pool:
            try:
                out = [r for f in futures for r in f.result()]
            except BrokenProcessPool:  # a worker died (killed, out of memory): verify here instead
                out = None
    used = workers if out is not None else 1
    if out is None:
        out = [verify_file(p, size, mode) for p in paths]
    how = {"mode": "full (every file verified)", "workers": used, "seconds": time.perf_counter() - t0}
    return out, how, extra


def _bad(ids, results) -> dict:
    files = [{"id": i, "error": r[2]} for i, r in zip(ids, results) if r[2]]
    return {"count": len(files), "files": files}


def _file_warnings(ids, results) -> list[str]:
    by_note: dict[str, list[str]] = {}
    for i, r in zip(ids, results):
        for note in r[3]:
            by_note.setdefault(note, []).append(i)
    return [f"{len(v)} file(s): {k}, e.g. {', '.join(v[:3])}" for k, v in by_note.items()]


def _verdict(report: dict, bad: dict, found: list, file_warnings: list[str], how: dict) -> dict:
    """Add the integrity verdict to a report: bad files, what training refuses, warnings."""
    report["bad_files"] = bad
    report["unreadable"] = {"count": bad["count"], "examples": bad["files"][:MAX_EXAMPLES]}
    report["refused"] = [f.message for f in found if f.level == "error"]
    report["warnings"] = [f.message for f in found if f.level == "warning"] + file_warnings
    report["check"] = {**how, "seconds": round(how.get("seconds", 0.0), 3)}
    report["ok"] = not bad["count"] and not report["refused"]
    return report


def _check_dicom(path: Path, cfg: DataConfig, fast: bool = False, workers: int | None = None) -> dict:
    files = [path] if path.is_file() else sorted(f for f in path.iterdir() if f.is_file() and f.suffix.lower() in DICOM_EXTS)
    ids = [f.name for f in files]
    results, how, _ = verify_files(files, fast, workers, size=cfg.image_size, mode=cfg.resize)
    infos = []
    for f, r in zip(files[:20], results[:20]):
        if not r[2]:
            try:
                infos.append({"file": f.name, **dicom_info(f)})
            except (DataError, OSError):
                pass
    sizes = [r[0] for r in results if r[0] is not None]
    report = {"format": "dicom", "name": path.stem if path.is_file() else path.name, "path": str(cfg.path),
              "classes": [], "files": len(files), "dicom": infos, "image_size": _size_stats(sizes),
              "notes": ["DICOM files carry no labels: put them in class folders or a CSV manifest to train",
                        "only non-identifying header fields are shown (modality, photometric, bits, size, "
                        "transfer syntax)"]}
    return _verdict(report, _bad(ids, results), [], _file_warnings(ids, results), how)


def _check_npz(cfg: DataConfig, known_overlap: str = "") -> dict:
    t0 = time.perf_counter()
    path = Path(cfg.path).expanduser()
    how = {"mode": "full (every array read)", "workers": 1}
    try:
        src = read_npz(path)
    except DataError as exc:
        report = {"format": "npz", "name": path.stem, "path": cfg.path, "synthetic": False, "classes": [],
                  "notes": []}
        return _verdict(report, {"count": 1, "files": [{"id": path.name, "error": _reason(exc, path)}]}, [], [],
                        how | {"seconds": time.perf_counter() - t0})
    present = [s for s in SPLITS if s in src["splits"]]
    imgs = [src["splits"][s][0] for s in present]
    labels = np.concatenate([src["splits"][s][1] for s in present])
    ids = [f"npz:{s}:{i}" for s in present for i in range(len(src["splits"][s][0]))]
    hashes = np.concatenate([image_hashes(a) for a in imgs])
    given = np.array([s for s in present for _ in range(len(src["splits"][s][0]))], dtype=object)
    patients = np.array(ids, dtype=object)
    split_of, notes = assign_splits(labels, patients, given, cfg.val_fraction, cfg.split_seed, cfg.path,
                                    hashes=hashes)  # as training splits it
    sizes = [tuple(a.shape[1:3]) for a in imgs for _ in range(len(a))]
    found = findings(src["classes"], src["multilabel"], "npz", cfg.path,
                     {s: labels[split_of == s] for s in SPLITS})
    blank = sum(int((a.reshape(len(a), -1).min(1) == a.reshape(len(a), -1).max(1)).sum()) for a in imgs if len(a))
    warn = [f"{blank} blank image(s) (a single gray value)"] if blank else []
    report = {"format": "npz", "name": src["name"], "path": cfg.path, "synthetic": False,
              "classes": src["classes"], "multilabel": src["multilabel"],
              "counts": _counts(split_of, labels, src["classes"], src["multilabel"]),
              "patients": _patients(split_of, patients), "image_size": _size_stats(sizes),
              "duplicates": _dups(hashes, ids), "leaks": _leaks(split_of, patients, hashes, ids),
              "notes": ["patients unknown in .npz: each image counts as its own patient",
                        "duplicates are identical image arrays (sha256 of the pixels)"] + notes}
    report = _verdict(report, {"count": 0, "files": []}, found, warn, how | {"seconds": time.perf_counter() - t0})
    return _leak_verdict(report, cfg, split_of, labels, patients, hashes, ids, known_overlap)


def _leak_verdict(report: dict, cfg: DataConfig, split_of, labels, patients, hashes, ids,
                  known_overlap: str = "") -> dict:
    """Training's leak policy (:func:`medtl.data.leaks.apply_leak_policy`, ``cfg.on_leak``) on the
    patients and bytes training would see: a refusal goes to ``refused`` (``ok`` False,
    ``refused_by_leak_policy``), ``unchecked`` and a known overlap to ``warnings``;
    ``leak_policy`` records the policy, the status training would record and the counts."""
    from .leaks import apply_leak_policy, leak_counts
    from .types import DatasetBundle, Split

    split_of = np.asarray(split_of, dtype=object)
    hashes = np.asarray(hashes, dtype=object)
    splits = {}
    for s in SPLITS:
        idx = np.flatnonzero(split_of == s)
        splits[s] = Split(images=np.empty((len(idx), 0, 0), np.uint8), labels=np.asarray(labels)[idx],
                          patients=np.asarray([str(p) for p in patients], dtype=object)[idx],
                          ids=[ids[i] for i in idx], hashes=hashes[idx])
    bundle = DatasetBundle(name=str(report.get("name")), format=str(report.get("format")), source=str(cfg.path),
                           classes=list(report.get("classes") or []), multilabel=bool(report.get("multilabel")),
                           synthetic=False, splits=splits)
    rec = {"policy": cfg.on_leak, "counts": leak_counts(bundle), "refused": None}
    try:
        leaks = apply_leak_policy(bundle, cfg.on_leak, known_overlap).leaks
    except DataError as exc:  # the line training stops with
        report["refused"] = list(report.get("refused", [])) + [str(exc)]
        report["refused_by_leak_policy"] = True
        report["ok"] = False
        rec.update(status="refused", refused=_describe_test_leaks(rec["counts"]))
        leaks = apply_leak_policy(bundle, "warn", known_overlap).leaks  # what else is known
    else:
        rec["status"] = leaks["status"]
    rec["n_without_patient"] = leaks["n_without_patient"]
    warn = []
    if any(leaks["n_without_patient"].values()):
        per = ", ".join(f"{s} {n}" for s, n in leaks["n_without_patient"].items())
        warn.append(f"UNCHECKED: {sum(leaks['n_without_patient'].values())} of {len(ids)} images name no patient "
                    f"({per}), so patient overlap between test and train/val cannot be counted (training records "
                    f"leak status 'unchecked')")
    if known_overlap:
        rec["known_overlap"] = known_overlap
        warn.append(f"KNOWN OVERLAP: {known_overlap}")
    if rec["status"] in ("leaky", "dropped"):
        warn.append(f"data.on_leak: {cfg.on_leak}: the test split shares {_describe_test_leaks(rec['counts'])}; "
                    f"training would record leak status '{rec['status']}'")
    report["warnings"] = list(report.get("warnings", [])) + warn
    report["leak_policy"] = rec
    return report


def _describe_test_leaks(counts: dict) -> str:
    p, i = counts["patients"], counts["images"]
    return (f"{p['train-test'] + p['val-test']} patients (train-test {p['train-test']}, val-test {p['val-test']}) "
            f"and {i['train-test'] + i['val-test']} byte-identical images (train-test {i['train-test']}, val-test "
            f"{i['val-test']}) with train/val")


def _training_splits(split_of, labels, patients, given, hashes, cfg: DataConfig, what: str, notes: list[str]):
    """The splits training makes: with ``hashes``, patients sharing an image's bytes stay together
    (:func:`medtl.data.plan.split_groups`); recomputed only where that changes the units."""
    from .plan import split_groups

    plain = np.asarray([str(p) for p in patients], dtype=object)
    if not np.array_equal(split_groups(plain, hashes), plain):
        return assign_splits(labels, patients, given, cfg.val_fraction, cfg.split_seed, what, hashes=hashes)
    return split_of, notes


def check_dataset(path: str, cfg: DataConfig | None = None, fast: bool = False, workers: int | None = None,
                  known_overlap: str = "") -> dict:
    """A JSON-serialisable report on a dataset; never includes DICOM patient fields.

    Every file is verified (``fast``: headers only).  ``report["ok"]`` is False when a file is
    bad (``bad_files``: each with its reason) or training would refuse the data (``refused``;
    the leak policy too: ``refused_by_leak_policy``); ``warnings`` name legal but odd content,
    an ``unchecked`` leak status and ``known_overlap`` (a dataset name's, or the one given)."""
    cfg = DataConfig(path=str(path)) if cfg is None else cfg.model_copy(update={"path": str(path)})
    report = _check(cfg, fast, workers, known_overlap)
    if cfg.train_fraction < 1:  # the check describes the splits; training then keeps a subset of train
        report.setdefault("notes", []).append(
            f"data.train_fraction={cfg.train_fraction:g}: the train counts above are before the label fraction; "
            f"training keeps a stratified, patient-level {cfg.train_fraction:.0%} of them (its counts are in each "
            f"run's metrics.json, data.train_fraction)")
    return report


def _check(cfg: DataConfig, fast: bool, workers: int | None, known_overlap: str) -> dict:
    from .registry import resolve_data_config

    cfg, resolved = resolve_data_config(cfg)  # a dataset name (medmnist:pneumoniamnist) -> its local copy
    known_overlap = known_overlap or (resolved.known_overlap if resolved is not None else "")
    fmt = resolve_format(cfg, resolved)
    if fmt == "dicom":
        return _check_dicom(Path(cfg.path).expanduser(), cfg, fast, workers)
    if fmt == "synthetic":
        return _check_synthetic(cfg)
    if fmt == "npz":
        return _check_npz(cfg, known_overlap)
    plan = make_plan(cfg, fmt, resolved)
    results, how, (split_of, split_notes) = verify_files(  # the splits are made while the workers verify
        plan.paths, fast, workers, meanwhile=lambda: assign_splits(plan.labels, plan.patients, plan.given_splits,
                                                                   cfg.val_fraction, cfg.split_seed, plan.source),
        size=cfg.image_size, mode=cfg.resize)
    sizes = [r[0] for r in results if r[0] is not None]
    hashes = np.array([r[1] or f"unreadable:{i}" for i, r in zip(plan.ids, results)], dtype=object)
    split_of, split_notes = _training_splits(split_of, plan.labels, plan.patients, plan.given_splits, hashes, cfg,
                                             plan.source, split_notes)
    found = findings(plan.classes, plan.multilabel, fmt, plan.source,
                     {s: plan.labels[split_of == s] for s in SPLITS})
    report = {"format": fmt, "name": plan.name, "path": cfg.path, "synthetic": False,
              "classes": plan.classes, "multilabel": plan.multilabel,
              "counts": _counts(split_of, plan.labels, plan.classes, plan.multilabel),
              "patients": _patients(split_of, plan.patients), "image_size": _size_stats(sizes),
              "duplicates": _dups(hashes, plan.ids), "leaks": _leaks(split_of, plan.patients, hashes, plan.ids),
              "notes": list(plan.notes) + split_notes
              + ["duplicates: sha256 of file bytes; size from "
                 + ("image headers (pixels not decoded)" if fast else "the verified files")]}
    report = _verdict(report, _bad(plan.ids, results), found, _file_warnings(plan.ids, results), how)
    return _leak_verdict(report, cfg, split_of, plan.labels, plan.patients, hashes, plan.ids, known_overlap)


def _check_synthetic(cfg: DataConfig) -> dict:
    sizes = synthetic_sizes(cfg)
    labels, patients, split_of = [], [], []
    for s in SPLITS:
        lab, pat = _synthetic.labels_and_patients(s, sizes[s])
        labels.append(lab)
        patients.append(pat)
        split_of += [s] * sizes[s]
    labels_a, patients_a, split_a = np.concatenate(labels), np.concatenate(patients), np.array(split_of, dtype=object)
    report = {"format": "synthetic", "name": _synthetic.NAME, "path": cfg.path, "synthetic": True,
              "classes": list(_synthetic.CLASSES), "multilabel": False,
              "counts": _counts(split_a, labels_a, _synthetic.CLASSES, False),
              "patients": _patients(split_a, patients_a),
              "image_size": {"min_hw": [cfg.image_size] * 2, "max_hw": [cfg.image_size] * 2,
                             "most_common_hw": [cfg.image_size] * 2, "distinct": 1},
              "duplicates": {"groups": 0, "extra_copies": 0, "examples": []},
              "leaks": {"patient": {"count": 0, "by_split_pair": {}, "examples": []},
                        "bytes": {"count": 0, "by_split_pair": {}, "examples": []}},
              "notes": [f"SYNTHETIC data (generator v{_synthetic.GENERATOR_VERSION}), rendered on demand"]}
    found = findings(list(_synthetic.CLASSES), False, "synthetic", cfg.path,
                     {s: labels_a[split_a == s] for s in SPLITS})
    return _verdict(report, {"count": 0, "files": []}, found, [], {"mode": "generated (no files)", "workers": 1,
                                                                  "seconds": 0.0})
