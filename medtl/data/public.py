"""Readers for public chest X-ray datasets in their published layouts (registry layout 'manifest').

Each reader takes the dataset's root folder (as published, or as its download extracts) and the
:class:`~medtl.config.DataConfig`, and returns the :class:`~medtl.data.plan.FilePlan` of every
image: path, labels, patient id (where the publisher gives one) and the official split (where
there is one).  Labels are multi-label 0/1 columns (RSNA: one binary target); ``data.label_columns``
keeps only the named labels; CheXpert-style -1 (uncertain) labels follow ``data.uncertain``.
Errors are one line naming the file and the problem; no patient id is ever printed.
"""
from __future__ import annotations

import ast
import csv
import gzip
import io
import re
from pathlib import Path
from typing import Iterable

import numpy as np

from ..errors import DataError
from .manifest import _binary
from .plan import FilePlan

#: the 14 CheXpert observations (also MIMIC-CXR-JPG's mimic-cxr-2.0.0-chexpert.csv), in the published order
CHEXPERT_LABELS = ("No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion",
                   "Edema", "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion",
                   "Pleural Other", "Fracture", "Support Devices")
#: NIH ChestX-ray14's 14 pathologies ("No Finding" = none of them)
NIH_LABELS = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Effusion", "Emphysema", "Fibrosis",
              "Hernia", "Infiltration", "Mass", "Nodule", "Pleural_Thickening", "Pneumonia", "Pneumothorax")
_SPLITS = {"train": "train", "validate": "val", "valid": "val", "val": "val", "test": "test"}


# ------------------------------------------------------------------ shared helpers

def find_file(root: Path, spec: str) -> Path | None:
    """The first of the '|'-separated alternatives in ``spec`` present under ``root``."""
    for alt in spec.split("|"):
        p = root / alt.strip()
        if p.exists():
            return p
    return None


def _need(root: Path, spec: str) -> Path:
    p = find_file(root, spec)
    if p is None:
        raise DataError(f"{root}: published file {' or '.join(spec.split('|'))} not found")
    return p


def read_csv(path: Path) -> tuple[list[str], list[dict]]:
    """(columns, rows) of a .csv or .csv.gz; one-line DataError when unreadable or empty."""
    try:
        raw = path.read_bytes()
        if path.suffix == ".gz":
            raw = gzip.decompress(raw)
        reader = csv.DictReader(io.StringIO(raw.decode("utf-8-sig"), newline=""))
        columns = list(reader.fieldnames or [])
        rows = list(reader)
    except (OSError, EOFError, UnicodeDecodeError, csv.Error, gzip.BadGzipFile) as exc:
        raise DataError(f"{path}: cannot read CSV ({type(exc).__name__}: {' '.join(str(exc).split())[:150]})") from None
    if not columns or not rows:
        raise DataError(f"{path}: empty CSV (no header or no rows)")
    return columns, rows


def _require(path: Path, columns: list[str], wanted: Iterable[str]) -> None:
    missing = [c for c in wanted if c not in columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(repr(m) for m in missing)} of the published layout")


def _select(classes: list[str], cfg, where: Path) -> list[str]:
    """``data.label_columns`` (a subset of ``classes``, in that order) or all ``classes``."""
    if not cfg.label_columns:
        return list(classes)
    unknown = [c for c in cfg.label_columns if c not in classes]
    if unknown:
        raise DataError(f"{where}: data.label_columns names {', '.join(repr(u) for u in unknown)}, not labels of "
                        f"this dataset (labels: {', '.join(classes)})")
    return list(cfg.label_columns)


def _no_groups(cfg, where: Path) -> None:
    if getattr(cfg, "group_columns", None):
        raise DataError(f"{where}: data.group_columns is not supported for this dataset's layout")


