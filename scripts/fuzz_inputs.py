#!/usr/bin/env python
"""Hostile-input fuzz suite: seeded malformed inputs through medtl's CLI, as a user would.

Each case is a command line (``medtl.cli.run``, in this process) on a generated input: DICOM
files mutated from the real ones in ``../shared/data/dicom`` (pydicom-generated ones where that
is absent), images (Kermany JPEGs from ``../shared`` or generated), CSV manifests, MedMNIST
``.npz`` files, YAML configs and ``--set`` overrides, weight files, resume states and output
paths.  Every case knows what it expects:

* ``bad``: a non-zero exit and one ``medtl: error:`` line (``data check``: exit 1 and the report)
  naming the file or key; a usage error: click's usage message;
* ``good``: exit 0 (``good+warning``: and a warning in the output);
* ``any``: either, cleanly (e.g. bit flips inside a JPEG's entropy-coded data).

A case ends as **clean**, **traceback** (an exception escaped the CLI, or a traceback was
printed), **silent** (bad input accepted, a warning missing, an output half-written, an error
that does not name the file or key, an identifying DICOM value printed), **lost** (a user's
file or a finished run folder changed, or a pickled payload ran) or **wrong** (good input
refused).  A sentinel user folder and a finished run folder sit beside every case and are
compared after each one.

    python scripts/fuzz_inputs.py [--seed 0] [--families dicom,image,...] [--per-family N] [--verbose]

prints one line per failing case, a table per family, and then
``cases=N clean=N traceback=0 silent=0 lost=0`` (``wrong`` on the next line); exits 1 on any
traceback, silent acceptance, loss or wrong refusal.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import logging
import os
import random
import shutil
import struct
import sys
import tempfile
import time
import traceback
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
FAMILIES = ("dicom", "image", "csv", "npz", "config", "weights", "resume", "output", "usage")
TINY = ["data.image_size=16", "train.epochs=1", "train.batch_size=8", "train.num_threads=1",
        "model.backbone=resnet18", "train.warmup_epochs=0"]
SYNTH = ["data.path=builtin:synthetic", "data.synthetic_n={train: 16, val: 8, test: 8}"]
PNG_SIG = b"\x89PNG\r\n\x1a\n"


@dataclass
class Case:
    family: str
    name: str
    argv: list[str]
    expect: str                     # bad | good | good+warning | any
    names: str | None = None        # what the error (or the check report; the warning) must mention
    no_output: list[Path] = field(default_factory=list)  # must not exist after a refusal
    protect: list[Path] = field(default_factory=list)    # must be byte-identical afterwards
    payload: Path | None = None     # a pickled/YAML payload writes this file if it ever runs
    secrets: tuple[str, ...] = ()   # identifying header values that must never be printed
    volatile: tuple[str, ...] = ()  # file names in ``protect`` that may change (a log medtl appends to)


# ----------------------------------------------------------------------------- small writers

def sets(*items: str) -> list[str]:
    out = []
    for s in items:
        out += ["--set", s]
    return out


def png_bytes(arr: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def png_header_only(w: int, h: int) -> bytes:
    def chunk(t: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + t + data + struct.pack(">I", zlib.crc32(t + data) & 0xFFFFFFFF)

    return (PNG_SIG + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b""))


def structured(rng: np.random.Generator, h: int = 24, w: int = 24, level: int = 120) -> np.ndarray:
    """A distinct image (a gradient, a blob and noise): no two cases share bytes."""
    y, x = np.mgrid[0:h, 0:w]
    cy, cx = rng.integers(4, h - 4), rng.integers(4, w - 4)
    blob = 80 * np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / 20.0)
    arr = level + 40 * x / w + blob + rng.normal(0, 6, (h, w))
    return np.clip(arr, 0, 255).astype(np.uint8)


def snapshot(paths: list[Path], volatile: tuple[str, ...] = ()) -> dict:
    """Size and sha256 of every file under ``paths`` (None for a path that does not exist)."""
    snap = {}
    for root in paths:
        if not root.exists():
            snap[str(root)] = None
            continue
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for f in files:
            if f.name not in volatile:
                snap[str(f)] = (f.stat().st_size, hashlib.sha256(f.read_bytes()).hexdigest())
    return snap


# ----------------------------------------------------------------------------- the builder

class Builder:
    """Writes the inputs of every case under ``root`` and returns the cases."""

    def __init__(self, root: Path, seed: int):
        self.root = root
        self.rng = random.Random(seed)
        self.nrng = np.random.default_rng(seed)
        self.k = 0
        self.shared = SHARED.is_dir()

    def dir(self, tag: str) -> Path:
        self.k += 1
        d = self.root / "cases" / f"{self.k:04d}-{tag}"
        d.mkdir(parents=True)
        return d

    # --------------------------------------------------------------- shared fixtures
    def class_folder(self, d: Path, n: int = 10, ext: str = ".png") -> Path:
        """ROOT/{a,b}/*: two classes of distinct small images."""
        from PIL import Image

        for cls, level in (("a", 70), ("b", 170)):
            (d / cls).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray(structured(self.nrng, level=level)).save(d / cls / f"img{i}{ext}")
        return d

    def csv_folder(self, d: Path, n: int = 10) -> Path:
        """d/{img*.png, labels.csv with path,label,patient}; returns the CSV path."""
        rows = ["path,label,patient"]
        for i in range(2 * n):
            label = "NORMAL" if i % 2 == 0 else "PNEUMONIA"
            (d / f"img{i}.png").write_bytes(png_bytes(structured(self.nrng, level=70 if i % 2 == 0 else 170)))
            rows.append(f"img{i}.png,{label},p{i}")
        (d / "labels.csv").write_text("\n".join(rows) + "\n")
        return d / "labels.csv"

    def npz_arrays(self, n: int = 16, size: int = 12):
        imgs = np.stack([structured(self.nrng, size, size, level=60 + 8 * (i % 2) * 10) for i in range(n)])
        return imgs, np.array([i % 2 for i in range(n)])

    def base_dicoms(self) -> dict[str, bytes]:
        """Small real-derived DICOMs (the real headers, a 96x96 crop of the real pixels) and the
        real JPEG 2000 file; generated ones where ../shared is absent."""
        import pydicom

        out = {}
        if self.shared:
            for name in ("DX_chest_PA_966_fixed_uncompressed.dcm", "CR_chest_PA_RG1_uncompressed.dcm"):
                ds = pydicom.dcmread(SHARED / "dicom" / "uncompressed" / name)
                arr = ds.pixel_array
                h, w = arr.shape
                crop = np.ascontiguousarray(arr[h // 2 - 48:h // 2 + 48, w // 2 - 48:w // 2 + 48])
                ds.Rows, ds.Columns = crop.shape
                ds.PixelData = crop.tobytes()
                buf = io.BytesIO()
                ds.save_as(buf, enforce_file_format=True)
                out["real-" + name.split("_")[0]] = buf.getvalue()
            out["real-j2k"] = (SHARED / "dicom" / "CR_chest_PA_RG1_J2KI.dcm").read_bytes()
        else:
            out["gen-native"] = self.generated_dicom(False)
            out["gen-j2k"] = self.generated_dicom(True)
        return out

    def generated_dicom(self, j2k: bool) -> bytes:
        from pydicom.dataset import Dataset, FileMetaDataset
        from pydicom.uid import (JPEG2000Lossless, ExplicitVRLittleEndian, SecondaryCaptureImageStorage,
                                 generate_uid)

        arr = (structured(self.nrng, 96, 96).astype(np.uint16) * 16)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
        ds.PatientName, ds.PatientID = "Doe^Jane", "SECRET-ID-4711"
        ds.Modality, ds.Rows, ds.Columns = "DX", 96, 96
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME1"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.RescaleSlope, ds.RescaleIntercept = 1, 0
        ds.PixelData = arr.tobytes()
        if j2k:  # a lossless JPEG 2000 codestream from Pillow (OpenJPEG), encapsulated by pydicom
            from PIL import Image
            from pydicom.encaps import encapsulate

            code = io.BytesIO()
            Image.fromarray(arr).save(code, format="JPEG2000", irreversible=False, no_jp2=True)
            ds.PixelData = encapsulate([code.getvalue()])
            ds["PixelData"].VR = "OB"
            ds["PixelData"].is_undefined_length = True
            ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        return buf.getvalue()


# ----------------------------------------------------------------------------- DICOM

def with_transfer_syntax(data: bytes, uid: str) -> bytes:
    """The same file with its file meta claiming another transfer syntax (the data set as is)."""
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_file_meta_info

    ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    glen = int(ds.file_meta.FileMetaInformationGroupLength)
    body = data[132 + 12 + glen:]
    meta = FileMetaDataset(ds.file_meta)
    meta.TransferSyntaxUID = uid
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    write_file_meta_info(fp, meta, enforce_standard=True)
    return data[:132] + fp.getvalue() + body


def _set(ds, **kw):
    for k, v in kw.items():
        if v is None:
            if k in ds:
                delattr(ds, k)
        else:
            setattr(ds, k, v)


# (name, expect, mutation of the dataset) on uncompressed bases
DICOM_HEADER_MUTATIONS = [
    ("rows-0", "bad", dict(Rows=0)), ("columns-0", "bad", dict(Columns=0)), ("rows-missing", "bad", dict(Rows=None)),
    ("bits-alloc-7", "bad", dict(BitsAllocated=7)), ("bits-alloc-12", "bad", dict(BitsAllocated=12)),
    ("bits-alloc-32", "bad", dict(BitsAllocated=32)), ("bits-alloc-8", "bad", dict(BitsAllocated=8)),
    ("bits-alloc-0", "bad", dict(BitsAllocated=0)), ("bits-stored-17", "bad", dict(BitsStored=17)),
    ("bits-stored-0", "bad", dict(BitsStored=0)), ("samples-2", "bad", dict(SamplesPerPixel=2)),
    ("samples-0", "bad", dict(SamplesPerPixel=0)), ("pixrep-2", "bad", dict(PixelRepresentation=2)),
    ("frames-2", "bad", dict(NumberOfFrames=2)), ("frames-0", "bad", dict(NumberOfFrames=0)),
    ("no-pixel-data", "bad", dict(PixelData=None)),
    ("slope-0", "bad", dict(RescaleSlope="0", RescaleIntercept="0")),
    ("slope-nan", "bad", dict(RescaleSlope="NaN", RescaleIntercept="0")),
    ("slope-inf", "bad", dict(RescaleSlope="inf", RescaleIntercept="0")),
    ("slope-neg-inf", "bad", dict(RescaleSlope="-inf", RescaleIntercept="0")),
    ("intercept-nan", "bad", dict(RescaleSlope="1", RescaleIntercept="NaN")),
    ("window-width-nan", "bad", dict(WindowCenter="100", WindowWidth="NaN")),
    ("window-center-inf", "bad", dict(WindowCenter="inf", WindowWidth="100")),
    ("window-width-0", "bad", dict(WindowCenter="100", WindowWidth="0")),
    ("slope-2", "good", dict(RescaleSlope="2", RescaleIntercept="-100")),
    ("slope-negative", "good", dict(RescaleSlope="-1", RescaleIntercept="4095")),
    ("no-window", "good", dict(WindowCenter=None, WindowWidth=None, VOILUTSequence=None)),
    ("monochrome2", "good", dict(PhotometricInterpretation="MONOCHROME2")),
    ("window-set", "good", dict(WindowCenter="1500", WindowWidth="2500")),
    ("photometric-junk", "any", dict(PhotometricInterpretation="FOO")),
    ("highbit-0", "any", dict(HighBit=0)),
    ("modality-junk", "good", dict(Modality="XX")),
]


# (name, explicit-VR tag + VR bytes, the value written over the element's value bytes)
RAW_VALUE_MUTATIONS = [
    ("slope-letters", b"\x28\x00\x53\x10DS", b"ab"), ("intercept-letters", b"\x28\x00\x52\x10DS", b"x-y-z"),
    ("window-center-letters", b"\x28\x00\x50\x10DS", b"wc"), ("window-width-letters", b"\x28\x00\x51\x10DS", b"ww"),
    ("rows-65535", b"\x28\x00\x10\x00US", b"\xff\xff"), ("bits-allocated-65535", b"\x28\x00\x00\x01US", b"\xff\xff"),
]


def dicom_cases(b: Builder, per: int) -> list[Case]:
    import pydicom

    cases: list[Case] = []
    bases = b.base_dicoms()
    secrets = set()
    for data in bases.values():
        ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
        for kw in ("PatientName", "PatientID"):
            v = str(ds.get(kw) or "")
            if len(v) >= 4:
                secrets.add(v)
    native = {k: v for k, v in bases.items() if "j2k" not in k}
    compressed = {k: v for k, v in bases.items() if "j2k" in k}

    def add(tag: str, data: bytes, expect: str, commands=("check", "preview", "finetune")):
        d = b.dir("dicom-" + tag)
        f = d / f"{tag}.dcm"
        f.write_bytes(data)
        sec = tuple(secrets)
        if "check" in commands:
            cases.append(Case("dicom", f"check {tag}", ["data", "check", str(f)], expect, f.name, secrets=sec))
        if "preview" in commands:
            out = d / "preview.png"
            cases.append(Case("dicom", f"preview {tag}", ["data", "preview", str(f), "--out", str(out)], expect,
                              f.name, no_output=[out], secrets=sec))
        if "finetune" in commands and expect == "bad":
            root = b.class_folder(d / "folder")
            shutil.copy(f, root / "a" / f.name)
            out = d / "run"
            cases.append(Case("dicom", f"finetune {tag}", ["finetune", "-q", "--out", str(out)]
                              + sets(f"data.path={root}", *TINY), "bad", f.name, no_output=[out], secrets=sec))

    for bname, data in native.items():
        add(f"{bname}-intact", data, "good")
        for mname, expect, kw in DICOM_HEADER_MUTATIONS:
            ds = pydicom.dcmread(io.BytesIO(data))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                _set(ds, **kw)
                buf = io.BytesIO()
                ds.save_as(buf, enforce_file_format=False)
            add(f"{bname}-{mname}", buf.getvalue(), expect,
                ("check", "preview", "finetune") if bname == next(iter(native)) else ("check", "preview"))
        start = data.rfind(b"\xe0\x7f\x10\x00")
        add(f"{bname}-trunc242", data[:242], "bad", ("check", "preview"))
        for k in range(per):
            cut = b.rng.randrange(1, start + 12 + 96 * 96 * 2)
            add(f"{bname}-trunc{cut}", data[:cut], "bad", ("check", "preview"))
        for uid, expect in (("1.2.3.4", "bad"), ("1.2.840.10008.1.2.4.90", "bad"), ("1.2.840.10008.1.2.5", "bad"),
                            ("1.2.840.10008.1.2.2", "bad"), ("1.2.840.10008.1.2", "any")):
            add(f"{bname}-ts-{uid}", with_transfer_syntax(data, uid), expect, ("check", "preview"))
        for tname, tag, value in RAW_VALUE_MUTATIONS:  # values pydicom cannot convert, written as raw bytes
            i = data.find(tag)
            if i > 0:
                n = int.from_bytes(data[i + 6:i + 8], "little")
                add(f"{bname}-raw-{tname}", data[:i + 8] + value[:n].ljust(n, b" ") + data[i + 8 + n:], "bad",
                    ("check", "preview"))
        ds = pydicom.dcmread(io.BytesIO(data))
        ds.PixelData = ds.PixelData + b"\x00" * 1000  # more pixel data than Rows x Columns
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=False)
        add(f"{bname}-pixel-data-too-long", buf.getvalue(), "bad", ("check", "preview"))
        for k in range(per):  # random bytes flipped in the header: anything but a traceback
            buf = bytearray(data)
            for _ in range(b.rng.randint(1, 4)):
                buf[b.rng.randrange(132, start)] = b.rng.randrange(256)
            add(f"{bname}-headerflip{k}", bytes(buf), "any", ("check", "preview"))
    for bname, data in compressed.items():
        add(f"{bname}-intact", data, "good", ("check", "preview"))
        for k in range(max(2, per // 2)):
            cut = b.rng.randrange(200, len(data) - 16)
            add(f"{bname}-trunc{cut}", data[:cut], "bad", ("check", "preview"))
        add(f"{bname}-ts-native", with_transfer_syntax(data, "1.2.840.10008.1.2.1"), "bad", ("check", "preview"))
        add(f"{bname}-ts-bogus", with_transfer_syntax(data, "9.9.9"), "bad", ("check", "preview"))
        for k in range(max(2, per // 2)):  # flips inside the codestream: decoded or refused, cleanly
            buf = bytearray(data)
            for _ in range(8):
                buf[b.rng.randrange(len(data) // 2, len(data) - 16)] = b.rng.randrange(256)
            add(f"{bname}-codeflip{k}", bytes(buf), "any", ("check",))
    d = b.dir("dicom-zero")
    (d / "zero.dcm").write_bytes(b"")
    cases.append(Case("dicom", "check zero-byte .dcm", ["data", "check", str(d / "zero.dcm")], "bad", "zero.dcm"))
    (d / "text.dcm").write_text("not a dicom file\n" * 20)
    cases.append(Case("dicom", "preview text .dcm", ["data", "preview", str(d / "text.dcm"), "--out",
                                                     str(d / "p.png")], "bad", "text.dcm", no_output=[d / "p.png"]))
    return cases


# ----------------------------------------------------------------------------- images

def image_bases(b: Builder, n: int) -> list[tuple[str, bytes]]:
    """Real Kermany JPEGs (../shared) or generated ones, and generated PNGs."""
    from PIL import Image

    out = []
    if b.shared:
        files = sorted((SHARED / "kermany_cxr224" / "train" / "NORMAL").glob("*.jpeg"))[:200]
        for f in b.rng.sample(files, min(n, len(files))):
            out.append(("jpeg", f.read_bytes()))
    while len([x for x in out if x[0] == "jpeg"]) < n:
        buf = io.BytesIO()
        Image.fromarray(structured(b.nrng, 64, 64)).save(buf, format="JPEG", quality=90)
        out.append(("jpeg", buf.getvalue()))
    for _ in range(n):
        out.append(("png", png_bytes(structured(b.nrng, 32, 32))))
    return out


def image_variants(b: Builder) -> list[tuple[str, str, bytes, str]]:
    """(name, extension, bytes, expect) of legal-but-unusual and broken files."""
    from PIL import Image

    def save(arr, fmt, mode=None, **kw):
        buf = io.BytesIO()
        (Image.fromarray(arr, mode) if mode else Image.fromarray(arr)).save(buf, format=fmt, **kw)
        return buf.getvalue()

    g = structured(b.nrng, 32, 32)
    f32 = g.astype(np.float32) / 255.0
    nan = f32.copy()
    nan[3, 3] = np.nan
    inf = f32.copy()
    inf[5, 5] = np.inf
    rgba = np.dstack([g, g, g, np.full_like(g, 200)])
    return [
        ("png16", ".png", save((g.astype(np.uint16) * 250), "PNG"), "good"),
        ("rgba", ".png", save(rgba, "PNG"), "good"),
        ("palette", ".png", save(np.dstack([g, g // 2, g]), "GIF"), "any"),
        ("rgb-jpeg", ".jpeg", save(np.dstack([g, g, g]), "JPEG"), "good"),
        ("bmp", ".bmp", save(g, "BMP"), "good"),
        ("float-tiff", ".tiff", save(f32, "TIFF"), "good"),
        ("tiny-1x1", ".png", save(g[:1, :1], "PNG"), "good"),
        ("constant", ".png", save(np.full((32, 32), 7, np.uint8), "PNG"), "good+warning"),  # "blank"
        ("float-tiff-nan", ".tiff", save(nan, "TIFF"), "bad"),
        ("float-tiff-inf", ".tiff", save(inf, "TIFF"), "bad"),
        ("zero-bytes", ".png", b"", "bad"),
        ("text-as-png", ".png", b"hello, this is not an image\n" * 10, "bad"),
        ("png-header-only", ".png", save(g, "PNG")[:40], "bad"),
        ("bomb-header", ".png", png_header_only(20000, 20000), "bad"),
        ("jpeg-header-only", ".jpeg", save(g, "JPEG")[:120], "bad"),
        ("gif-as-png", ".png", save(g, "GIF"), "any"),
        ("html-as-jpeg", ".jpeg", b"<html><body>404 Not Found</body></html>", "bad"),
    ]


def mutate_image(b: Builder, kind: str, data: bytes) -> list[tuple[str, bytes, str]]:
    out = []
    n = len(data)
    cut = b.rng.randrange(20, int(n * 0.9))
    out.append((f"trunc{cut}", data[:cut], "bad"))
    if kind == "png":
        idat = data.find(b"IDAT")
        if idat > 0:
            buf = bytearray(data)
            pos = b.rng.randrange(idat + 6, idat + 4 + struct.unpack(">I", data[idat - 4:idat])[0])
            buf[pos] ^= 1 << b.rng.randrange(8)
            out.append((f"idat-bitflip{pos}", bytes(buf), "bad"))
        buf = bytearray(data)
        buf[16:24] = struct.pack(">II", 4000, 4000)  # IHDR says 4000x4000, CRC now wrong
        out.append(("ihdr-size-lie", bytes(buf), "bad"))
    else:
        sos = data.find(b"\xff\xda")
        if sos > 0:
            buf = bytearray(data)
            for _ in range(3):
                buf[b.rng.randrange(sos + 20, n - 4)] = b.rng.randrange(256)
            out.append(("scan-bytes-flipped", bytes(buf), "any"))
        out.append(("no-eoi", data[:-2], "any"))
    return out


def image_cases(b: Builder, per: int) -> list[Case]:
    cases: list[Case] = []

    def add(tag: str, ext: str, data: bytes, expect: str, finetune: bool):
        d = b.dir("image-" + tag)
        root = b.class_folder(d / "folder")
        f = root / "a" / f"odd-{tag}{ext}"
        f.write_bytes(data)
        cases.append(Case("image", f"check {tag}", ["data", "check", str(root)], expect,
                          "blank" if expect == "good+warning" else f.name))
        single = d / f"single-{tag}{ext}"
        single.write_bytes(data)
        out = d / "p.png"
        cases.append(Case("image", f"preview {tag}", ["data", "preview", str(single), "--out", str(out)],
                          "good" if expect == "good+warning" else expect, single.name, no_output=[out]))
        if finetune:
            out = d / "run"
            cases.append(Case("image", f"finetune {tag}", ["finetune", "-q", "--out", str(out)]
                              + sets(f"data.path={root}", *TINY), expect, f.name, no_output=[out]))

    for i, (kind, data) in enumerate(image_bases(b, per)):
        add(f"{kind}{i}-intact", "." + kind, data, "good", False)
        for tag, mdata, expect in mutate_image(b, kind, data):
            add(f"{kind}{i}-{tag}", "." + kind, mdata, expect, expect == "bad" and i % 3 == 0)
    for tag, ext, data, expect in image_variants(b):
        add(tag, ext, data, expect, expect == "bad")
    return cases


# ----------------------------------------------------------------------------- CSV

def csv_cases(b: Builder, per: int) -> list[Case]:
    cases: list[Case] = []

    def variant(tag: str, edit, expect_check: str, expect_train: str, names: str = "labels.csv",
                extra: tuple[str, ...] = (), warning: str | None = None):
        d = b.dir("csv-" + tag)
        csv_path = b.csv_folder(d)
        edit(csv_path)
        cases.append(Case("csv", f"check {tag}", ["data", "check", str(csv_path)] + sets(*extra), expect_check,
                          warning or names))
        out = d / "run"
        if expect_train != "skip":
            cases.append(Case("csv", f"finetune {tag}", ["finetune", "-q", "--out", str(out)]
                              + sets(f"data.path={csv_path}", *TINY, *extra), expect_train, names, no_output=[out]))

    def rewrite(fn):
        def edit(p: Path):
            lines = p.read_text().splitlines()
            p.write_text("\n".join(fn(lines)) + "\n")
        return edit

    def relabel(values):
        return rewrite(lambda L: [L[0]] + [",".join([r.split(",")[0], values[i % len(values)], r.split(",")[2]])
                                           for i, r in enumerate(L[1:])])

    variant("mixed-label-kinds", relabel(["0", "1", "2.5", "NORMAL", "PNEUMONIA"]), "bad", "bad")
    variant("ints-and-names", relabel(["0", "1", "NORMAL", "PNEUMONIA"]), "bad", "bad")
    variant("ints-and-fractions", relabel(["0", "1", "0.5"]), "bad", "bad")
    variant("single-value", relabel(["NORMAL"]), "bad", "bad")
    variant("empty-label", rewrite(lambda L: L[:3] + [L[3].rsplit(",", 2)[0] + ",,p9"] + L[4:]), "bad", "bad")
    variant("missing-image", rewrite(lambda L: L + ["nowhere.png,NORMAL,p99"]), "bad", "bad", "nowhere.png")
    variant("no-label-column", rewrite(lambda L: ["path,diagnosis_text,patient"[:5] + ",colour,patient"] + L[1:]),
            "bad", "bad")
    variant("no-path-column", rewrite(lambda L: ["picture,label,patient"] + L[1:]), "bad", "bad")
    variant("header-only", rewrite(lambda L: L[:1]), "bad", "bad")
    variant("empty-file", lambda p: p.write_bytes(b""), "bad", "bad")
    variant("binary-garbage", lambda p: p.write_bytes(bytes(b.nrng.integers(0, 256, 600, dtype=np.uint8))),
            "bad", "bad")
    variant("nul-byte", rewrite(lambda L: L[:2] + [L[2].replace(",", "\x00,", 1)] + L[3:]), "bad", "bad")
    variant("huge-field", rewrite(lambda L: L + ["x" * 200_000 + ",NORMAL,p1"]), "bad", "bad")
    variant("latin1", lambda p: p.write_bytes(p.read_bytes().replace(b"NORMAL", "NORMÄL".encode("latin-1"))),
            "bad", "bad")
    variant("bad-split-value", rewrite(lambda L: [L[0] + ",split"] + [r + ",holdout" for r in L[1:]]), "bad", "bad")
    # a test-only export (another hospital's test cases): checked as an evaluation-only set, never trained on
    variant("no-train-split", rewrite(lambda L: [L[0] + ",split"] + [r + ",test" for r in L[1:]]), "good+warning",
            "bad", warning="evaluation-only set")
    variant("train-one-class", rewrite(lambda L: [L[0] + ",split"] + [
        r + (",train" if "NORMAL" in r else (",val" if i % 4 == 1 else ",test")) for i, r in enumerate(L[1:])]),
        "bad", "bad")
    variant("chexpert-value-2", rewrite(lambda L: ["path,A,B,patient"] + [
        f"{r.split(',')[0]},{'2' if i == 3 else i % 2},{(i + 1) % 2},p{i}" for i, r in enumerate(L[1:])]),
        "bad", "bad", extra=("data.label_columns=[A, B]",))
    variant("missing-patient-column", lambda p: None, "bad", "bad", extra=("data.patient_column=who",))
    variant("bad-patient-regex", lambda p: None, "any", "skip", extra=("data.patient_regex=([",))
    variant("stray-int-label", relabel(["0", "1"] * 9 + ["0", "7"]), "good+warning", "skip",
            warning="class '7' has only 1 images")
    variant("class-with-3", rewrite(lambda L: L + [f"img{i}.png,RARE,q{i}" for i in range(3)]), "good+warning", "skip",
            warning="class 'RARE' has only 3 images")
    variant("extra-columns", rewrite(lambda L: [L[0] + ",age,notes"] + [r + ",42,\"a, b\"" for r in L[1:]]),
            "good", "skip")
    variant("crlf-bom", lambda p: p.write_bytes(b"\xef\xbb\xbf" + p.read_bytes().replace(b"\n", b"\r\n")), "good",
            "skip")
    variant("spaces", rewrite(lambda L: [L[0]] + [r.replace(",", " , ") for r in L[1:]]), "any", "skip")
    variant("duplicate-header", rewrite(lambda L: ["path,label,label"] + L[1:]), "any", "skip")
    for k in range(per):  # random byte flips anywhere in the CSV: anything but a traceback
        def flip(p: Path, k=k):
            data = bytearray(p.read_bytes())
            for _ in range(3):
                data[b.rng.randrange(len(data))] = b.rng.randrange(256)
            p.write_bytes(bytes(data))
        variant(f"byteflip{k}", flip, "any", "skip")
    return cases


# ----------------------------------------------------------------------------- npz

def npz_cases(b: Builder, per: int) -> list[Case]:
    cases: list[Case] = []

    def add(tag: str, write, expect: str, train: bool = True, stem: str = "data", names: str | None = None):
        d = b.dir("npz-" + tag)
        f = d / f"{stem}.npz"
        write(f)
        cases.append(Case("npz", f"check {tag}", ["data", "check", str(f)], expect, names or f.name))
        if train and expect in ("bad",):
            out = d / "run"
            cases.append(Case("npz", f"finetune {tag}", ["finetune", "-q", "--out", str(out)]
                              + sets(f"data.path={f}", *TINY), "bad", f.name, no_output=[out]))

    imgs, lab = b.npz_arrays()

    def save(**arrays):
        return lambda f: np.savez(f, **arrays)

    t = dict(test_images=imgs[:6], test_labels=lab[:6])
    add("string-labels", save(train_images=imgs, train_labels=np.array(["a", "b"] * 8), **t), "bad")
    add("object-arrays", lambda f: np.savez(f, train_images=imgs, train_labels=np.array([{"x": 1}] * 16, dtype=object),
                                            **t), "bad")
    add("npy-renamed", lambda f: np.save(open(f, "wb"), imgs), "bad")
    add("not-a-zip", lambda f: f.write_bytes(b"PK\x03\x04" + b"\x00" * 100), "bad")
    add("empty-file", lambda f: f.write_bytes(b""), "bad")
    add("missing-train", save(val_images=imgs, val_labels=lab), "bad")
    add("images-without-labels", save(train_images=imgs, train_labels=lab, test_images=imgs[:4]), "bad")
    add("length-mismatch", save(train_images=imgs, train_labels=lab[:10], **t), "bad")
    add("negative-label", save(train_images=imgs, train_labels=np.where(lab == 0, -1, 1), **t), "bad")
    stray = lab.copy()
    stray[3] = 7
    add("stray-label-7", save(train_images=imgs, train_labels=stray, **t), "bad")
    add("stray-label-7-pneumoniamnist", save(train_images=imgs, train_labels=stray, **t), "bad",
        stem="pneumoniamnist_copy")
    add("huge-label", save(train_images=imgs, train_labels=np.where(lab == 0, 0, 10 ** 12), **t), "bad")
    add("fractional-labels", save(train_images=imgs, train_labels=lab * 0.5, **t), "bad")
    add("nan-labels", save(train_images=imgs, train_labels=np.where(lab == 0, np.nan, 1.0), **t), "bad")
    add("one-class-train", save(train_images=imgs, train_labels=np.zeros(16, int), val_images=imgs[:4],
                                val_labels=lab[:4], **t), "bad")
    f32 = imgs.astype(np.float32) / 255
    nan = f32.copy()
    nan[2, 3, 3] = np.nan
    inf = f32.copy()
    inf[4, 1, 1] = -np.inf
    add("nan-pixels", save(train_images=nan, train_labels=lab, test_images=f32[:6], test_labels=lab[:6]), "bad")
    add("inf-pixels", save(train_images=inf, train_labels=lab, test_images=f32[:6], test_labels=lab[:6]), "bad")
    add("float-pixels", save(train_images=f32, train_labels=lab, test_images=f32[:6], test_labels=lab[:6]), "good")
    add("5d-images", save(train_images=imgs[:, None, None], train_labels=lab, **t), "bad")
    add("zero-size-images", save(train_images=np.zeros((16, 0, 0), np.uint8), train_labels=lab, **t), "bad")
    add("complex-images", save(train_images=imgs.astype(np.complex64), train_labels=lab, **t), "bad")
    add("mixed-label-layouts", save(train_images=imgs, train_labels=lab, test_images=imgs[:6],
                                    test_labels=np.eye(2)[lab[:6]][:, :, None].reshape(6, 2)), "bad")
    add("test-one-class", save(train_images=imgs, train_labels=lab, test_images=imgs[:6],
                               test_labels=np.zeros(6, int)), "good+warning", train=False, names="one class only")
    add("intact", save(train_images=imgs, train_labels=lab[:, None], **t), "good", train=False)
    for k in range(per):  # byte flips and truncations of a valid file
        def mangle(f: Path, k=k):
            np.savez(f, train_images=imgs, train_labels=lab, **t)
            data = bytearray(f.read_bytes())
            if k % 2:
                data = data[:b.rng.randrange(10, len(data) - 10)]
            else:
                for _ in range(4):
                    data[b.rng.randrange(len(data))] = b.rng.randrange(256)
            f.write_bytes(bytes(data))
        add(f"mangled{k}", mangle, "bad" if k % 2 else "any", train=False)
    return cases


# ----------------------------------------------------------------------------- configs

BAD_VALUES = {
    "name": ["[1, 2]", "{a: 1}"], "seed": ["abc", "1.5", "[]"],
    "data.path": ["/nonexistent/data", "builtin:nothing", "123"], "data.format": ["jpeg", "5"],
    "data.image_size": ["0", "7", "4096", "-1", "big", "1.5"], "data.resize": ["stretch"],
    "data.val_fraction": ["0", "0.5", "1", "-0.1", "x"],
    "data.synthetic_n": ["{train: 1, val: 8, test: 8}", "{train: 16}", "{a: 1}", "x"],
    "data.augment.translate": ["0.9", "-1"], "data.augment.rotate": ["90"], "data.augment.hflip": ["maybe"],
    "data.sr.method": ["magic"], "data.sr": ["{method: resize}", "{method: none, scale: 2}",
                                             "{method: resize, scale: 0.5}", "{method: learned, model: /no/sr.pt}"],
    "data.on_leak": ["ignore"], "data.uncertain": ["maybe"],
    "model.backbone": ["resnet1000", "''", "5"], "model.weights": ["/nonexistent/w.pt"],
    "model.drop_rate": ["1", "-0.1"],
    "train.epochs": ["0", "-1", "ten", "1.5", "[1]"], "train.batch_size": ["0", "-8"],
    "train.lr": ["0", "-0.1", "fast", ".nan", ".inf"], "train.optimizer": ["adam"], "train.momentum": ["1"],
    "train.weight_decay": ["-1"], "train.warmup_epochs": ["-1"], "train.schedule": ["linear"],
    "train.step_milestones": ["x", "[0.5, a]"], "train.step_gamma": ["0", "2"], "train.label_smoothing": ["1"],
    "train.precision": ["fp8"], "train.trainable": ["last:0", "some"], "train.bn_gamma": ["{layer4: x}", "[]"],
    "train.grad_clip": ["0"], "train.select_metric": ["f1"], "train.threshold_rule": ["0.3"],
    "train.num_threads": ["0", "100000"], "train.device": ["tpu9", "cuda:x", "''"], "train.mixup_alpha": ["-1"],
    "train.epoch": ["3"], "data.paths": ["x"], "foo": ["1"], "train.lr.value": ["1"],
}


def config_cases(b: Builder, per: int) -> list[Case]:
    import yaml

    cases: list[Case] = []
    base = {"data": {"path": "builtin:synthetic", "image_size": 16, "synthetic_n": {"train": 16, "val": 8, "test": 8}},
            "train": {"epochs": 1, "batch_size": 8, "num_threads": 1, "warmup_epochs": 0}}
    for key, values in BAD_VALUES.items():
        for v in values:
            d = b.dir("config")
            out = d / "run"
            top = key.split(".")[0]
            names = key  # the key, or what the one-line error must name instead:
            if key in ("data.path",) and "nonexistent" in v:
                names = "nonexistent"
            if key == "data.path" and v.startswith("builtin"):
                names = v
            if key == "model.weights":
                names = "w.pt"
            if key == "model.backbone" and v != "5":
                names = "backbone"  # unknown backbone 'resnet1000' (valid: ...)
            if key == "data.sr" and "learned" in v:
                names = "sr.pt"
            if key == "train.lr" and v == ".inf":
                names = "loss"
            if key == "train.lr.value":
                names = "train.lr"
            # as YAML (one file per value) and as --set (the same key, the same value)
            cfg = yaml.safe_load(yaml.safe_dump(base))
            node = cfg
            for part in key.split(".")[:-1]:
                node = node.setdefault(part, {}) if isinstance(node.get(part, {}), dict) else node
            try:
                node[key.split(".")[-1]] = yaml.safe_load(v)
            except yaml.YAMLError:
                node[key.split(".")[-1]] = v
            f = d / "cfg.yaml"
            f.write_text(yaml.safe_dump(cfg))
            cases.append(Case("config", f"yaml {key}={v}", ["finetune", "-q", "--config", str(f), "--out", str(out)],
                              "bad", names, no_output=[out]))
            if top in ("data", "model", "train") and b.rng.random() < 0.5:
                out2 = d / "run2"
                cases.append(Case("config", f"--set {key}={v}", ["finetune", "-q", "--out", str(out2)]
                                  + sets(*SYNTH, *TINY, f"{key}={v}"), "bad", names, no_output=[out2]))
    d = b.dir("config-payload")
    pwned = d / "PWNED"
    payloads = {
        "python-tag": f"!!python/object/apply:os.system ['touch {pwned}']\n",
        "python-name": "data: !!python/name:os.system\n",
        "python-module": "train: !!python/module:os\n",
    }
    for tag, text in payloads.items():
        f = d / f"{tag}.yaml"
        f.write_text(text)
        cases.append(Case("config", f"yaml {tag}", ["finetune", "-q", "--config", str(f), "--out", str(d / "run")],
                          "bad", f.name, no_output=[d / "run"], payload=pwned))
    odd = {
        "a-list": "- 1\n- 2\n", "a-scalar": "42\n", "bad-yaml": "data: [1, 2\n", "tabs": "data:\n\tpath: x\n",
        "section-not-mapping": "data: 5\n", "binary": None, "deep": "a: " + "[" * 200 + "]" * 200 + "\n",
        "not-utf8": None,
    }
    for tag, text in odd.items():
        f = d / f"{tag}.yaml"
        if tag == "binary":
            f.write_bytes(bytes(b.nrng.integers(0, 256, 300, dtype=np.uint8)))
        elif tag == "not-utf8":
            f.write_bytes("name: r\xe9sum\xe9\n".encode("latin-1"))
        else:
            f.write_text(text)
        cases.append(Case("config", f"yaml {tag}", ["finetune", "-q", "--config", str(f), "--out", str(d / "run")],
                          "bad", f.name, no_output=[d / "run"]))
    cases.append(Case("config", "config is a folder", ["finetune", "-q", "--config", str(d), "--out", str(d / "r")],
                      "bad", str(d.name), no_output=[d / "r"]))
    for item in ("train.lr", "=3", "train=3", "data.image_size=abc", "data.synthetic_n.train=x", " =1"):
        cases.append(Case("config", f"--set {item!r}", ["finetune", "-q", "--out", str(d / "r2")] + sets(*SYNTH, item),
                          "bad", None, no_output=[d / "r2"]))
    for tag, text in (("sweep-binary", None), ("sweep-list", "- a\n"), ("sweep-no-arms", "base: x.yaml\nseeds: 2\n"),
                      ("sweep-seeds-neg", "arms: {a: {}}\nseeds: -3\n")):
        f = d / f"{tag}.yaml"
        f.write_bytes(bytes(b.nrng.integers(0, 256, 200, dtype=np.uint8))) if text is None else f.write_text(text)
        cases.append(Case("config", tag, ["sweep", "-q", "--config", str(f), "--out", str(d / "sw")], "bad", f.name,
                          no_output=[d / "sw"]))
    return cases


# ----------------------------------------------------------------------------- weights

class _Evil:
    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def weights_cases(b: Builder, per: int) -> list[Case]:
    import pickle

    import torch

    from medtl.models import create_model

    cases: list[Case] = []
    d = b.dir("weights")
    pwned = d / "PWNED"
    torch.manual_seed(0)
    model, _ = create_model("resnet18", 2)
    sd = {k[len("backbone."):]: v for k, v in model.state_dict().items() if k.startswith("backbone.")}
    good = d / "resnet18-good.pth"
    torch.save(sd, good)
    data = good.read_bytes()
    files: list[tuple[str, str, object]] = [
        ("raw-pickle-payload.pth", "bad", lambda f: f.write_bytes(pickle.dumps({"model": _Evil(pwned)}))),
        ("raw-pickle-dict.pth", "bad", lambda f: f.write_bytes(pickle.dumps({"a": 1}))),
        ("zip-with-object.pth", "bad", lambda f: torch.save({"state_dict": sd, "args": _Evil(pwned)}, f)),
        ("empty.pth", "bad", lambda f: f.write_bytes(b"")),
        ("random.pth", "bad", lambda f: f.write_bytes(bytes(b.nrng.integers(0, 256, 5000, dtype=np.uint8)))),
        ("text.pth", "bad", lambda f: f.write_text("these are not weights\n")),
        ("junk.safetensors", "bad", lambda f: f.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{\"a\":1}")),
        ("no-tensors.pth", "bad", lambda f: torch.save({"a": 1, "b": "x"}, f)),
        ("renamed-keys.pth", "bad", lambda f: torch.save({"x" + k: v for k, v in sd.items()}, f)),
        ("wrong-shapes.pth", "strict", lambda f: torch.save({k: v[..., :1] if v.ndim == 4 else v for k, v in sd.items()}, f)),
        ("wrong-shapes-lenient.pth", "warn", lambda f: torch.save({k: v[..., :1] if v.ndim == 4 else v
                                                                   for k, v in sd.items()}, f)),
        ("nan-weights.pth", "bad-loss", lambda f: torch.save({k: torch.full_like(v, float("nan")) if v.is_floating_point()
                                                         else v for k, v in sd.items()}, f)),
        ("resnet18-good.pth", "good", None),
    ]
    for k in range(per):
        cut = b.rng.randrange(10, len(data) - 10)
        files.append((f"truncated{cut}.pth", "bad", lambda f, cut=cut: f.write_bytes(data[:cut])))
    for name, expect, write in files:
        f = d / name
        if write is not None:
            write(f)
        out = d / f"run-{name}"
        names = "unsafe: a raw Python pickle" if name.startswith("raw-pickle") else name
        if expect == "bad-loss":  # NaN weights load; the first step's loss is NaN: refused there
            expect, names = "bad", "loss became nan"
        extra = []
        if expect == "strict":  # every conv mis-shaped, BN fits: refused, counting what did not fit
            expect = "bad"
        if expect == "warn":  # the same under model.weights_strict: false: trains with the random convs, warning
            expect, names = "good+warning", "tensors not loaded (kept random)"
            extra = ["model.weights_strict=false"]
        cases.append(Case("weights", f"finetune weights={name}", ["finetune", "-q", "--out", str(out)]
                          + sets(*SYNTH, *TINY, f"model.weights={f}", *extra), expect, names,
                          no_output=[out] if expect == "bad" else [], payload=pwned))
    for name in ("raw-pickle-payload.pth", "random.pth", "zip-with-object.pth"):
        cases.append(Case("weights", f"weights fetch --from {name}", ["weights", "fetch", "resnet18.tv_in1k",
                                                                      "--from", str(d / name)], "bad", name,
                          payload=pwned))
    return cases


# ----------------------------------------------------------------------------- resume states

def interrupted_run(root: Path) -> Path:
    """A run folder interrupted after its first epoch (state/last.pt present)."""
    from medtl.config import build_config
    from medtl.train import finetune
    from medtl.train import loop as loop_mod

    out = root / "fixtures" / "interrupted"
    real = loop_mod._train_epoch

    def interrupted(*args, **kw):
        if args[2] == 1:
            raise KeyboardInterrupt
        return real(*args, **kw)

    loop_mod._train_epoch = interrupted
    try:
        finetune(build_config({}, SYNTH + TINY + ["train.epochs=2"]), out, progress=False)
    except KeyboardInterrupt:
        pass
    finally:
        loop_mod._train_epoch = real
    assert (out / "state" / "last.pt").is_file()
    return out


def copy_run(src: Path, dst: Path) -> Path:
    """A copy whose large files (weights, state: medtl replaces them, never writes them in
    place) are hard links; small files are copied (train.log is appended to)."""
    def copy(a, b):
        return os.link(a, b) if os.path.getsize(a) > (1 << 20) else shutil.copy2(a, b)

    shutil.copytree(src, dst, copy_function=copy)
    return dst


def resume_cases(b: Builder, per: int) -> list[Case]:
    import pickle

    import torch

    cases: list[Case] = []
    src = interrupted_run(b.root)
    state = (src / "state" / "last.pt").read_bytes()
    argv = lambda out, *more: ["finetune", "-q", "--out", str(out)] + sets(*SYNTH, *TINY, "train.epochs=2", *more)

    def add(tag: str, edit, expect: str, restart: bool = False, names: str | None = "last.pt", protect: bool = True):
        d = b.dir("resume-" + tag)
        run = copy_run(src, d / "run")
        pwned = d / "PWNED"
        edit(run, pwned)
        cases.append(Case("resume", tag, argv(run) + (["--restart"] if restart else []), expect, names,
                          protect=[run] if protect and expect == "bad" else [], payload=pwned,
                          volatile=("train.log",)))

    def write_state(data):
        def edit(run: Path, pwned: Path):
            (run / "state" / "last.pt").unlink()
            (run / "state" / "last.pt").write_bytes(data(pwned) if callable(data) else data)
        return edit

    for k in range(per):
        cut = b.rng.randrange(0, len(state) - 1)
        add(f"state-truncated{cut}", write_state(state[:cut]), "bad")
    add("state-empty", write_state(b""), "bad")
    add("state-random", write_state(bytes(b.nrng.integers(0, 256, 4000, dtype=np.uint8))), "bad")
    add("state-raw-pickle-payload", write_state(lambda p: pickle.dumps({"model": _Evil(p)})), "bad")

    def other_kind(run: Path, pwned: Path):
        (run / "state" / "last.pt").unlink()
        torch.save({"format": "something-else", "epoch": 1}, run / "state" / "last.pt")
    add("state-other-kind", other_kind, "bad")

    def other_settings(run: Path, pwned: Path):
        obj = torch.load(run / "state" / "last.pt", weights_only=True)
        obj["settings"]["train"]["lr"] = 123.0
        (run / "state" / "last.pt").unlink()
        torch.save(obj, run / "state" / "last.pt")
    add("state-other-settings", other_settings, "bad")

    def garbage_config(run: Path, pwned: Path):
        (run / "config.yaml").unlink()
        (run / "config.yaml").write_bytes(b"\xff\xfe: [unclosed\n")
    add("config-garbage", garbage_config, "bad", names="config.yaml")

    d = b.dir("resume-other-config")
    run = copy_run(src, d / "run")
    cases.append(Case("resume", "other config", ["finetune", "-q", "--out", str(run)]
                      + sets(*SYNTH, *TINY, "train.epochs=2", "train.lr=0.5"), "bad", "train.lr", protect=[run],
                      volatile=("train.log",)))

    def user_file(run: Path, pwned: Path):
        (run / "notes.txt").write_text("my notes\n")
    d = b.dir("resume-restart-user-file")
    run = copy_run(src, d / "run")
    user_file(run, d / "PWNED")
    cases.append(Case("resume", "restart with a user file inside", argv(run) + ["--restart"], "bad", "notes.txt",
                      protect=[run]))

    def legacy_user_file(run: Path, pwned: Path):
        (run / ".medtl-run.json").unlink()
        (run / "sub").mkdir()
        (run / "sub" / "thesis.txt").write_text("chapter 1\n")
    d = b.dir("resume-legacy-user-file")
    run = copy_run(src, d / "run")
    legacy_user_file(run, None)
    for restart in (False, True):
        cases.append(Case("resume", f"legacy folder with a user file{' --restart' if restart else ''}",
                          argv(run) + (["--restart"] if restart else []), "bad", "sub", protect=[run]))

    def marker_garbage(run: Path, pwned: Path):
        (run / ".medtl-run.json").unlink()
        (run / ".medtl-run.json").write_text("{not json")
    add("marker-garbage", marker_garbage, "any", names=None, protect=False)
    add("truncated-state-restart", write_state(state[:1000]), "good", restart=True, names=None)

    def legacy(run: Path, pwned: Path):
        (run / ".medtl-run.json").unlink()
    add("legacy-resume", legacy, "good", names=None)
    return cases


# ----------------------------------------------------------------------------- output paths

def output_cases(b: Builder, per: int, good_run: Path) -> list[Case]:
    cases: list[Case] = []
    d = b.dir("output")
    user = d / "user"
    (user / "sub").mkdir(parents=True)
    (user / "sub" / "thesis.txt").write_text("my thesis\n")
    (user / "config.yaml").write_text("name: mine\n")
    afile = d / "afile.txt"
    afile.write_text("a user's file\n")
    fin = lambda out, *more: ["finetune", "-q", "--out", str(out), *more] + sets(*SYNTH, *TINY)
    for restart in ((), ("--restart",)):
        r = " --restart" if restart else ""
        cases += [
            Case("output", f"finetune --out existing file{r}", fin(afile, *restart), "bad", afile.name, protect=[afile]),
            Case("output", f"finetune --out under a file{r}", fin(afile / "sub", *restart), "bad", afile.name,
                 protect=[afile]),
            Case("output", f"finetune --out /proc/x{r}", fin(Path("/proc/medtl-x"), *restart), "bad", "/proc"),
            Case("output", f"finetune --out user folder with config.yaml{r}", fin(user, *restart), "bad", str(user),
                 protect=[user]),
        ]
    marked = d / "marked"
    marked.mkdir()
    (marked / ".medtl-run.json").write_text(json.dumps({"medtl_version": "0.1.0", "run_id": "x"}))
    (marked / "mine.txt").write_text("mine\n")
    cases.append(Case("output", "finetune --restart marked folder with a user file", fin(marked, "--restart"), "bad",
                      "mine.txt", protect=[marked]))
    empty = d / "empty-user-folder"
    empty.mkdir()
    cases.append(Case("output", "finetune into an empty existing folder", fin(empty), "good"))
    png_out = d / "preview-target"
    png_out.mkdir()
    (png_out / "keep.txt").write_text("keep\n")
    sweep_cfg = d / "sweep.yaml"
    sweep_cfg.write_text("name: tiny\nseeds: 1\nset: {" + ", ".join(f"{k}: {v}" for k, v in
                                                           (x.split("=", 1) for x in SYNTH + TINY)) + "}\narms: {a: {}}\n")
    cases += [
        Case("output", "preview --out a folder", ["data", "preview", "builtin:synthetic", "--out", str(png_out)]
             + sets("data.synthetic_n={train: 8, val: 4, test: 4}"), "bad", png_out.name, protect=[png_out]),
        Case("output", "preview --out an existing text file", ["data", "preview", "builtin:synthetic", "--out",
                                                               str(afile)], "bad", afile.name, protect=[afile]),
        Case("output", "preview --out under a file", ["data", "preview", "builtin:synthetic", "--out",
                                                      str(afile / "x.png")], "bad", afile.name, protect=[afile]),
        Case("output", "preview --out /proc", ["data", "preview", "builtin:synthetic", "--out", "/proc/medtl.png"]
             + sets("data.synthetic_n={train: 8, val: 4, test: 4}", "data.image_size=16"), "bad", "/proc"),
        Case("output", "compare --out existing file", ["compare", str(good_run), "--out", str(afile), "--no-plots",
                                                       "-B", "200"], "bad", afile.name, protect=[afile]),
        Case("output", "compare --out under a file", ["compare", str(good_run), "--out", str(afile / "c"),
                                                      "--no-plots", "-B", "200"], "bad", afile.name, protect=[afile]),
        Case("output", "sweep --out existing file", ["sweep", "-q", "--config", str(sweep_cfg), "--out", str(afile)],
             "bad", afile.name, protect=[afile]),
        Case("output", "sweep --out under a file", ["sweep", "-q", "--config", str(sweep_cfg), "--out",
                                                    str(afile / "s")], "bad", afile.name, protect=[afile]),
        Case("output", "sr train --out a user file", ["sr", "train", "--data", "builtin:synthetic", "--scale", "2",
                                                      "--out", str(afile), "--steps", "2", "--hr-size", "16", "-q"],
             "bad", afile.name, protect=[afile]),
        Case("output", "sr train --restart --out a user file", ["sr", "train", "--data", "builtin:synthetic", "--scale",
                                                                "2", "--out", str(afile), "--steps", "2", "--hr-size",
                                                                "16", "--restart", "-q"], "bad", afile.name,
             protect=[afile]),
        Case("output", "sr eval --model a user file", ["sr", "eval", "--model", str(afile), "--data",
                                                       "builtin:synthetic"], "bad", afile.name, protect=[afile]),
        Case("output", "weights fetch --from a folder", ["weights", "fetch", "resnet18.tv_in1k", "--from", str(user)],
             "bad", str(user.name), protect=[user]),
        Case("output", "data fetch --from a text file", ["data", "fetch", "medmnist:pneumoniamnist", "--from",
                                                         str(afile)], "bad", afile.name, protect=[afile]),
        Case("output", "data check a user folder", ["data", "check", str(user)], "bad", str(user), protect=[user]),
        Case("output", "track --uri a user file", ["track", str(good_run), "--uri", str(afile)], "bad", afile.name,
             protect=[afile]),
        Case("output", "robustness-report --out under a file", ["robustness-report", str(good_run), "--out",
                                                                str(afile / "r"), "--quick"], "bad", afile.name,
             protect=[afile]),
    ]
    return cases


# ----------------------------------------------------------------------------- usage

def usage_cases(b: Builder, per: int) -> list[Case]:
    d = b.dir("usage")
    argvs = [
        ["nosuch"], ["probe", "shape-bias", str(d)], ["finetune", "--no-such-flag"], ["compare"],
        ["finetune", "--seed", "abc"], ["data", "check"], ["data", "check", str(d), "--workers", "0"],
        ["data", "preview", "x.png"], ["sweep", "--config", "x.yaml", "--out", str(d / "s"), "--seeds", "-3"],
        ["sweep", "--config", "x.yaml", "--out", str(d / "s"), "--seeds", "0"], ["weights", "fetch"],
        ["sr", "train", "--data", "x"], ["data", "preview", "builtin:synthetic", "--out", str(d / "p.png"), "--n", "x"],
        ["compare", str(d), "--out", str(d / "c"), "--alpha", "2"], ["finetune", "--set"],
        ["robustness-report"], ["track"], ["data", "nosuch"],
    ]
    return [Case("usage", " ".join(a[:3]), a, "bad", None) for a in argvs]


# ----------------------------------------------------------------------------- running

class _CurrentStderr(logging.StreamHandler):
    """medtl's log handler writing to whatever sys.stderr is now (each case captures it)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def _one_line_error(err: str) -> str | None:
    lines = [ln for ln in err.splitlines() if ln.startswith("medtl: error:")]
    return lines[0] if len(lines) == 1 else None


def classify(case: Case, rc, out: str, err: str, exc: str | None, before: dict, after: dict) -> str:
    text = out + err
    if exc is not None or "Traceback (most recent call last)" in text or rc not in (0, 1, 2):
        return "traceback"
    if before != after or (case.payload is not None and case.payload.exists()):
        return "lost"
    if any(s in text for s in case.secrets):
        return "silent"  # an identifying header value was printed
    if case.expect in ("good", "good+warning"):
        if rc != 0:
            return "wrong"
        if case.expect == "good+warning" and (case.names or "warning") not in text:
            return "silent"  # legal but odd, and nothing said
        return "clean"
    if rc == 0:
        return "silent" if case.expect == "bad" else "clean"
    if any(p.exists() for p in case.no_output):
        return "silent"  # half-written output after a refusal
    if rc == 1 and case.argv[:2] == ["data", "check"]:
        named = case.names is None or case.names in out
    elif ("Usage:" in err and "Error" in err) or err.strip().splitlines()[-1:] and \
            err.strip().splitlines()[-1].startswith("Error: "):
        return "clean" if rc == 2 else "traceback"  # click's usage message
    else:
        line = _one_line_error(err)
        if line is None:
            return "silent"  # no single clear error line
        named = case.names is None or case.names in line
    return "clean" if named or case.expect == "any" else "silent"


def run_case(case: Case, sentinels: list[Path], cache: Path) -> tuple[str, dict]:
    from medtl.cli import run

    os.environ["MEDTL_CACHE"] = str(cache)
    shutil.rmtree(cache, ignore_errors=True)
    watch = sentinels + case.protect
    before = snapshot(watch, case.volatile)
    out, err = io.StringIO(), io.StringIO()
    exc = None
    rc = None
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
        warnings.simplefilter("default")
        try:
            rc = run(case.argv)
        except BaseException:  # noqa: BLE001 - an escaped exception is the finding
            exc = traceback.format_exc()
    after = snapshot(watch, case.volatile)
    verdict = classify(case, rc, out.getvalue(), err.getvalue(), exc, before, after)
    return verdict, {"family": case.family, "name": case.name, "expect": case.expect, "rc": rc, "verdict": verdict,
                     "seconds": round(time.perf_counter() - t0, 3), "stderr": (exc or err.getvalue())[-600:],
                     "stdout": out.getvalue()[-400:]}


def build_cases(b: Builder, families: list[str], per: int, good_run: Path) -> list[Case]:
    makers = {"dicom": dicom_cases, "image": image_cases, "csv": csv_cases, "npz": npz_cases,
              "config": config_cases, "weights": weights_cases, "resume": resume_cases,
              "output": lambda b, per: output_cases(b, per, good_run), "usage": usage_cases}
    cases = []
    for fam in families:
        cases += makers[fam](b, per)
    return cases


def finished_run(root: Path) -> Path:
    from medtl.config import build_config
    from medtl.train import finetune

    out = root / "fixtures" / "finished"
    finetune(build_config({}, SYNTH + TINY), out, progress=False)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--families", default=",".join(FAMILIES))
    ap.add_argument("--per-family", type=int, default=6, help="random mutations per base and family")
    ap.add_argument("--sample", type=int, default=0, help="run only this many cases per family (seeded); 0: all")
    ap.add_argument("--keep", type=Path, default=None, help="work in this folder and keep it")
    ap.add_argument("--json", type=Path, default=None, help="write every case's result here")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args(argv)
    families = [f for f in args.families.split(",") if f]
    unknown = set(families) - set(FAMILIES)
    if unknown:
        ap.error(f"unknown families: {', '.join(sorted(unknown))}")
    summary = fuzz(families, args.seed, args.per_family, args.keep, args.verbose, sample=args.sample)
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    return 0 if summary["ok"] else 1


def fuzz(families: list[str], seed: int = 0, per: int = 6, keep: Path | None = None, verbose: bool = False,
         report=print, sample: int = 0) -> dict:
    """Build and run the cases (``sample``: a seeded sample of that many per family); print the
    summary; return it (``ok``: nothing failed)."""
    t0 = time.perf_counter()
    handler = _CurrentStderr()
    handler._medtl = True  # medtl's setup_logging keeps it (and only sets its level)
    handler.setFormatter(logging.Formatter("medtl: %(message)s"))
    medtl_log = logging.getLogger("medtl")
    others = [h for h in medtl_log.handlers if getattr(h, "_medtl", False)]  # bound to an older stderr
    for h in others:
        medtl_log.removeHandler(h)
    medtl_log.addHandler(handler)
    saved_env = {k: os.environ.get(k) for k in ("MEDTL_CACHE", "TORCH_HOME", "MEDTL_OFFLINE")}
    tmp = None
    try:
        root = keep or Path(tmp := tempfile.mkdtemp(prefix="medtl-fuzz-"))
        root.mkdir(parents=True, exist_ok=True)
        os.environ.update(MEDTL_CACHE=str(root / "cache"), TORCH_HOME=str(root / "torch"), MEDTL_OFFLINE="1")
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            good_run = finished_run(root)
            user = root / "fixtures" / "user-folder"
            (user / "sub").mkdir(parents=True)
            (user / "sub" / "thesis.txt").write_text("chapter 1\n")
            b = Builder(root, seed)
            cases = build_cases(b, families, per, good_run)
            if sample:
                pick = random.Random(seed)
                cases = [c for fam in families for c in (lambda cs: pick.sample(cs, min(sample, len(cs))))(
                    [c for c in cases if c.family == fam])]
        results = []
        for case in cases:
            verdict, rec = run_case(case, [good_run, user], root / "case-cache")
            results.append(rec)
            if verdict != "clean" or verbose:
                report(f"{verdict:9s} {case.family:7s} {case.name}  (rc={rec['rc']}, expect {case.expect})"
                       + ("" if verdict == "clean" else "\n          " + rec["stderr"].strip().replace("\n", "\n          ")))
    finally:
        medtl_log.removeHandler(handler)
        for h in others:
            medtl_log.addHandler(h)
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    counts = {v: sum(r["verdict"] == v for r in results) for v in ("clean", "traceback", "silent", "lost", "wrong")}
    by_family = {}
    for r in results:
        fam = by_family.setdefault(r["family"], {"cases": 0, "bad": 0, "good": 0, "any": 0, "failed": 0})
        fam["cases"] += 1
        fam[r["expect"].split("+")[0]] += 1
        fam["failed"] += r["verdict"] != "clean"
    wall = time.perf_counter() - t0
    report(f"{'family':8s} {'cases':>5s} {'bad':>4s} {'good':>4s} {'any':>4s} {'failed':>6s}")
    for fam, c in by_family.items():
        report(f"{fam:8s} {c['cases']:5d} {c['bad']:4d} {c['good']:4d} {c['any']:4d} {c['failed']:6d}")
    report(f"seed={seed} per_family={per} shared={'yes' if SHARED.is_dir() else 'no (generated inputs)'} "
           f"wall={wall:.1f}s")
    report(f"cases={len(results)} clean={counts['clean']} traceback={counts['traceback']} silent={counts['silent']} "
           f"lost={counts['lost']}")
    report(f"wrong={counts['wrong']} (good inputs refused)")
    ok = counts["clean"] == len(results)
    return {"ok": ok, "cases": len(results), **counts, "wall_s": round(wall, 1), "by_family": by_family,
            "results": results}


if __name__ == "__main__":
    sys.exit(main())
