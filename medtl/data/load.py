"""Format detection and :func:`load_dataset`: decode once, cache, split patient-level."""
from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ..config import FRACTALDB, SYNTHETIC, DataConfig
from ..errors import ConfigError, DataError
from ..io import sha256_file
from . import cache as _cache
from . import images as _images
from . import synthetic as _synthetic
from .dicom import is_dicom_file
from .folder import class_dirs_with_images, has_class_layout, scan_folder
from .manifest import read_manifest
from .medmnist import read_npz
from .plan import FilePlan, assign_splits, duplicate_groups, leak_summary
from .types import DICOM_EXTS, IMAGE_EXTS, READER_VERSION, SPLITS, DatasetBundle, Split

FORMATS = ("folder", "csv", "dicom", "npz", "synthetic", "fractaldb")


def _workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def detect_format(path: str) -> str:
    """'synthetic' | 'folder' | 'csv' | 'dicom' | 'npz' for a data path; DataError otherwise."""
    from .registry import locate

    loc = locate(path)  # a dataset name (medmnist:pneumoniamnist) resolves to its local copy
    if loc.builtin:
        return "fractaldb" if loc.spec == FRACTALDB else "synthetic"
    if loc.dataset is not None:
        return "csv" if loc.dataset.reader is not None else detect_format(str(loc.path))
    p = loc.path
    if p.is_file():
        suffix = p.suffix.lower()
        if suffix == ".npz":
            return "npz"
        if suffix == ".csv":
            return "csv"
        if is_dicom_file(p):
            return "dicom"
        if suffix in IMAGE_EXTS:
            raise DataError(f"{path}: a single image is not a dataset (use a folder of class folders or a "
                            f"CSV manifest; `medtl data preview` shows one image)")
        raise DataError(f"{path}: unrecognised data file (expected a folder, .csv, .npz or .dcm)")
    if has_class_layout(p):
        return "folder"
    if len(list(p.glob("*.csv"))) == 1:
        return "csv"
    if any(f.suffix.lower() in DICOM_EXTS for f in p.iterdir() if f.is_file()):
        return "dicom"
    if class_dirs_with_images(p)[1] == 1:
        return "folder"  # a single class folder: the folder reader explains what is missing
    raise DataError(f"{path}: no class folders, CSV manifest, .npz or DICOM files found")


def resolve_format(cfg: DataConfig, resolved=None) -> str:
    """The format of ``cfg.path``; ``resolved``: the dataset name ``cfg.path`` was resolved from."""
    from .registry import resolve_data_config

    if resolved is None:
        cfg, resolved = resolve_data_config(cfg)  # a dataset name: its local copy
    if resolved is not None and resolved.reader is not None:  # a published folder: its own reader
        if cfg.format not in ("auto", "csv"):
            raise DataError(f"{resolved.name}: data.format '{cfg.format}' does not apply (its published layout is "
                            "read by medtl's reader for it: leave data.format auto or csv)")
        return "csv"
    fmt = detect_format(cfg.path) if cfg.format == "auto" else cfg.format
    if fmt == "synthetic" and cfg.path != SYNTHETIC:
        raise DataError(f"{cfg.path}: data.format 'synthetic' needs data.path '{SYNTHETIC}'")
    if fmt == "fractaldb" and cfg.path != FRACTALDB:
        raise DataError(f"{cfg.path}: data.format 'fractaldb' needs data.path '{FRACTALDB}'")
    if fmt not in ("synthetic", "fractaldb") and not Path(cfg.path).expanduser().exists():
        raise DataError(f"{cfg.path}: no such file or directory")
    return fmt


def _csv_path(path: str) -> Path:
    p = Path(path).expanduser()
    if p.is_dir():
        csvs = sorted(p.glob("*.csv"))
        if len(csvs) != 1:
            raise DataError(f"{path}: data.format is 'csv' but the folder holds {len(csvs)} .csv files; "
                            f"give the CSV file itself")
        return csvs[0]
    return p


