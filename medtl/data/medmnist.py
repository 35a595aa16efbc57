"""MedMNIST-style .npz files: train_images/train_labels/val_images/... arrays."""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from ..errors import DataError
from .types import SPLITS

KNOWN_CLASSES = {
    "pneumoniamnist": ["normal", "pneumonia"],
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
    if a.ndim != 3:
        raise DataError(f"{path}: '{key}' has shape {images.shape}; expected (N, H, W) or (N, H, W, 3)")
    if a.dtype != np.uint8:
        af = a.astype(np.float32)
        af = af if af.max() <= 1.0 + 1e-6 else af / 255.0
        a = np.clip(np.rint(af * 255), 0, 255).astype(np.uint8)
    return a


def read_npz(path: Path) -> dict:
    """Return {split: (images uint8 (N,H,W) at source size, labels)}, classes, multilabel."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"{path}: cannot read .npz ({type(exc).__name__}: {' '.join(str(exc).split())[:150]})") from None
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
        lab = np.asarray(arrays[lk])
        if lab.ndim == 2 and lab.shape[1] == 1:
            lab = lab[:, 0]
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
    name = dataset_name(path)
    classes = KNOWN_CLASSES.get(name) if not multilabel else None
    if classes is None or len(classes) < n_classes:
        classes = [str(i) for i in range(n_classes)]
    return {"name": name, "splits": out, "classes": classes, "multilabel": multilabel}
