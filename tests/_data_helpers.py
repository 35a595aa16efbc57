"""Small helpers shared by the data tests (not fixtures, so plain imports work)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def write_png(path: Path, value: int, size=(20, 16), seed: int = 0) -> Path:
    """A small gray PNG whose mean is about ``value`` (distinct bytes per seed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arr = np.clip(value + rng.integers(-3, 4, size=(size[1], size[0])), 0, 255).astype(np.uint8)
    Image.fromarray(arr, "L").save(path)
    return path


def make_class_folder(root: Path, n_per_class: int = 12, split_layout: bool = False, patients: bool = True) -> Path:
    """ROOT/CLASS/* or ROOT/{train,test}/CLASS/*; class a is dark, class b bright."""
    k = 0
    for split in (["train", "test"] if split_layout else [None]):
        for cls, val in (("a", 40), ("b", 200)):
            for i in range(n_per_class):
                name = f"person{k // 2}_{cls}_{i}.png" if patients else f"img_{k}.png"
                base = root / split if split else root
                write_png(base / cls / name, val, seed=k)
                k += 1
    return root


SECRET_NAME, SECRET_ID, SECRET_INST = "Doe^Jane", "SECRET-ID-4711", "Secret General Hospital"


def make_dicom(path, arr, photometric="MONOCHROME1", slope=None, intercept=None, wc=None, ww=None, bits=12):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.PatientName, ds.PatientID, ds.InstitutionName, ds.StudyDate = SECRET_NAME, SECRET_ID, SECRET_INST, "19700101"
    ds.Modality = "DX"
    ds.Rows, ds.Columns = arr.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, bits, bits - 1, 0
    if slope is not None:
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    if wc is not None:
        ds.WindowCenter, ds.WindowWidth = wc, ww
    ds.PixelData = arr.astype(np.uint16).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def gradient(h=16, w=24, lo=100, hi=4000):
    return np.tile(np.linspace(lo, hi, w), (h, 1)).astype(np.uint16)