def make_plan(cfg: DataConfig, fmt: str, resolved=None) -> FilePlan:
    """The file plan of ``cfg.path`` (already resolved); ``resolved`` (a dataset name's
    :class:`~medtl.data.registry.ResolvedDataset`) brings the reader of a published layout."""
    if resolved is not None and resolved.reader is not None:
        p = Path(cfg.path).expanduser()
        if not p.is_dir():
            raise DataError(f"{cfg.path}: the local copy of {resolved.name} must be its published folder")
        return resolved.reader(p, cfg)
    if fmt == "folder":
        p = Path(cfg.path).expanduser()
        if not p.is_dir():
            raise DataError(f"{cfg.path}: data.format 'folder' needs a folder")
        return scan_folder(p, cfg.patient_regex)
    if fmt == "csv":
        return read_manifest(_csv_path(cfg.path), cfg)
    if fmt == "dicom":
        raise DataError(f"{cfg.path}: DICOM file(s) carry no labels; put them in class folders "
                        f"(ROOT/CLASS/*.dcm) or list them in a CSV manifest")
    raise DataError(f"{cfg.path}: format '{fmt}' is not a file list")


# ------------------------------------------------------------------ decoding with cache

def _decode_one(path: Path, size: int, mode: str) -> tuple[np.ndarray, str]:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read file ({exc.strerror or exc})") from None
    digest = hashlib.sha256(data).hexdigest()
    return _images.load_image_resized(path, size, mode, data=data), digest


def decode_files(paths: list[Path], size: int, mode: str) -> tuple[np.ndarray, np.ndarray]:
    out = np.empty((len(paths), size, size), np.uint8)
    hashes = np.empty(len(paths), dtype="U64")
    with ThreadPoolExecutor(_workers()) as pool:
        for i, (img, h) in enumerate(pool.map(lambda p: _decode_one(p, size, mode), paths)):
            out[i] = img
            hashes[i] = h
    return out, hashes


def _decode_plan(plan: FilePlan, cfg: DataConfig, cache_dir: Path | None) -> tuple[np.ndarray, np.ndarray, bool]:
    n = len(plan.paths)
    key = _cache.cache_key({
        # the files (relative id, contents), not where the folder lives: a copy of the same files
        # elsewhere (a fetched or extracted folder) shares the cache; an edit in place does not
        "kind": "files", "reader": READER_VERSION,
        "files": _cache.file_fingerprint(plan.paths, plan.ids), "size": cfg.image_size, "resize": cfg.resize,
    })
    cfile = _cache.cache_file(cache_dir, plan.format, key)
    if cfg.cache:
        hit = _cache.load(cfile)
        if hit is not None and hit.get("images") is not None and hit["images"].shape == (n, cfg.image_size, cfg.image_size) \
                and len(hit.get("sha256", ())) == n:
            return hit["images"], hit["sha256"], True
    imgs, hashes = decode_files(plan.paths, cfg.image_size, cfg.resize)
    if cfg.cache:
        _cache.save(cfile, {"images": imgs, "sha256": hashes})
    return imgs, hashes, False


# ------------------------------------------------------------------ notes shared with check

def duplicate_note(hashes, ids) -> str | None:
    groups = duplicate_groups(hashes, ids)
    if not groups:
        return None
    extra = sum(len(g["ids"]) - 1 for g in groups)
    return (f"{len(groups)} groups of byte-identical images ({extra} extra copies) kept as they are; "
            f"`medtl data check` lists them")


def leak_notes(split_of: np.ndarray, patients: np.ndarray, hashes) -> list[str]:
    notes = []
    pl = leak_summary(split_of, np.asarray([str(p) for p in patients], dtype=object))
    if pl["count"]:
        pairs = ", ".join(f"{k}: {v}" for k, v in pl["by_split_pair"].items())
        notes.append(f"WARNING: {pl['count']} patient ids occur in more than one split ({pairs}); "
                     f"the given splits are not patient-level")
    bl = leak_summary(split_of, np.asarray(hashes, dtype=object))
    if bl["count"]:
        pairs = ", ".join(f"{k}: {v}" for k, v in bl["by_split_pair"].items())
        notes.append(f"WARNING: {bl['count']} identical images occur in more than one split ({pairs})")
    return notes


