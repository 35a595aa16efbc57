"""Datasets for medtl: readers (folders, CSV manifests, DICOM, MedMNIST .npz, an embedded
synthetic set), patient-level splits, a decoded-array cache, checks, previews and
batch-wise augmentation; public datasets by name (``medmnist:pneumoniamnist``,
``kermany:chest_xray``: :mod:`medtl.data.registry`).

Every loader returns a :class:`DatasetBundle` of uint8 arrays already at
``cfg.image_size``; :func:`to_tensor` and :func:`augment_batch` turn batches into model input.
"""
from .check import check_dataset
from .images import load_image_resized, read_image
from .load import detect_format, load_dataset
from .preview import render_preview
from .registry import DatasetSource, fetch_dataset, get_dataset, list_datasets, register_dataset, resolve_data_path
from .transforms import augment_batch, to_tensor
from .types import DatasetBundle, Split

__all__ = [
    "DatasetBundle", "DatasetSource", "Split", "augment_batch", "check_dataset", "detect_format",
    "fetch_dataset", "get_dataset", "list_datasets", "load_dataset", "load_image_resized", "read_image",
    "register_dataset", "render_preview", "resolve_data_path", "to_tensor",
]