def _plan(name: str, root: Path, source: Path, classes: list[str], labels: np.ndarray, rels: list[str],
          patients: list[str], splits: list[str] | None, notes: list[str], multilabel: bool = True,
          groups=None) -> FilePlan:
    paths = [root / r for r in rels]
    missing = [r for r, p in zip(rels, paths) if not p.is_file()]
    if missing:
        raise DataError(f"{source}: {len(missing)} of {len(rels)} image files not found under {root}, e.g. "
                        f"'{missing[0]}'")
    return FilePlan(name=name, format="csv", source=str(source), root=root, classes=list(classes),
                    multilabel=multilabel, paths=paths, ids=list(rels), labels=labels,
                    patients=np.array(patients, dtype=object),
                    given_splits=None if splits is None else np.array(splits, dtype=object),
                    notes=notes, groups=groups)


def _groups(cfg, csv_path: Path, columns: list[str], rows: list[dict], pcol: str | None):
    from .groups import read_groups
    return read_groups(csv_path, getattr(cfg, "group_columns", None), columns, rows, pcol)


def _observations(rows: list[dict], classes: list[str], cfg, csv_path: Path, first_line: int = 2) -> np.ndarray:
    """CheXpert-style label columns (1, 0, -1 uncertain, blank) as float32 0/1 per ``data.uncertain``."""
    y = np.zeros((len(rows), len(classes)), np.float32)
    for i, row in enumerate(rows):
        for j, c in enumerate(classes):
            y[i, j] = _binary(row.get(c), cfg.uncertain, csv_path, first_line + i, c)
    return y


def _uncertain_note(cfg) -> str:
    return (f"uncertain (-1) labels mapped to {1 if cfg.uncertain == 'ones' else 0} "
            f"(data.uncertain: {cfg.uncertain}); blank = 0")


def _findings(values: list[list[str]], cfg, where: Path, known: Iterable[str] | None = None) -> tuple[list[str], np.ndarray]:
    """Multi-label 0/1 columns from per-image finding lists (no finding = an empty list)."""
    found = sorted({t for ts in values for t in ts})
    if known is not None:
        unknown = [t for t in found if t not in known]
        if unknown:
            raise DataError(f"{where}: unknown finding(s) {', '.join(repr(u) for u in unknown[:5])}")
        found = list(known)
    classes = _select(found, cfg, where)
    if not classes:
        raise DataError(f"{where}: no positive findings")
    idx = {c: k for k, c in enumerate(classes)}
    y = np.zeros((len(values), len(classes)), np.float32)
    for i, ts in enumerate(values):
        for t in ts:
            if t in idx:
                y[i, idx[t]] = 1.0
    return classes, y


def _split_list(path: Path) -> set[str]:
    try:
        return {ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()}
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read split list ({type(exc).__name__})") from None


# ------------------------------------------------------------------ the readers

NIH_CSV = "Data_Entry_2017_v2020.csv|Data_Entry_2017.csv"


def read_nih(root: Path, cfg) -> FilePlan:
    """NIH ChestX-ray14: Data_Entry_2017(_v2020).csv, images/ (or images_NNN/images/), official split lists."""
    csv_path = _need(root, NIH_CSV)
    columns, rows = read_csv(csv_path)
    _require(csv_path, columns, ("Image Index", "Finding Labels", "Patient ID"))
    test = _split_list(_need(root, "test_list.txt"))
    trainval = _split_list(_need(root, "train_val_list.txt"))
    dirs = [d for d in [root / "images", *sorted(root.glob("images_*/images")), root] if d.is_dir()]
    rels, splits, pats, finds = [], [], [], []
    outside = 0
    for row in rows:
        name = row["Image Index"].strip()
        split = "test" if name in test else "train" if name in trainval else None
        if split is None:
            outside += 1
            continue
        d = next((d for d in dirs if (d / name).is_file()), dirs[0] if dirs else root)
        rels.append((d / name).relative_to(root).as_posix())
        splits.append(split)
        pats.append(row["Patient ID"].strip())
        finds.append([t.strip() for t in row["Finding Labels"].split("|")
                      if t.strip() and t.strip().lower() != "no finding"])
    if outside:
        raise DataError(f"{csv_path}: {outside} images are in neither train_val_list.txt nor test_list.txt")
    classes, y = _findings(finds, cfg, csv_path, NIH_LABELS)
    notes = ["NIH ChestX-ray14: official split (test_list.txt = test; train_val_list.txt = train, val made "
             "patient-level by medtl); labels text-mined from reports; 'No Finding' = no positive label"]
    return _plan("nih-chestxray14", root, csv_path, classes, y, rels, pats, splits, notes,
                 groups=_groups(cfg, csv_path, columns, rows, "Patient ID"))