def _bundle_from_arrays(name, fmt, source, classes, multilabel, synthetic, images, labels, patients, ids,
                        split_of, notes, hashes=None, groups=None) -> DatasetBundle:
    splits = {}
    ids_arr = np.asarray(ids, dtype=object)
    for s in SPLITS:
        idx = np.flatnonzero(split_of == s)
        splits[s] = Split(images=images[idx], labels=labels[idx],
                          patients=np.asarray(patients, dtype=object)[idx], ids=ids_arr[idx].tolist(),
                          hashes=None if hashes is None else np.asarray(hashes)[idx],
                          groups=None if groups is None else {c: np.asarray(v, dtype=object)[idx]
                                                              for c, v in groups.items()})
    return DatasetBundle(name=name, format=fmt, source=source, classes=list(classes), multilabel=multilabel,
                         synthetic=synthetic, splits=splits, notes=notes)


# ------------------------------------------------------------------ per format

def _load_files(cfg: DataConfig, fmt: str, cache_dir: Path | None, resolved=None) -> DatasetBundle:
    plan = make_plan(cfg, fmt, resolved)
    images, hashes, _ = _decode_plan(plan, cfg, cache_dir)
    split_of, split_notes = assign_splits(plan.labels, plan.patients, plan.given_splits,
                                          cfg.val_fraction, cfg.split_seed, plan.source, hashes=hashes)
    notes = list(plan.notes) + split_notes
    dn = duplicate_note(hashes, plan.ids)
    if dn:
        notes.append(dn)
    notes += leak_notes(split_of, plan.patients, hashes)
    return _bundle_from_arrays(plan.name, fmt, cfg.path, plan.classes, plan.multilabel, False, images,
                               plan.labels, plan.patients, plan.ids, split_of, notes, hashes, plan.groups)


def image_hashes(images: np.ndarray) -> np.ndarray:
    return np.array([hashlib.sha256(np.ascontiguousarray(im).tobytes()).hexdigest() for im in images], dtype="U64")


def _load_npz(cfg: DataConfig, cache_dir: Path | None) -> DatasetBundle:
    path = Path(cfg.path).expanduser()
    key = _cache.cache_key({"kind": "npz", "reader": READER_VERSION, "sha256": sha256_file(path),
                            "size": cfg.image_size, "resize": cfg.resize})
    cfile = _cache.cache_file(cache_dir, "npz", key)
    arrays = _cache.load(cfile) if cfg.cache else None
    if arrays is None:
        src = read_npz(path)
        arrays = {"classes": np.array(src["classes"]), "multilabel": np.array(src["multilabel"]),
                  "name": np.array(src["name"])}
        for s, (imgs, lab) in src["splits"].items():
            arrays[f"{s}_hash"] = image_hashes(imgs)
            if imgs.shape[1:] != (cfg.image_size, cfg.image_size) or cfg.resize != "squash":
                imgs = np.stack([_images.resize_array(im, cfg.image_size, cfg.resize) for im in imgs]) \
                    if len(imgs) else np.empty((0, cfg.image_size, cfg.image_size), np.uint8)
            arrays[f"{s}_images"], arrays[f"{s}_labels"] = imgs, lab
        if cfg.cache:
            _cache.save(cfile, arrays)
    present = [s for s in SPLITS if f"{s}_images" in arrays]
    images = np.concatenate([arrays[f"{s}_images"] for s in present])
    labels = np.concatenate([arrays[f"{s}_labels"] for s in present])
    hashes = np.concatenate([arrays[f"{s}_hash"] for s in present])
    given = np.concatenate([np.array([s] * len(arrays[f"{s}_images"]), dtype=object) for s in present])
    ids = [f"npz:{s}:{i}" for s in present for i in range(len(arrays[f"{s}_images"]))]
    patients = np.array(ids, dtype=object)  # unknown: one patient per image
    split_of, notes = assign_splits(labels, patients, given, cfg.val_fraction, cfg.split_seed, str(path),
                                    hashes=hashes)
    notes = ["patients unknown in .npz: each image counts as its own patient"] + notes
    dn = duplicate_note(hashes, ids)
    if dn:
        notes.append(dn)
    notes += leak_notes(split_of, patients, hashes)
    return _bundle_from_arrays(str(arrays["name"]), "npz", cfg.path, [str(c) for c in arrays["classes"]],
                               bool(arrays["multilabel"]), False, images, labels, patients, ids, split_of, notes,
                               hashes)


