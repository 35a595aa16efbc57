"""Datasets for medtl: readers (folders, CSV manifests, DICOM, MedMNIST .npz, an embedded
synthetic set), patient-level splits, a decoded-array cache, checks, previews and
batch-wise augmentation.

Every loader returns a :class:`DatasetBundle` of uint8 arrays already at
``cfg.image_size``; :func:`to_tensor` and :func:`augment_batch` turn batches into model input.
"""
from .check import check_dataset
from .images import load_image_resized, read_image
from .load import detect_format, load_dataset
from .preview import render_preview
from .transforms import augment_batch, to_tensor
from .types import DatasetBundle, Split

__all__ = [
    "DatasetBundle", "Split", "augment_batch", "check_dataset", "detect_format", "load_dataset",
    "load_image_resized", "read_image", "render_preview", "to_tensor",
]
