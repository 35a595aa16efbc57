"""The data containers every loader returns."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

SPLITS = ("train", "val", "test")
# bump when decoding/resizing changes so that cached arrays are rebuilt
READER_VERSION = 1
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
DICOM_EXTS = (".dcm", ".dicom")

SPLIT_ALIASES = {
    "train": "train", "training": "train",
    "val": "val", "valid": "val", "validation": "val", "dev": "val",
    "test": "test", "testing": "test",
}


@dataclass
class Split:
    images: np.ndarray   # uint8 (N, H, W), already at image_size x image_size
    labels: np.ndarray   # int64 (N,) single-label; float32 (N, C) of 0/1 multi-label
    patients: np.ndarray  # str/object (N,); unique per image when unknown
    ids: list[str]       # non-identifying id per image (relative path, "npz:train:17")
    hashes: np.ndarray | None = None  # sha256 of each image's bytes (leak checks); None when not computed
    groups: dict[str, np.ndarray] | None = None  # data.group_columns: column -> one value per image

    def __len__(self) -> int:
        return int(len(self.ids))


@dataclass
class DatasetBundle:
    name: str
    format: str          # folder|csv|dicom|npz|synthetic
    source: str
    classes: list[str]
    multilabel: bool
    synthetic: bool
    splits: dict[str, Split]
    notes: list[str] = field(default_factory=list)
    # leak counts and what the data.on_leak policy did (medtl.data.leaks.apply_leak_policy)
    leaks: dict = field(default_factory=dict)
    # data.train_fraction: what the train subsample kept (medtl.data.fraction.subsample_train)
    train_fraction: dict | None = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)
