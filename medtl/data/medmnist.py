"""MedMNIST-style .npz files: train_images/train_labels/val_images/... arrays."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DataError
from .types import SPLITS

KNOWN_CLASSES = {
    "pneumoniamnist": ["normal", "pneumonia"],
    # MedMNIST's INFO['chestmnist']['label'] (multi-label: one column each)
    "chestmnist": ["atelectasis", "cardiomegaly", "effusion", "infiltration", "mass", "nodule", "pneumonia",
                   "pneumothorax", "consolidation", "edema", "emphysema", "fibrosis", "pleural", "hernia"],
}
_MEDMNIST_NAMES = ("pneumoniamnist", "chestmnist", "breastmnist", "organamnist", "organcmnist",
                   "organsmnist", "pathmnist", "dermamnist", "octmnist", "retinamnist", "bloodmnist",
                   "tissuemnist")


def dataset_name(path: Path) -> str:
    stem = path.stem.lower()
    for known in _MEDMNIST_NAMES:
        if stem.startswith(known):
            return known
    return path.stem


def _gray(images: np.ndarray, path: Path, key: str) -> np.ndarray:
    a = np.asarray(images)
    if a.ndim == 4 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim == 4 and a.shape[-1] in (3, 4):
        a = a[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
        a = np.clip(np.rint(a), 0, 255).astype(np.uint8) if images.dtype == np.uint8 else a
    if a.ndim != 3 or (a.shape[0] and 0 in a.shape[1:]):
        raise DataError(f"{path}: '{key}' has shape {images.shape}; expected (N, H, W) or (N, H, W, 3)")
    if a.dtype.kind not in "biuf":
        raise DataError(f"{path}: '{key}' holds {a.dtype} values, not pixel numbers")
    if a.dtype.kind == "f":
        bad = int((~np.isfinite(a)).sum())
        if bad:
            raise DataError(f"{path}: '{key}' holds NaN or infinite pixel values ({bad} of {a.size}); "
                            f"fix those images or leave them out")
    if a.dtype != np.uint8:
        af = a.astype(np.float32)
        af = af if af.max() <= 1.0 + 1e-6 else af / 255.0
        a = np.clip(np.rint(af * 255), 0, 255).astype(np.uint8)
    return a


def _labels(lab: np.ndarray, path: Path, key: str) -> np.ndarray:
    """Numeric, finite, whole-number labels (multi-label: 0/1 columns); DataError otherwise."""
    if lab.dtype.kind not in "biuf":
        raise DataError(f"{path}: '{key}' holds {lab.dtype} values; labels must be integer class indices "
                        f"(0..K-1), or 0/1 columns for multi-label")
    if lab.ndim not in (1, 2):
        raise DataError(f"{path}: '{key}' has shape {lab.shape}; expected (N,) or (N, K)")
    if lab.dtype.kind == "f" and lab.size:
        if not np.isfinite(lab).all():
            raise DataError(f"{path}: '{key}' holds NaN or infinite labels; labels must be integer class indices")
        if (lab != np.round(lab)).any():
            raise DataError(f"{path}: '{key}' holds fractional labels (e.g. {lab[lab != np.round(lab)].flat[0]:g}); "
                            f"labels must be integer class indices")
    return lab


def _read_arrays(path: Path) -> dict:
    try:
        with open(path, "rb") as fh:  # ours to close, whatever np.load raises
            z = np.load(fh, allow_pickle=False)
            if not isinstance(z, np.lib.npyio.NpzFile):
                raise DataError(f"{path}: a single .npy array, not an .npz archive of train_images/train_labels/...")
            with z:
                return {k: z[k] for k in z.files}
    except DataError:
        raise
    except ValueError as exc:
        if "pickle" in str(exc):
            raise DataError(f"{path}: refused: holds pickled Python objects, which medtl does not load; "
                            f"store plain numeric arrays") from None
        raise DataError(f"{path}: cannot read .npz (ValueError: {' '.join(str(exc).split())[:150]})") from None
    except Exception as exc:  # noqa: BLE001 - zip, zlib, header and format errors: one line
        raise DataError(f"{path}: cannot read .npz (file truncated or corrupt? {type(exc).__name__}: "
                        f"{' '.join(str(exc).split())[:150]})") from None


def read_npz(path: Path) -> dict:
    """Return {split: (images uint8 (N,H,W) at source size, labels)}, classes, multilabel."""
    path = Path(path)
    arrays = _read_arrays(path)
    if "train_images" not in arrays or "train_labels" not in arrays:
        raise DataError(f"{path}: missing 'train_images'/'train_labels' (MedMNIST layout); keys present: "
                        f"{', '.join(sorted(arrays)) or 'none'}")
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    multilabel = False
    n_classes = 0
    for s in SPLITS:
        ik, lk = f"{s}_images", f"{s}_labels"
        if ik not in arrays:
            continue
        if lk not in arrays:
            raise DataError(f"{path}: has '{ik}' but no '{lk}'")
        imgs = _gray(arrays[ik], path, ik)
        lab = _labels(np.asarray(arrays[lk]), path, lk)
        if lab.ndim == 2 and lab.shape[1] == 1:
            lab = lab[:, 0]
        if out and (lab.ndim == 2) != multilabel:
            raise DataError(f"{path}: '{lk}' has shape {lab.shape} but the other splits' labels are "
                            f"{'(N, K)' if multilabel else '(N,)'}: one label layout for every split")
        if len(lab) != len(imgs):
            raise DataError(f"{path}: '{ik}' has {len(imgs)} images but '{lk}' has {len(lab)} labels")
        if lab.ndim == 2:
            multilabel = True
            lab = (lab > 0).astype(np.float32)
            n_classes = max(n_classes, lab.shape[1])
        else:
            lab = lab.astype(np.int64)
            if lab.size and lab.min() < 0:
                raise DataError(f"{path}: '{lk}' has negative labels")
            n_classes = max(n_classes, int(lab.max()) + 1 if lab.size else 0)
        out[s] = (imgs, lab)
    n_images = sum(len(lab) for _, lab in out.values())
    if not multilabel and n_classes > max(2, n_images):
        raise DataError(f"{path}: labels run up to {n_classes - 1} but there are only {n_images} images: "
                        f"labels must be class indices 0..K-1; fix the stray labels")
    name = dataset_name(path)
    known = KNOWN_CLASSES.get(name)
    if known and not multilabel and n_classes > len(known):
        stray = {s: int(lab.max()) for s, (_, lab) in out.items() if lab.size and lab.max() >= len(known)}
        raise DataError(f"{path}: labels outside the {len(known)} classes of {name} (0..{len(known) - 1}): "
                        + ", ".join(f"'{s}_labels' has {v}" for s, v in stray.items()) + "; fix the labels")
    if multilabel and len({lab.shape[1] for _, lab in out.values()}) > 1:
        raise DataError(f"{path}: the splits' label arrays have different numbers of columns: "
                        + ", ".join(f"{s}: {lab.shape[1]}" for s, (_, lab) in out.items()))
    classes = KNOWN_CLASSES.get(name)
    if classes is None or len(classes) < n_classes or (multilabel and len(classes) != n_classes):
        classes = [str(i) for i in range(n_classes)]
    return {"name": name, "splits": out, "classes": classes, "multilabel": multilabel}
