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


def _transfer_syntax(ds, path):
    """The file's transfer syntax UID (None when absent); DataError when it is not one."""
    ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if ts is None:
        return None
    try:
        ts.is_compressed  # noqa: B018 - raises ValueError for a UID that is not a transfer syntax
    except Exception:  # noqa: BLE001 - pydicom: "UID is not a transfer syntax"
        raise DataError(f"{path}: TransferSyntaxUID {_scrub(str(ts), ds)[:64]!r} is not a DICOM transfer "
                        f"syntax (file corrupt or mislabelled)") from None
    return ts


def _int_field(ds, kw: str, path, default=None) -> int | None:
    """An integer header field; DataError when present but not one integer."""
    val = ds.get(kw, default)
    if val is None:
        return None
    try:
        return int(val)
    except (TypeError, ValueError):
        raise DataError(f"{path}: DICOM {kw} {_scrub(str(val), ds)[:40]!r} is not an integer") from None


def _check_rescale(ds, path) -> None:
    """RescaleSlope/RescaleIntercept must be finite numbers, the slope non-zero (unless a
    Modality LUT Sequence replaces them): slope 0 makes every pixel one value, NaN makes none."""
    if ds.get("ModalityLUTSequence"):
        return
    for kw in ("RescaleSlope", "RescaleIntercept"):
        val = ds.get(kw)
        if val is None:
            continue
        try:
            x = float(val)
        except (TypeError, ValueError):
            x = float("nan")
        if not np.isfinite(x) or (kw == "RescaleSlope" and x == 0):
            raise DataError(f"{path}: unusable DICOM rescale: {kw} {_scrub(str(val), ds)[:40]!r} (must be a "
                            f"finite{' non-zero' if kw == 'RescaleSlope' else ''} number); fix the header or "
                            f"leave the file out")


def _check_window(ds, path) -> None:
    """A window that will be applied (no VOI LUT Sequence) must be finite, its width >= 1."""
    if ds.get("VOILUTSequence") or ds.get("WindowCenter") is None or ds.get("WindowWidth") is None:
        return
    for kw in ("WindowCenter", "WindowWidth"):
        val = ds.get(kw)
        first = val[0] if isinstance(val, (list, tuple)) or type(val).__name__ == "MultiValue" else val
        try:
            x = float(first)
        except (TypeError, ValueError, IndexError):
            x = float("nan")
        if not np.isfinite(x) or (kw == "WindowWidth" and x < 1):
            raise DataError(f"{path}: unusable DICOM window: {kw} {_scrub(str(val), ds)[:40]!r} (must be a finite "
                            f"number{', at least 1' if kw == 'WindowWidth' else ''}); fix the header or leave the "
                            f"file out")


def check_header(ds, path) -> None:
    """The image-pixel header fields a decoder relies on, checked with a one-line DataError each:
    size, bits, samples, frames, pixel representation, rescale, window."""
    try:
        _check_header_fields(ds, path)
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - a value pydicom cannot even convert
        raise DataError(f"{path}: unreadable DICOM header value ({type(exc).__name__}: {_scrub(exc, ds)})") from None


def _check_header_fields(ds, path) -> None:
    rows, cols = _int_field(ds, "Rows", path), _int_field(ds, "Columns", path)
    if not rows or not cols or rows < 0 or cols < 0:
        raise DataError(f"{path}: DICOM image size Rows={rows} x Columns={cols}: not an image")
    alloc, stored = _int_field(ds, "BitsAllocated", path), _int_field(ds, "BitsStored", path)
    if "PixelData" in ds and alloc not in (1, 8, 16, 32, 64):
        raise DataError(f"{path}: DICOM BitsAllocated {alloc}: must be 1, 8, 16, 32 or 64")
    if "PixelData" in ds and (stored is None or not 1 <= stored <= alloc):
        raise DataError(f"{path}: DICOM BitsStored {stored} with BitsAllocated {alloc}: must be 1..BitsAllocated")
    spp = _int_field(ds, "SamplesPerPixel", path, 1)
    if spp not in (1, 3):
        raise DataError(f"{path}: DICOM SamplesPerPixel {ds.get('SamplesPerPixel')}: must be 1 or 3")
    _check_photometric(ds, path, spp)
    if _int_field(ds, "PixelRepresentation", path, 0) not in (0, 1):
        raise DataError(f"{path}: DICOM PixelRepresentation {ds.get('PixelRepresentation')}: must be 0 or 1")
    frames = _int_field(ds, "NumberOfFrames", path, 1)
    if frames is not None and frames < 1:
        raise DataError(f"{path}: DICOM NumberOfFrames {frames}: must be at least 1")
    _check_rescale(ds, path)
    _check_window(ds, path)


#: samples per pixel each photometric interpretation medtl reads needs (DICOM PS3.3 C.7.6.3.1.2)
PHOTOMETRIC_SAMPLES = {"MONOCHROME1": 1, "MONOCHROME2": 1, "RGB": 3, "YBR_FULL": 3, "YBR_FULL_422": 3,
                       "YBR_PARTIAL_422": 3, "YBR_PARTIAL_420": 3, "YBR_ICT": 3, "YBR_RCT": 3}