def synthetic_sizes(cfg: DataConfig) -> dict[str, int]:
    sizes = dict(cfg.synthetic_n)
    unknown = sorted(set(sizes) - set(SPLITS))
    if unknown or any(s not in sizes for s in SPLITS):
        raise ConfigError(f"data.synthetic_n: needs exactly the keys train, val, test (got {', '.join(sorted(sizes))})")
    for s in SPLITS:
        if int(sizes[s]) < 2:
            raise ConfigError(f"data.synthetic_n.{s}: must be at least 2 (got {sizes[s]})")
    return {s: int(sizes[s]) for s in SPLITS}


def _cached_arrays(cfg: DataConfig, cache_dir: Path | None, kind: str, key: dict, make) -> dict[str, np.ndarray]:
    """A generated built-in dataset's arrays: from the cache (``data.cache``), else ``make()``
    and cached under ``kind`` and ``key``."""
    cfile = _cache.cache_file(cache_dir, kind, _cache.cache_key({"kind": kind, **key}))
    arrays = _cache.load(cfile) if cfg.cache else None
    if arrays is None:
        arrays = make()
        if cfg.cache:
            _cache.save(cfile, arrays)
    return arrays


def _load_synthetic(cfg: DataConfig, cache_dir: Path | None) -> DatasetBundle:
    sizes = synthetic_sizes(cfg)

    def make() -> dict:
        arrays = {}
        for s in SPLITS:
            imgs, labs, _ = _synthetic.generate(s, range(sizes[s]), cfg.image_size)
            arrays[f"{s}_images"], arrays[f"{s}_labels"] = imgs, labs
        return arrays

    arrays = _cached_arrays(cfg, cache_dir, "synthetic", {"generator": _synthetic.GENERATOR_VERSION, "n": sizes,
                                                         "size": cfg.image_size}, make)
    splits = {}
    for s in SPLITS:
        n = sizes[s]
        splits[s] = Split(images=arrays[f"{s}_images"], labels=arrays[f"{s}_labels"].astype(np.int64),
                          patients=np.array([f"synth-{_synthetic.patient_index(s, i)}" for i in range(n)], dtype=object),
                          ids=[f"synthetic:{s}:{i}" for i in range(n)])
    notes = [f"SYNTHETIC procedurally generated chest-radiograph-like images (generator v{_synthetic.GENERATOR_VERSION}); "
             f"not real data: use it to test the pipeline, never to make claims",
             "2 images per synthetic patient; patients never cross splits"]
    if cfg.resize != "squash":
        notes.append("data.resize does not apply: synthetic images are generated square")
    return DatasetBundle(name=_synthetic.NAME, format="synthetic", source=cfg.path, classes=list(_synthetic.CLASSES),
                         multilabel=False, synthetic=True, splits=splits, notes=notes)