_CHEXPERT_PATIENT = re.compile(r"(patient\d+)")


def read_chexpert(root: Path, cfg) -> FilePlan:
    """CheXpert v1.0(-small): train.csv / valid.csv, Path relative to the folder above the root."""
    notes = ["CheXpert: train.csv = train; valid.csv (radiologist-labelled, the official validation set; the "
             "official test set is not in this release) = test; val made patient-level from train by medtl; "
             "frontal and lateral views both included", _uncertain_note(cfg)]
    rels, pats, splits, ys, all_rows, columns = [], [], [], [], [], []
    for fname, split in (("train.csv", "train"), ("valid.csv", "test")):
        csv_path = _need(root, fname)
        columns, rows = read_csv(csv_path)
        _require(csv_path, columns, ("Path", *CHEXPERT_LABELS))
        classes = _select(list(CHEXPERT_LABELS), cfg, csv_path)
        ys.append(_observations(rows, classes, cfg, csv_path))
        for i, row in enumerate(rows):
            parts = Path(row["Path"].strip()).parts
            if not parts:
                raise DataError(f"{csv_path}: line {i + 2}: empty Path")
            rel = Path(*parts[1:]) if parts[0].startswith("CheXpert-v1.0") and len(parts) > 1 else Path(*parts)
            m = _CHEXPERT_PATIENT.search(rel.as_posix())
            if m is None:
                raise DataError(f"{csv_path}: line {i + 2}: no patientNNNNN in Path")
            rels.append(rel.as_posix())
            pats.append(m.group(1))
            splits.append(split)
        all_rows += rows
    where = root / "train.csv"
    groups = _groups(cfg, where, columns, all_rows, None)
    return _plan("chexpert", root, where, classes, np.concatenate(ys), rels, pats, splits, notes, groups=groups)


MIMIC_CHEXPERT = "mimic-cxr-2.0.0-chexpert.csv.gz|mimic-cxr-2.0.0-chexpert.csv"
MIMIC_SPLIT = "mimic-cxr-2.0.0-split.csv.gz|mimic-cxr-2.0.0-split.csv"
MIMIC_METADATA = "mimic-cxr-2.0.0-metadata.csv.gz|mimic-cxr-2.0.0-metadata.csv"


