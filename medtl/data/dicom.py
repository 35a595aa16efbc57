"""DICOM reading with pydicom 3: modality LUT, VOI LUT/windowing, MONOCHROME1 inversion.

Privacy rule: nothing from the DICOM header that could identify a patient (names, ids,
dates, institution, accession, ...) ever leaves this module, in a return value or in an
error message.  Only the fields in :data:`SAFE_FIELDS` and the transfer syntax name are
reported.
"""
from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from ..errors import DataError

SAFE_FIELDS = ("Modality", "PhotometricInterpretation", "BitsStored", "Rows", "Columns")

# header fields whose values must never appear in a message (scrubbed from exception text)
_IDENTIFYING = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "PatientAge", "OtherPatientIDs",
    "StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate", "StudyTime", "SeriesTime",
    "InstitutionName", "InstitutionAddress", "ReferringPhysicianName", "AccessionNumber",
    "StudyID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "OperatorsName",
    "PerformingPhysicianName", "StationName", "DeviceSerialNumber",
)

_INSTALL_HINT = {
    "jpeg2000": "pip install pylibjpeg pylibjpeg-openjpeg (or Pillow built with OpenJPEG)",
    "jpeg": "pip install pylibjpeg pylibjpeg-libjpeg",
    "jpegls": "pip install pyjpegls (or pylibjpeg pylibjpeg-libjpeg)",
    "rle": "pip install pylibjpeg pylibjpeg-rle",
}


def _hint_for(ts) -> str:
    name = getattr(ts, "name", str(ts)).lower()
    if "2000" in name or "htj2k" in name or "high-throughput" in name:
        return _INSTALL_HINT["jpeg2000"]
    if "jpeg-ls" in name or "jpeg ls" in name:
        return _INSTALL_HINT["jpegls"]
    if "rle" in name:
        return _INSTALL_HINT["rle"]
    if "jpeg" in name:
        return _INSTALL_HINT["jpeg"]
    return "pip install pylibjpeg pylibjpeg-openjpeg pylibjpeg-libjpeg"


def _raw_text(ds, keyword: str) -> str:
    """An element's value as text, read raw (no pydicom validation, which could warn with it)."""
    try:
        elem = ds.get_item(keyword)
    except Exception:
        return ""
    if elem is None:
        return ""
    val = elem.value
    if isinstance(val, (bytes, bytearray)):
        return bytes(val).decode("latin-1", "replace").strip(" \x00")
    return str(val).strip() if val is not None else ""


def _scrub(msg: str, ds=None) -> str:
    """One line, bounded, with any identifying header value removed."""
    line = " ".join(str(msg).split())
    if ds is not None:
        for kw in _IDENTIFYING:
            text = _raw_text(ds, kw)
            if len(text) >= 2 and text in line:
                line = line.replace(text, "<redacted>")
            for part in text.replace("^", " ").split():  # name components too
                if len(part) >= 3 and part in line:
                    line = line.replace(part, "<redacted>")
    return line[:200]


def _ts_name(ds) -> str:
    ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if ts is None:
        return "unknown transfer syntax"
    return getattr(ts, "name", str(ts)) or str(ts)


def _decoder_available(ts) -> bool:
    """True when an installed plugin can decode pixel data in transfer syntax ``ts``."""
    try:
        from pydicom.pixels import get_decoder

        return bool(get_decoder(ts).is_available)
    except Exception:
        return False


def _open(path, data: bytes | None = None, header_only: bool = False):
    import pydicom
    from pydicom.errors import InvalidDicomError

    src = io.BytesIO(data) if data is not None else os.fspath(path)
    try:
        return pydicom.dcmread(src, stop_before_pixels=header_only)
    except InvalidDicomError:
        raise DataError(f"{path}: not a DICOM file (no 'DICM' marker)") from None
    except Exception as exc:
        raise DataError(f"{path}: cannot read DICOM, file truncated or corrupt "
                        f"({type(exc).__name__}: {_scrub(exc)})") from None


def is_dicom_file(path) -> bool:
    p = Path(path)
    if p.suffix.lower() in (".dcm", ".dicom"):
        return True
    try:
        with open(p, "rb") as f:
            head = f.read(132)
        return len(head) == 132 and head[128:132] == b"DICM"
    except OSError:
        return False