def _check_photometric(ds, path, spp: int) -> None:
    """PhotometricInterpretation must be one medtl reads and agree with SamplesPerPixel (absent:
    MONOCHROME2 is assumed).  A header that contradicts itself is refused, not guessed at."""
    raw = ds.get("PhotometricInterpretation")
    if raw is None or not str(raw).strip():
        return
    ph = str(raw).strip().upper()
    if ph == "PALETTE COLOR":
        raise DataError(f"{path}: DICOM PhotometricInterpretation PALETTE COLOR: its pixel values index a colour "
                        f"table, not intensities, and medtl reads grayscale, RGB and YBR images only; convert the "
                        f"file or leave it out")
    want = PHOTOMETRIC_SAMPLES.get(ph)
    if want is None:
        raise DataError(f"{path}: DICOM PhotometricInterpretation {_scrub(ph, ds)[:32]!r}: not one medtl reads "
                        f"(MONOCHROME1, MONOCHROME2, RGB, YBR_*); fix the header or leave the file out")
    if want != spp:
        raise DataError(f"{path}: DICOM PhotometricInterpretation {ph} needs SamplesPerPixel {want} but the header "
                        f"says {spp}: the header contradicts itself; fix it or leave the file out")


def header_hw(path) -> tuple[int, int]:
    """(H, W) from the header alone, after the header checks decoding would make (size, samples
    and photometric interpretation, rescale, window): the fast pass of ``medtl data check``."""
    ds = _open(path, header_only=True)
    check_header(ds, path)
    return int(ds.Rows), int(ds.Columns)


def check_native_length(ds, path) -> None:
    """Uncompressed pixel data must hold exactly Rows x Columns x samples x frames pixels
    (plus an odd-length pad byte): the cheap integrity check of a native DICOM file."""
    from pydicom.pixels.utils import get_expected_length

    elem = ds["PixelData"] if "PixelData" in ds else None
    if elem is None:
        return  # float pixel data: decoded and checked by the caller
    if getattr(elem, "is_undefined_length", False):
        raise DataError(f"{path}: DICOM pixel data is encapsulated (compressed) but the transfer syntax "
                        f"'{_ts_name(ds)}' says uncompressed: transfer syntax mislabelled")
    try:
        expected = get_expected_length(ds)
    except Exception as exc:  # noqa: BLE001 - odd header values: one line
        raise DataError(f"{path}: DICOM header does not describe the pixel data ({type(exc).__name__})") from None
    got = len(elem.value or b"")
    if not expected <= got <= expected + 1:
        raise DataError(f"{path}: DICOM pixel data holds {got} bytes, the header needs {expected} "
                        f"({int(ds.Rows)}x{int(ds.Columns)}, {int(ds.get('NumberOfFrames', 1) or 1)} frame(s), "
                        f"{int(ds.BitsAllocated)} bits): file truncated or header wrong")


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
        try:
            val = ds.get(kw)
            if val is not None:
                info[kw] = int(val) if kw in ("BitsStored", "Rows", "Columns") else str(val)
        except Exception as exc:  # noqa: BLE001 - a value pydicom cannot convert: one line
            raise DataError(f"{path}: unreadable DICOM {kw} ({type(exc).__name__})") from None
    ts = _transfer_syntax(ds, path)
    info["TransferSyntax"] = _ts_name(ds)
    if ts is not None and ts.is_compressed:
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
    return _decode(_open(path, data), path)


def verify_dicom(path, data: bytes | None = None) -> tuple[int, int]:
    """(H, W) of a DICOM file whose pixels are usable; a one-line DataError otherwise.

    Uncompressed integer pixel data is verified cheaply (header fields, rescale and the pixel
    data's byte length); compressed and float pixel data are decoded."""
    ds = _open(path, data)
    ts = _transfer_syntax(ds, path)
    if "PixelData" in ds and ts is not None and not ts.is_compressed:
        check_header(ds, path)
        check_native_length(ds, path)
        return int(ds.Rows), int(ds.Columns)
    h, w = _decode(ds, path).shape
    return int(h), int(w)


def _decode(ds, path) -> np.ndarray:
    """Header checks, decode, modality LUT, VOI LUT or window, MONOCHROME1 inversion."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise DataError(f"{path}: DICOM file has no pixel data (file truncated, or not an image)")
    ts = _transfer_syntax(ds, path)
    check_header(ds, path)
    if ts is not None and not ts.is_compressed:
        check_native_length(ds, path)
    if ts is not None and ts.is_compressed and not _decoder_available(ts):
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
    if not np.isfinite(values).all():
        raise DataError(f"{path}: DICOM pixel values include NaN or infinity "
                        f"({int((~np.isfinite(values)).sum())} pixels); fix the file or leave it out")
    if not (np.isfinite(out).all() and np.isfinite(lo) and np.isfinite(hi)):
        raise DataError(f"{path}: the DICOM window/VOI LUT gives NaN or infinite values "
                        f"(WindowCenter/WindowWidth or VOILUTSequence unusable); fix the header or leave the file out")

    if hi == lo:
        img = np.zeros(out.shape, np.float32)
    else:
        img = np.clip((out - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)
    if photometric == "MONOCHROME1":
        img = 1.0 - img  # MONOCHROME1: low values are bright; make bright = high
    return img