def read_mimic_cxr_jpg(root: Path, cfg) -> FilePlan:
    """MIMIC-CXR-JPG 2.x: labels per study (chexpert.csv), the official split per image (split.csv),
    images at files/pXX/pSUBJECT/sSTUDY/DICOM_ID.jpg."""
    _no_groups(cfg, root)
    lab_path, split_path = _need(root, MIMIC_CHEXPERT), _need(root, MIMIC_SPLIT)
    _need(root, MIMIC_METADATA)  # part of the published layout (views: data check / future filters)
    lcols, lrows = read_csv(lab_path)
    _require(lab_path, lcols, ("subject_id", "study_id", *CHEXPERT_LABELS))
    scols, srows = read_csv(split_path)
    _require(split_path, scols, ("dicom_id", "study_id", "subject_id", "split"))
    classes = _select(list(CHEXPERT_LABELS), cfg, lab_path)
    y_study = _observations(lrows, classes, cfg, lab_path)
    by_study = {(r["subject_id"].strip(), r["study_id"].strip()): k for k, r in enumerate(lrows)}
    rels, pats, splits, idx = [], [], [], []
    unlabelled = 0
    for i, r in enumerate(srows):
        subj, study, dicom = r["subject_id"].strip(), r["study_id"].strip(), r["dicom_id"].strip()
        k = by_study.get((subj, study))
        if k is None:
            unlabelled += 1
            continue
        s = _SPLITS.get(r["split"].strip().lower())
        if s is None:
            raise DataError(f"{split_path}: line {i + 2}: split {r['split']!r} is not train, validate or test")
        rels.append(f"files/p{subj[:2]}/p{subj}/s{study}/{dicom}.jpg")
        pats.append(subj)
        splits.append(s)
        idx.append(k)
    notes = ["MIMIC-CXR-JPG: official split (split.csv: train, validate = val, test); labels per study from the "
             "CheXpert labeler (chexpert.csv), all views included", _uncertain_note(cfg)]
    if unlabelled:
        notes.append(f"{unlabelled} images whose study has no row in {lab_path.name} left out")
    return _plan("mimic-cxr-jpg", root, split_path, classes, y_study[np.array(idx, dtype=np.int64)], rels,
                 pats, splits, notes)


PADCHEST_CSV = ("PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv|"
                "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv.gz")


def _label_list(value: str) -> list[str] | None:
    """PadChest's Labels cell ("['pleural effusion', 'cardiomegaly']") as a list; None when unreadable."""
    v = (value or "").strip()
    if not v:
        return None
    try:
        got = ast.literal_eval(v)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return None
    if not isinstance(got, (list, tuple)) or not all(isinstance(t, str) for t in got):
        return None
    return [t.strip() for t in got if t.strip()]


def read_padchest(root: Path, cfg) -> FilePlan:
    """PadChest: one CSV (ImageID, ImageDir, PatientID, Labels list); images in ImageDir/ImageID or flat."""
    csv_path = _need(root, PADCHEST_CSV)
    columns, rows = read_csv(csv_path)
    _require(csv_path, columns, ("ImageID", "PatientID", "Labels"))
    rels, pats, finds, kept = [], [], [], []
    unread = 0
    for row in rows:
        labels = _label_list(row["Labels"])
        if labels is None:
            unread += 1
            continue
        img = row["ImageID"].strip()
        sub = (row.get("ImageDir") or "").strip()
        rel = f"{sub}/{img}" if sub and (root / sub / img).is_file() else img
        rels.append(rel)
        pats.append(row["PatientID"].strip())
        finds.append([t for t in labels if t.lower() != "normal"])
        kept.append(row)
    classes, y = _findings(finds, cfg, csv_path)
    notes = ["PadChest: no official split (medtl splits patient-level); labels from the Labels list, 'normal' = "
             "no positive label; without data.label_columns every label found is a class"]
    if unread:
        notes.append(f"{unread} rows with an empty or unreadable Labels list left out")
    return _plan("padchest", root, csv_path, classes, y, rels, pats, None, notes,
                 groups=_groups(cfg, csv_path, columns, kept, "PatientID"))


def read_rsna_pneumonia(root: Path, cfg) -> FilePlan:
    """RSNA Pneumonia Detection Challenge: stage_2_train_labels.csv (one row per box), DICOMs in
    stage_2_train_images/; binary Target (lung opacity) per image."""
    _no_groups(cfg, root)
    csv_path = _need(root, "stage_2_train_labels.csv")
    columns, rows = read_csv(csv_path)
    _require(csv_path, columns, ("patientId", "Target"))
    target: dict[str, int] = {}
    for i, row in enumerate(rows):
        pid, t = row["patientId"].strip(), row["Target"].strip()
        if t not in ("0", "1"):
            raise DataError(f"{csv_path}: line {i + 2}: Target {t!r} is not 0 or 1")
        target[pid] = max(target.get(pid, 0), int(t))
    ids = sorted(target)
    rels = [f"stage_2_train_images/{pid}.dcm" for pid in ids]
    y = np.array([target[p] for p in ids], dtype=np.int64)
    notes = ["RSNA Pneumonia: stage 2 train labels only (the test labels are not published), medtl splits "
             "patient-level; one image per patientId; Target 1 = lung opacity (boxes merged per image); the "
             "images are a subset of NIH ChestX-ray14"]
    return _plan("rsna-pneumonia", root, csv_path, ["no_lung_opacity", "lung_opacity"], y, rels, ids, None, notes,
                 multilabel=False)