def dicom_info(path) -> dict:
    """Header facts that identify no one: modality, photometric, bits, size, transfer syntax."""
    ds = _open(path, header_only=True)
    info: dict = {}
    for kw in SAFE_FIELDS:
        val = ds.get(kw)
        if val is not None:
            info[kw] = int(val) if kw in ("BitsStored", "Rows", "Columns") else str(val)
    ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    info["TransferSyntax"] = _ts_name(ds)
    if ts is not None and getattr(ts, "is_compressed", False):
        info["decoder_available"] = _decoder_available(ts)
    return info


def _window_range(ds) -> tuple[float, float]:
    """The (y_min, y_max) output range that pydicom's apply_windowing maps onto."""
    if ds.get("ModalityLUTSequence"):
        bits = int(ds.ModalityLUTSequence[0].LUTDescriptor[2])
        y_min, y_max = 0.0, float(2 ** bits - 1)
    elif int(ds.get("PixelRepresentation", 0)) == 0:
        y_min, y_max = 0.0, float(2 ** int(ds.BitsStored) - 1)
    else:
        y_min, y_max = float(-(2 ** (int(ds.BitsStored) - 1))), float(2 ** (int(ds.BitsStored) - 1) - 1)
    slope, intercept = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
    if slope is not None and intercept is not None:
        y_min = y_min * float(slope) + float(intercept)
        y_max = y_max * float(slope) + float(intercept)
    return y_min, y_max


def _minmax(a: np.ndarray) -> np.ndarray:
    lo, hi = float(np.min(a)), float(np.max(a))
    if hi <= lo:
        return np.zeros(a.shape, np.float32)
    return ((a - lo) / (hi - lo)).astype(np.float32)


def read_dicom(path, data: bytes | None = None) -> np.ndarray:
    """Decode a DICOM file to float32 (H, W) in [0, 1], display-ready (bright = dense)."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    ds = _open(path, data)
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise DataError(f"{path}: DICOM file has no pixel data")
    ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if ts is not None and getattr(ts, "is_compressed", False) and not _decoder_available(ts):
        raise DataError(f"{path}: cannot decode DICOM pixel data in '{_ts_name(ds)}': no installed "
                        f"decoder supports it; install one: {_hint_for(ts)}")
    try:
        arr = ds.pixel_array
    except Exception as exc:
        raise DataError(f"{path}: cannot decode DICOM pixel data ('{_ts_name(ds)}'; file truncated or "
                        f"corrupt? {type(exc).__name__}: {_scrub(exc, ds)})") from None

    frames = int(ds.get("NumberOfFrames", 1) or 1)
    spp = int(ds.get("SamplesPerPixel", 1) or 1)
    if frames > 1:
        arr = arr[0]
    if spp > 1 or arr.ndim == 3:
        # colour (pydicom already converted YBR to RGB): luminance, then full range
        rgb = arr.astype(np.float64)
        gray = rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114
        bits = int(ds.get("BitsStored", 8) or 8)
        return np.clip(gray / float(2 ** bits - 1), 0, 1).astype(np.float32)

    try:
        values = np.asarray(apply_modality_lut(arr, ds), dtype=np.float64)
        photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
        voi_seq = ds.get("VOILUTSequence")
        if voi_seq:
            out = np.asarray(apply_voi_lut(values, ds, index=0, prefer_lut=True), dtype=np.float64)
            bits = int(voi_seq[0].LUTDescriptor[2])
            lo, hi = 0.0, float(2 ** bits - 1)
            if out.max() > hi:  # descriptor lies about its bit depth
                lo, hi = float(out.min()), float(out.max())
        elif ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None:
            out = np.asarray(apply_voi_lut(values, ds, index=0, prefer_lut=False), dtype=np.float64)
            lo, hi = _window_range(ds)
        else:
            out, (lo, hi) = values, (float(values.min()), float(values.max()))
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"{path}: cannot apply the DICOM rescale/VOI transform "
                        f"({type(exc).__name__}: {_scrub(exc, ds)})") from None

    if hi == lo:
        img = np.zeros(out.shape, np.float32)
    else:
        img = np.clip((out - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)
    if photometric == "MONOCHROME1":
        img = 1.0 - img  # MONOCHROME1: low values are bright; make bright = high
    return img
