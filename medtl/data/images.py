"""Decoding single images (PIL or DICOM) and resizing them to the model's square input."""
from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import DataError
from . import dicom as _dicom
from .types import DICOM_EXTS

RESAMPLE = Image.BILINEAR  # antialiased when reducing (Pillow's convolution resize)
_REDUCING_GAP = 3.0        # Pillow: >= 3 is indistinguishable from a full-quality resize


def _is_dicom(path, data: bytes | None = None) -> bool:
    if Path(path).suffix.lower() in DICOM_EXTS:
        return True
    if data is not None:
        return len(data) >= 132 and data[128:132] == b"DICM"
    return _dicom.is_dicom_file(path)


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _verify_png(path, data: bytes) -> None:
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.verify()  # every chunk's CRC, without decoding
    except Image.DecompressionBombError as exc:
        raise DataError(f"{path}: cannot decode image ({_reason(exc)})") from None
    except Exception as exc:  # noqa: BLE001 - Pillow's plugins raise many types on corrupt files
        raise DataError(f"{path}: cannot decode image (corrupt PNG: {_reason(exc)})") from None


def _reason(exc: BaseException) -> str:
    msg = re.sub(r"\s*<_io\.BytesIO object at 0x[0-9a-fA-F]+>", "", " ".join(str(exc).split()))[:160]
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__


def _open_pil(path, data: bytes | None, draft_size: int | None = None) -> Image.Image:
    """Open and fully load an image with PIL; grayscale 'L' or float 'F'.  A PNG's chunk
    checksums are verified first: flipped bits in its pixel data do not decode silently."""
    if data is None:
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise DataError(f"{path}: cannot read file ({exc.strerror or exc})") from None
    if data[:8] == _PNG_SIGNATURE:
        _verify_png(path, data)
    try:
        img = Image.open(io.BytesIO(data))
        if draft_size is not None and img.format == "JPEG":
            # DCT-domain downscale (never below the requested size): much faster decode
            img.draft("L", (draft_size, draft_size))
        img.load()
    except Exception as exc:  # noqa: BLE001 - Pillow's plugins raise many types on corrupt files
        raise DataError(f"{path}: cannot decode image ({_reason(exc)})") from None
    mode = img.mode
    if mode == "L":
        return img
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        bad = int((~np.isfinite(arr)).sum())
        if bad:
            raise DataError(f"{path}: float image holds NaN or infinite pixel values ({bad} of {arr.size}); "
                            f"fix the file or leave it out")
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)
        return Image.fromarray(arr.astype(np.float32), "F")
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        bg = Image.new("RGBA", img.size, (0, 0, 0, 255))
        img = Image.alpha_composite(bg, img)
    return img.convert("L")


def to_float01(img: Image.Image) -> np.ndarray:
    if img.mode == "F":
        return np.asarray(img, dtype=np.float32).copy()
    return np.asarray(img, dtype=np.float32) / 255.0


def read_image(path, data: bytes | None = None) -> np.ndarray:
    """Decode one image to float32 (H, W) in [0, 1], display-ready.

    DICOM: modality rescale, VOI LUT or window (else min-max), MONOCHROME1 inverted.
    PNG/JPEG/...: PIL, colour converted to luminance; 16-bit/float images min-max scaled.
    """
    if _is_dicom(path, data):
        return _dicom.read_dicom(path, data)
    return to_float01(_open_pil(path, data))


def resize_image(img: Image.Image, size: int, mode: str = "squash") -> Image.Image:
    """Resize a PIL 'L' or 'F' image to size x size: squash, pad (letterbox, black) or crop."""
    w, h = img.size
    if mode == "squash":
        if (w, h) == (size, size):
            return img
        return img.resize((size, size), RESAMPLE, reducing_gap=_REDUCING_GAP)
    if mode == "crop":
        side = min(w, h)
        left, top = (w - side) // 2, (h - side) // 2
        box = (left, top, left + side, top + side)
        if side == size:
            return img.crop(box)
        return img.resize((size, size), RESAMPLE, box=box, reducing_gap=_REDUCING_GAP)
    if mode == "pad":
        f = size / max(w, h)
        nw, nh = max(1, min(size, round(w * f))), max(1, min(size, round(h * f)))
        inner = img if (nw, nh) == (w, h) else img.resize((nw, nh), RESAMPLE, reducing_gap=_REDUCING_GAP)
        canvas = Image.new(img.mode, (size, size), 0)
        canvas.paste(inner, ((size - nw) // 2, (size - nh) // 2))
        return canvas
    raise ValueError(f"unknown resize mode {mode!r}")


def float_to_uint8(a: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(np.asarray(a, dtype=np.float32) * 255.0), 0, 255).astype(np.uint8)


def resize_array(arr: np.ndarray, size: int, mode: str = "squash") -> np.ndarray:
    """Resize a float [0,1] (H,W) or uint8 (H,W) array; returns uint8 (size, size)."""
    if arr.dtype == np.uint8:
        return np.asarray(resize_image(Image.fromarray(arr, "L"), size, mode))
    img = Image.fromarray(np.asarray(arr, dtype=np.float32), "F")
    return float_to_uint8(np.asarray(resize_image(img, size, mode)))


def load_image_resized(path, size: int, mode: str = "squash", data: bytes | None = None) -> np.ndarray:
    """The model-input pipeline for one file: decode -> [VOI/invert] -> resize -> uint8 (size, size)."""
    if _is_dicom(path, data):
        return resize_array(_dicom.read_dicom(path, data), size, mode)
    img = _open_pil(path, data, draft_size=size)
    out = resize_image(img, size, mode)
    if out.mode == "F":
        return float_to_uint8(np.asarray(out))
    return np.asarray(out, dtype=np.uint8).copy()


def header_size(path) -> tuple[int, int]:
    """(H, W) of a source image without decoding its pixels (DICOM: after the header checks
    that decoding makes, :func:`medtl.data.dicom.header_hw`)."""
    if _is_dicom(path):
        return _dicom.header_hw(path)
    try:
        with Image.open(path) as img:
            w, h = img.size
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types (DecompressionBombError too)
        raise DataError(f"{path}: cannot decode image ({_reason(exc)})") from None
    return int(h), int(w)


def verify_image(path, data: bytes, size: int | None = None, mode: str = "squash") -> tuple[tuple[int, int], list[str]]:
    """((H, W), notes) of a file whose pixels decode; a one-line DataError otherwise.

    The decode is training's (:func:`load_image_resized`): DICOM through
    :func:`medtl.data.dicom.read_dicom` (header checks, rescale, VOI LUT or window), other images
    through Pillow, in full (no JPEG draft; a PNG's chunk checksums too), then, with ``size``,
    resized as training resizes: whatever training or ``medtl data preview`` refuses is refused
    here.  Notes name legal but odd content."""
    if not data:
        raise DataError(f"{path}: empty file (0 bytes)")
    if _is_dicom(path, data):
        arr = _dicom.read_dicom(path, data)
        if size is not None:
            resize_array(arr, size, mode)
        return (int(arr.shape[0]), int(arr.shape[1])), (["blank image (a single gray value)"]
                                                        if arr.size and arr.min() == arr.max() else [])
    img = _open_pil(path, data)  # a PNG's checksums verified there
    if size is not None:
        resize_image(img, size, mode)
    arr = np.asarray(img)
    notes = ["blank image (a single gray value)"] if arr.size and arr.min() == arr.max() else []
    return (int(img.height), int(img.width)), notes