VINDR_TRAIN = "annotations/image_labels_train.csv|image_labels_train.csv"
VINDR_TEST = "annotations/image_labels_test.csv|image_labels_test.csv"


def read_vindr_cxr(root: Path, cfg) -> FilePlan:
    """VinDr-CXR: image_labels_train.csv (3 radiologists per image: majority vote) and
    image_labels_test.csv (consensus), images at train/ID.dicom and test/ID.dicom."""
    _no_groups(cfg, root)
    rels, splits, ys = [], [], []
    classes: list[str] | None = None
    for spec, split in ((VINDR_TRAIN, "train"), (VINDR_TEST, "test")):
        csv_path = _need(root, spec)
        columns, rows = read_csv(csv_path)
        _require(csv_path, columns, ("image_id",))
        labels = [c for c in columns if c not in ("image_id", "rad_id")]
        if classes is None:
            classes = _select(labels, cfg, csv_path)
        _require(csv_path, columns, classes)
        votes: dict[str, list[np.ndarray]] = {}
        for i, row in enumerate(rows):
            v = np.array([_binary(row.get(c), "zeros", csv_path, i + 2, c) for c in classes], np.float32)
            votes.setdefault(row["image_id"].strip(), []).append(v)
        for img in sorted(votes):
            rels.append(f"{split}/{img}.dicom")
            splits.append(split)
            ys.append((np.mean(votes[img], axis=0) > 0.5).astype(np.float32))
    assert classes is not None
    notes = ["VinDr-CXR: official split (train / test); train labels by majority of the 3 radiologists per "
             "image, test labels the published consensus; no patient ids are published (each image counts as "
             "its own patient)"]
    return _plan("vindr-cxr", root, _need(root, VINDR_TRAIN), classes, np.stack(ys), rels,
                 [f"img:{r}" for r in rels], splits, notes)


def read_covid_chestxray(root: Path, cfg) -> FilePlan:
    """ieee8023/covid-chestxray-dataset: metadata.csv (patientid, finding, view, modality, folder,
    filename); X-ray rows only; 'finding' split on '/' into labels (Pneumonia/Viral/COVID-19)."""
    csv_path = _need(root, "metadata.csv")
    columns, rows = read_csv(csv_path)
    _require(csv_path, columns, ("patientid", "finding", "view", "filename"))
    rels, pats, finds, kept = [], [], [], []
    other = 0
    for row in rows:
        if (row.get("modality") or "X-ray").strip().lower() != "x-ray":
            other += 1
            continue
        folder = (row.get("folder") or "images").strip() or "images"
        rels.append(f"{folder}/{row['filename'].strip()}")
        pats.append(row["patientid"].strip())
        finds.append([t.strip() for t in row["finding"].split("/")
                      if t.strip() and t.strip().lower() not in ("no finding", "todo", "unknown")])
        kept.append(row)
    classes, y = _findings(finds, cfg, csv_path)
    notes = ["COVID-19 image data collection: no official split (medtl splits patient-level); X-ray rows only"
             + (f" ({other} CT or other rows left out)" if other else "")
             + "; labels are the '/'-separated parts of 'finding'; licences vary per image (column 'license')"]
    return _plan("covid-chestxray", root, csv_path, classes, y, rels, pats, None, notes,
                 groups=_groups(cfg, csv_path, columns, kept, "patientid"))

