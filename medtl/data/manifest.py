"""CSV manifests: one row per image, a path column, labels, optional patient and split columns.

Supported label layouts:
* one label column with string or integer classes (``label``, ``y``, ...);
* one column of '|'-joined findings (NIH ChestX-ray14 "Finding Labels"): multi-label,
  "No Finding" meaning no positive class;
* several binary columns (``data.label_columns``, CheXpert style): 1 positive, 0 or blank
  negative, -1 uncertain mapped per ``data.uncertain``.
"""
from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np

from ..errors import DataError
from .plan import FilePlan, compile_patient_regex, patient_from_name
from .types import SPLIT_ALIASES

PATH_COLUMNS = ["path", "Path", "Image Index", "image", "filename", "file"]
LABEL_COLUMNS = ["label", "labels", "Finding Labels", "class", "target", "diagnosis", "finding", "y"]
PATIENT_COLUMNS = ["patient", "patient_id", "Patient ID", "PatientID"]
SPLIT_COLUMNS = ["split", "fold", "subset", "partition"]
NO_FINDING = "no finding"
_CHEXPERT_PATIENT = re.compile(r"(patient\d+)")
_GENERIC_STEMS = {"manifest", "labels", "metadata", "data", "index", "dataset", "images", "all"}


def _find(columns: list[str], candidates: list[str]) -> str | None:
    for c in candidates:  # exact first, then case-insensitive, in preference order
        if c in columns:
            return c
    lower = {col.lower().strip(): col for col in columns}
    for c in candidates:
        if c.lower() in lower:
            return lower[c.lower()]
    return None


def _read_rows(csv_path: Path) -> tuple[list[str], list[dict]]:
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            columns = [c for c in (reader.fieldnames or [])]
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{csv_path}: cannot read CSV ({type(exc).__name__}: {' '.join(str(exc).split())[:150]})") from None
    if not columns:
        raise DataError(f"{csv_path}: empty CSV (no header row)")
    if not rows:
        raise DataError(f"{csv_path}: CSV has a header but no rows")
    return columns, rows


def _binary(value: str, uncertain: str, csv_path: Path, line: int, col: str) -> float:
    v = (value or "").strip()
    if v == "":
        return 0.0
    try:
        x = float(v)
    except ValueError:
        x = float("nan")
    if x == 1:
        return 1.0
    if x == 0:
        return 0.0
    if x == -1:
        return 1.0 if uncertain == "ones" else 0.0
    raise DataError(f"{csv_path}: line {line}: value {v!r} in label column '{col}' is not 1, 0, -1 or blank")


def _as_int(v: str) -> int | None:
    try:
        x = float(v)
    except ValueError:
        return None
    return int(x) if x.is_integer() else None


def _label_columns(csv_path: Path, cfg, columns: list[str], path_col: str, present: str) -> list[str]:
    if cfg.label_columns:
        missing = [c for c in cfg.label_columns if c not in columns]
        if missing:
            raise DataError(f"{csv_path}: missing label column(s) {', '.join(repr(m) for m in missing)}; "
                            f"columns present: {present}")
        return list(cfg.label_columns)
    lc = _find([c for c in columns if c != path_col], LABEL_COLUMNS)
    if lc is None:
        raise DataError(f"{csv_path}: missing label column 'label' (looked for {', '.join(LABEL_COLUMNS)}); "
                        f"columns present: {present} (set data.label_columns)")
    return [lc]


def _labels(csv_path: Path, cfg, rows: list[dict], label_cols: list[str]) -> tuple[list[str], np.ndarray, bool]:
    """(classes, labels, multilabel): several binary columns (CheXpert), one ``A|B`` findings
    column (NIH), or one single-label column (integers or names)."""
    n = len(rows)
    if len(label_cols) > 1:
        classes = list(label_cols)
        labels = np.zeros((n, len(classes)), np.float32)
        for i, row in enumerate(rows):
            for j, c in enumerate(classes):
                labels[i, j] = _binary(row.get(c), cfg.uncertain, csv_path, i + 2, c)
        return classes, labels, True
    col = label_cols[0]
    values = [(row.get(col) or "").strip() for row in rows]
    if col.lower() == "finding labels" or any("|" in v for v in values):
        per_row = [[t.strip() for t in v.split("|") if t.strip() and t.strip().lower() != NO_FINDING]
                   for v in values]
        classes = sorted({t for ts in per_row for t in ts})
        if not classes:
            raise DataError(f"{csv_path}: label column '{col}' has no positive findings")
        cidx = {c: k for k, c in enumerate(classes)}
        labels = np.zeros((n, len(classes)), np.float32)
        for i, ts in enumerate(per_row):
            for t in ts:
                labels[i, cidx[t]] = 1.0
        return classes, labels, True
    for i, v in enumerate(values):
        if v == "":
            raise DataError(f"{csv_path}: line {i + 2}: empty label in column '{col}'")
    ints = [_as_int(v) for v in values]
    if all(x is not None for x in ints):
        classes = [str(u) for u in sorted(set(ints))]
        keyed = [str(x) for x in ints]
    else:
        classes = sorted(set(values))
        keyed = values
    if len(classes) < 2:
        raise DataError(f"{csv_path}: label column '{col}' has a single value ({classes[0]!r}); need two classes")
    cidx = {c: k for k, c in enumerate(classes)}
    return classes, np.array([cidx[k] for k in keyed], dtype=np.int64), False


