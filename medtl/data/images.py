"""Decoding single images (PIL or DICOM) and resizing them to the model's square input."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

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


def _open_pil(path, data: bytes | None, draft_size: int | None = None) -> Image.Image:
    """Open and fully load an image with PIL; grayscale 'L' or float 'F'."""
    try:
        img = Image.open(io.BytesIO(data) if data is not None else path)
        if draft_size is not None and img.format == "JPEG":
            # DCT-domain downscale (never below the requested size): much faster decode
            img.draft("L", (draft_size, draft_size))
        img.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        msg = " ".join(str(exc).split())[:160]
        raise DataError(f"{path}: cannot decode image ({type(exc).__name__}: {msg})") from None
    mode = img.mode
    if mode == "L":
        return img
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
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
    """(H, W) of a source image without decoding its pixels."""
    if _is_dicom(path):
        info = _dicom.dicom_info(path)
        return int(info.get("Rows", 0)), int(info.get("Columns", 0))
    try:
        with Image.open(path) as img:
            w, h = img.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        msg = " ".join(str(exc).split())[:160]
        raise DataError(f"{path}: cannot decode image ({type(exc).__name__}: {msg})") from None
    return int(h), int(w)