def _load_fractaldb(cfg: DataConfig, cache_dir: Path | None) -> DatasetBundle:
    from . import fractaldb as _fractal

    fc = cfg.fractal
    per_split = {"train": fc.instances, "val": fc.eval_instances, "test": fc.eval_instances}

    def make() -> dict:
        made = _fractal.generate(fc.classes, per_split, cfg.image_size, fc.seed, fc.texture)
        return {f"{s}_{k}": v for s, (imgs, labs) in made.items() for k, v in (("images", imgs), ("labels", labs))}

    key = {"generator": _fractal.GENERATOR_VERSION, "classes": fc.classes, "n": per_split, "seed": fc.seed,
           "size": cfg.image_size} | ({"texture": fc.texture} if fc.texture != "none" else {})
    arrays = _cached_arrays(cfg, cache_dir, "fractaldb", key, make)
    splits = {}
    for s in SPLITS:
        n = len(arrays[f"{s}_labels"])
        ids = [f"fractaldb:{s}:{i}" for i in range(n)]
        splits[s] = Split(images=arrays[f"{s}_images"], labels=arrays[f"{s}_labels"].astype(np.int64),
                          patients=np.array(ids, dtype=object), ids=ids)
    notes = [f"SYNTHETIC formula-driven images (FractalDB-style IFS attractors, generator "
             f"v{_fractal.GENERATOR_VERSION}; {fc.classes} classes, seed {fc.seed}"
             f"{'; each class with its own stripe texture' if fc.texture == 'class' else ''}): a licence-free "
             f"pretraining source, not X-rays and not natural images"]
    return DatasetBundle(name=_fractal.NAME, format="fractaldb", source=cfg.path,
                         classes=_fractal.class_names(fc.classes), multilabel=False, synthetic=True,
                         splits=splits, notes=notes)


def load_dataset(cfg: DataConfig, cache_dir: Path | None = None, on_leak: str | None = None) -> DatasetBundle:
    """Load a dataset as uint8 arrays at cfg.image_size with train/val/test splits (then
    upscaled per ``cfg.sr`` when that is not 'none').

    Splits the data lacks are made patient-level with ``cfg.split_seed`` (not the run's seed:
    every training seed must see the same split).
    Decoded arrays are cached in ``cache_dir`` (default ``paths.data_cache_dir()``) unless
    ``cfg.cache`` is false.

    ``cfg.path`` may be a dataset name (``medmnist:pneumoniamnist``; :mod:`medtl.data.registry`):
    it resolves to the fetched copy in the cache or the ``MEDTL_DATASET_<NAME>`` override; an
    unfetched name raises DataError with the fetch command.  The bundle's ``source`` is then
    the name, and its notes say where the copy came from and whether it is the official release.

    Leaks between the test split and train/val (shared patients, byte-identical images) are
    handled by ``cfg.on_leak`` (or ``on_leak``, which overrides it: evaluating a finished run
    passes 'warn'); :func:`medtl.data.leaks.apply_leak_policy` records the counts in ``bundle.leaks``.

    ``cfg.plant`` (a marker for validating the shortcut probe, :mod:`medtl.data.plant`) is burned
    in last, into fresh arrays, and noted as ``PLANTED CUE:`` in the bundle's notes.
    """
    from .fraction import subsample_train
    from .leaks import apply_leak_policy
    from .plant import plant_cue
    from .registry import resolve_data_config
    from .upscale import apply_sr
    from .validate import validate_bundle

    cfg, resolved = resolve_data_config(cfg)
    fmt = resolve_format(cfg, resolved)
    from .groups import check_group_format
    check_group_format(cfg.group_columns, fmt, cfg.path)
    if fmt == "synthetic":
        bundle = _load_synthetic(cfg, cache_dir)
    elif fmt == "fractaldb":
        bundle = _load_fractaldb(cfg, cache_dir)
    elif fmt == "npz":
        bundle = _load_npz(cfg, cache_dir)
    else:
        bundle = _load_files(cfg, fmt, cache_dir, resolved)
    if resolved is not None:
        bundle.source = resolved.name
        bundle.notes = list(resolved.notes) + list(bundle.notes)
    bundle = apply_leak_policy(bundle, on_leak or cfg.on_leak, resolved.known_overlap if resolved else "")
    bundle = validate_bundle(bundle)  # refuses what cannot be meant; warns about odd data
    bundle = apply_sr(bundle, cfg, cache_dir)  # data.sr: upscaled after decoding, cached
    # data.train_fraction: the train split only, after every cache (shared by all fractions)
    bundle = subsample_train(bundle, cfg.train_fraction,
                             cfg.split_seed if cfg.fraction_seed is None else cfg.fraction_seed)
    # data.plant: a marker burned into the listed splits, after every cache (which stays clean)
    return plant_cue(bundle, cfg.plant, cfg.split_seed)