def _image_paths(csv_path: Path, rows: list[dict], path_col: str) -> tuple[list[Path], list[str]]:
    """Image paths, relative to the CSV folder (NIH: also images/, CheXpert: the parent)."""
    base = csv_path.parent
    bases = [base, base / "images", base.parent]
    paths: list[Path] = []
    ids: list[str] = []
    missing_files: list[str] = []
    last = 0
    for i, row in enumerate(rows):
        rel = (row.get(path_col) or "").strip()
        if not rel:
            raise DataError(f"{csv_path}: line {i + 2}: empty image path in column '{path_col}'")
        p = Path(rel)
        found = None
        if p.is_absolute():
            found = p if p.is_file() else None
        else:
            order = [bases[last]] + [b for k, b in enumerate(bases) if k != last]
            for b in order:
                if (b / p).is_file():
                    found = b / p
                    last = bases.index(b)
                    break
        if found is None:
            missing_files.append(rel)
            continue
        paths.append(found)
        ids.append(rel)
    if missing_files:
        raise DataError(f"{csv_path}: {len(missing_files)} of {len(rows)} image files not found, e.g. "
                        f"'{missing_files[0]}' (paths are read relative to {base}, {base / 'images'} or {base.parent})")
    return paths, ids


def _patients(csv_path: Path, cfg, columns: list[str], rows: list[dict], ids: list[str], present: str) -> list[str]:
    pcol = cfg.patient_column
    if pcol is not None and pcol not in columns:
        raise DataError(f"{csv_path}: missing patient column '{pcol}'; columns present: {present}")
    pcol = pcol or _find(columns, PATIENT_COLUMNS)
    regex = compile_patient_regex(cfg.patient_regex)
    patients = []
    for row, rid in zip(rows, ids):
        pid = (row.get(pcol) or "").strip() if pcol else ""
        if not pid:
            m = _CHEXPERT_PATIENT.search(rid)
            pid = m.group(1) if m else patient_from_name(Path(rid).name, rid, regex)
        patients.append(pid)
    return patients


def _given_splits(csv_path: Path, cfg, columns: list[str], rows: list[dict], present: str) -> np.ndarray | None:
    scol = cfg.split_column
    if scol is not None and scol not in columns:
        raise DataError(f"{csv_path}: missing split column '{scol}'; columns present: {present}")
    scol = scol or _find(columns, SPLIT_COLUMNS)
    if not scol:
        return None
    raw = [(row.get(scol) or "").strip() for row in rows]
    if not any(raw):
        return None
    given = []
    for i, v in enumerate(raw):
        s = SPLIT_ALIASES.get(v.lower())
        if s is None:
            raise DataError(f"{csv_path}: line {i + 2}: split value {v!r} in column '{scol}' is not "
                            f"one of train, val, valid, validation, test")
        given.append(s)
    return np.array(given, dtype=object)


def read_manifest(csv_path: Path, cfg) -> FilePlan:
    """The file plan of a CSV manifest: path, label(s), optional patient and split columns."""
    csv_path = Path(csv_path)
    columns, rows = _read_rows(csv_path)
    present = ", ".join(columns)
    path_col = cfg.path_column or _find(columns, PATH_COLUMNS)
    if path_col is None or path_col not in columns:
        want = cfg.path_column or " / ".join(PATH_COLUMNS)
        raise DataError(f"{csv_path}: missing image path column '{want}'; columns present: {present} "
                        f"(set data.path_column)")
    label_cols = _label_columns(csv_path, cfg, columns, path_col, present)
    classes, labels, multilabel = _labels(csv_path, cfg, rows, label_cols)
    paths, ids = _image_paths(csv_path, rows, path_col)
    patients = _patients(csv_path, cfg, columns, rows, ids, present)
    given = _given_splits(csv_path, cfg, columns, rows, present)
    from .groups import read_groups  # data.group_columns (subgroup metrics)
    groups = read_groups(csv_path, getattr(cfg, "group_columns", None), columns, rows,
                         cfg.patient_column or _find(columns, PATIENT_COLUMNS))
    notes = [f"labels from column(s) {', '.join(label_cols)}"
             + (f"; uncertain (-1) mapped to {1 if cfg.uncertain == 'ones' else 0}" if len(label_cols) > 1 else "")]
    base = csv_path.parent
    name = base.name if csv_path.stem.lower() in _GENERIC_STEMS else csv_path.stem
    return FilePlan(
        name=name or csv_path.stem, format="csv", source=str(csv_path), root=base, classes=classes,
        multilabel=multilabel, paths=paths, ids=ids, labels=labels,
        patients=np.array(patients, dtype=object), given_splits=given, notes=notes, groups=groups,
    )
