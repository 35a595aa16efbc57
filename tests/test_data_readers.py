"""Readers: folders, CSV manifests, DICOM, MedMNIST npz, corrupt inputs, resize modes."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from medtl.config import DataConfig
from medtl.data import check_dataset, detect_format, load_dataset, read_image
from medtl.data.images import load_image_resized
from medtl.errors import DataError
from _data_helpers import SECRET_ID, SECRET_INST, SECRET_NAME, gradient, make_class_folder, make_dicom, write_png

# ------------------------------------------------------------------ formats and folders

def test_detect_format(tmp_path):
    assert detect_format("builtin:synthetic") == "synthetic"
    root = make_class_folder(tmp_path / "f", 2)
    assert detect_format(str(root)) == "folder"
    (tmp_path / "m.csv").write_text("path,label\n")
    assert detect_format(str(tmp_path / "m.csv")) == "csv"
    np.savez(tmp_path / "x.npz", train_images=np.zeros((2, 4, 4), np.uint8), train_labels=np.zeros((2, 1)))
    assert detect_format(str(tmp_path / "x.npz")) == "npz"
    assert detect_format(str(make_dicom(tmp_path / "one.dcm", gradient()))) == "dicom"
    with pytest.raises(DataError, match="no such file"):
        detect_format(str(tmp_path / "missing"))
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match="notes.txt"):
        detect_format(str(tmp_path / "notes.txt"))


def test_folder_class_layout_makes_patient_level_val_and_test(tmp_path, data_cache):
    root = make_class_folder(tmp_path / "ds", n_per_class=20)
    b = load_dataset(DataConfig(path=str(root), image_size=32), cache_dir=data_cache)
    assert b.format == "folder" and b.classes == ["a", "b"] and not b.multilabel
    assert sum(len(s) for s in b.splits.values()) == 40
    pats = {k: set(s.patients.tolist()) for k, s in b.splits.items()}
    assert all(len(s) > 0 for s in b.splits.values())
    assert not (pats["train"] & pats["val"]) and not (pats["train"] & pats["test"]) and not (pats["val"] & pats["test"])
    assert pats["train"] <= {f"person{k}" for k in range(20)}  # regex-derived patient ids
    tr = b.splits["train"]
    assert tr.images.dtype == np.uint8 and tr.images.shape[1:] == (32, 32)
    assert tr.labels.dtype == np.int64
    # class a is dark, class b bright: labels follow folders
    assert tr.images[tr.labels == 0].mean() < 80 and tr.images[tr.labels == 1].mean() > 160
    assert all(i.startswith(("a/", "b/")) for i in tr.ids)
    assert any("test split made" in n for n in b.notes) and any("val split carved" in n for n in b.notes)


def test_folder_split_layout_carves_val_from_train_only(tmp_path, data_cache):
    root = make_class_folder(tmp_path / "ds", n_per_class=16, split_layout=True)
    b = load_dataset(DataConfig(path=str(root), image_size=16), cache_dir=data_cache)
    assert all(i.startswith("test/") for i in b.splits["test"].ids) and len(b.splits["test"]) == 32
    assert all(i.startswith("train/") for i in b.splits["val"].ids) and len(b.splits["val"]) > 0
    assert not set(b.splits["train"].patients) & set(b.splits["val"].patients)


def test_images_without_patient_match_are_their_own_patient(tmp_path, data_cache):
    root = make_class_folder(tmp_path / "ds", n_per_class=10, patients=False)
    b = load_dataset(DataConfig(path=str(root), image_size=16), cache_dir=data_cache)
    allp = np.concatenate([s.patients for s in b.splits.values()])
    assert len(set(allp.tolist())) == 20


def test_corrupt_png_is_one_line_data_error(tmp_path, data_cache):
    root = make_class_folder(tmp_path / "ds", n_per_class=4)
    bad = root / "a" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    with pytest.raises(DataError) as ei:
        load_dataset(DataConfig(path=str(root), image_size=16), cache_dir=data_cache)
    msg = str(ei.value)
    assert msg.startswith(str(bad)) and "cannot decode image" in msg and "\n" not in msg
    with pytest.raises(DataError, match="cannot decode image"):
        read_image(bad)
    # check reports it instead of failing
    rep = check_dataset(str(root))
    assert rep["unreadable"]["count"] == 1 and rep["unreadable"]["examples"][0]["id"] == "a/broken.png"


def test_resize_modes(tmp_path):
    arr = np.full((20, 40), 255, np.uint8)
    arr[:, :10] = 0  # left quarter black
    p = tmp_path / "wide.png"
    Image.fromarray(arr).save(p)
    squash = load_image_resized(p, 16, "squash")
    crop = load_image_resized(p, 16, "crop")
    pad = load_image_resized(p, 16, "pad")
    assert squash.shape == crop.shape == pad.shape == (16, 16)
    assert squash[:, :3].max() < 20 and squash[:, 5:].min() > 235   # whole width kept
    assert crop[:, 2:].min() > 235 and crop.mean() > 245            # centre square only
    assert pad[:3].max() == 0 and pad[-3:].max() == 0 and pad[8, 8] > 235  # letterboxed


# ------------------------------------------------------------------ CSV manifests

def _csv(path, header, rows):
    path.write_text(",".join(header) + "\n" + "".join(",".join(map(str, r)) + "\n" for r in rows))
    return path


def test_csv_single_label_prefers_label_column_and_uses_split_and_patient(tmp_path, data_cache):
    rows = []
    for i in range(24):
        cls = "NORMAL" if i % 2 else "PNEUMONIA"
        write_png(tmp_path / "img" / f"{i}.png", 40 if cls == "NORMAL" else 200, seed=i)
        split = "test" if i >= 18 else "train"
        rows.append([f"img/{i}.png", split, cls, int(cls == "PNEUMONIA"), f"p{i // 2}"])
    csv = _csv(tmp_path / "manifest.csv", ["path", "split", "label", "y", "patient"], rows)
    b = load_dataset(DataConfig(path=str(csv), image_size=16), cache_dir=data_cache)
    assert b.format == "csv" and b.classes == ["NORMAL", "PNEUMONIA"]
    assert len(b.splits["test"]) == 6 and set(b.splits["test"].ids) == {f"img/{i}.png" for i in range(18, 24)}
    assert not set(b.splits["train"].patients) & set(b.splits["val"].patients)
    assert b.name == tmp_path.name  # generic 'manifest' stem -> folder name
    assert any("column(s) label" in n for n in b.notes)


def test_csv_integer_labels_and_valid_split_alias(tmp_path, data_cache):
    rows = []
    for i in range(12):
        write_png(tmp_path / f"{i}.png", 100, seed=i)
        rows.append([f"{i}.png", i % 2, ["train", "valid", "test"][i % 3]])
    csv = _csv(tmp_path / "labels_int.csv", ["filename", "target", "fold"], rows)
    b = load_dataset(DataConfig(path=str(csv), image_size=8), cache_dir=data_cache)
    assert b.classes == ["0", "1"] and len(b.splits["val"]) == 4
    assert b.splits["val"].labels.tolist() == [1, 0, 1, 0]


def test_csv_nih_multilabel(tmp_path, data_cache):
    findings = ["No Finding", "Effusion|Atelectasis", "Effusion", "Atelectasis", "No Finding", "Effusion"] * 4
    rows = []
    for i, f in enumerate(findings):
        write_png(tmp_path / "images" / f"{i:08d}_000.png", 90, seed=i)
        rows.append([f"{i:08d}_000.png", f, 1000 + i // 2])
    csv = _csv(tmp_path / "Data_Entry.csv", ["Image Index", "Finding Labels", "Patient ID"], rows)
    b = load_dataset(DataConfig(path=str(csv), image_size=8), cache_dir=data_cache)
    assert b.multilabel and b.classes == ["Atelectasis", "Effusion"]
    ids = sum((s.ids for s in b.splits.values()), [])
    labels = np.concatenate([s.labels for s in b.splits.values()])
    assert labels.dtype == np.float32 and labels.shape == (24, 2)
    by_id = dict(zip(ids, labels.tolist()))
    assert by_id["00000000_000.png"] == [0, 0] and by_id["00000001_000.png"] == [1, 1]
    assert by_id["00000002_000.png"] == [0, 1]
    pats = {k: set(s.patients.tolist()) for k, s in b.splits.items()}
    assert not pats["train"] & pats["val"] and not pats["train"] & pats["test"]
    rep = check_dataset(str(csv))
    assert rep["multilabel"] and "Effusion" in rep["counts"]["train"]["by_class"]


@pytest.mark.parametrize("uncertain,expected", [("zeros", 0.0), ("ones", 1.0)])
def test_csv_chexpert_binary_columns(tmp_path, data_cache, uncertain, expected):
    base = tmp_path / "CheXpert-v1.0-small"
    rows = []
    for i in range(12):
        rel = f"CheXpert-v1.0-small/train/patient{i // 2:05d}/study1/view{i % 2 + 1}_frontal.jpg"
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((10, 10), 120 + i, np.uint8)).save(p)  # distinct images
        rows.append([rel, "Female", ["1.0", "0.0", "-1.0", ""][i % 4], ["", "1.0", "0.0", "-1.0"][i % 4]])
    csv = _csv(base / "train.csv", ["Path", "Sex", "Edema", "Effusion"], rows)
    cfg = DataConfig(path=str(csv), image_size=8, label_columns=["Edema", "Effusion"], uncertain=uncertain)
    b = load_dataset(cfg, cache_dir=data_cache)
    assert b.multilabel and b.classes == ["Edema", "Effusion"]
    by_id = dict(zip(sum((s.ids for s in b.splits.values()), []),
                     np.concatenate([s.labels for s in b.splits.values()]).tolist()))
    assert by_id[rows[0][0]] == [1.0, 0.0]        # 1 / blank
    assert by_id[rows[2][0]] == [expected, 0.0]   # -1 / 0
    assert by_id[rows[3][0]] == [0.0, expected]   # blank / -1
    allp = np.concatenate([s.patients for s in b.splits.values()])
    assert set(allp.tolist()) == {f"patient{k:05d}" for k in range(6)}


def test_csv_missing_label_column(tmp_path):
    write_png(tmp_path / "a.png", 10)
    csv = _csv(tmp_path / "bad.csv", ["path", "split"], [["a.png", "train"]])
    with pytest.raises(DataError) as ei:
        load_dataset(DataConfig(path=str(csv)))
    msg = str(ei.value)
    assert str(csv) in msg and "'label'" in msg and "columns present: path, split" in msg and "\n" not in msg
    with pytest.raises(DataError, match=r"missing label column\(s\) 'Edema'"):
        load_dataset(DataConfig(path=str(csv), label_columns=["Edema", "Effusion"]))


def test_csv_missing_image_file(tmp_path):
    csv = _csv(tmp_path / "m.csv", ["path", "label"], [["nope.png", "x"], ["nope2.png", "y"]])
    with pytest.raises(DataError, match=r"2 of 2 image files not found, e.g. 'nope.png'"):
        load_dataset(DataConfig(path=str(csv)))


# ------------------------------------------------------------------ DICOM

def test_dicom_monochrome1_rescale_and_window(tmp_path):
    arr = gradient()
    m1 = read_image(make_dicom(tmp_path / "m1.dcm", arr, "MONOCHROME1"))
    m2 = read_image(make_dicom(tmp_path / "m2.dcm", arr, "MONOCHROME2"))
    assert m1.dtype == np.float32 and m1.shape == arr.shape
    np.testing.assert_allclose(m1, 1.0 - m2, atol=1e-6)         # MONOCHROME1 inverted
    assert m2[:, 0].mean() < m2[:, -1].mean() and m1[:, 0].mean() > m1[:, -1].mean()
    assert m2.min() == 0.0 and m2.max() == 1.0                    # no window: min-max
    # modality = 2 * stored - 100; window centre 1000 width 400 -> [800, 1200] maps to [0, 1]
    stored = np.array([[400, 550, 700, 450]], np.uint16)          # modality 700, 1000, 1300, 800
    w = read_image(make_dicom(tmp_path / "w.dcm", stored, "MONOCHROME2", 2, -100, 1000, 400))
    np.testing.assert_allclose(w[0], [0.0, 0.5, 1.0, 0.0], atol=0.01)
    w1 = read_image(make_dicom(tmp_path / "w1.dcm", stored, "MONOCHROME1", 2, -100, 1000, 400))
    np.testing.assert_allclose(w1[0], [1.0, 0.5, 0.0, 1.0], atol=0.01)


def test_dicom_truncated_and_header_privacy(tmp_path):
    good = make_dicom(tmp_path / "good.dcm", gradient())
    data = good.read_bytes()
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(data[:-200])
    with pytest.raises(DataError) as ei:
        read_image(cut)
    msg = str(ei.value)
    assert msg.startswith(str(cut)) and "\n" not in msg and "truncated" in msg
    head = tmp_path / "head.dcm"
    head.write_bytes(data[:180])
    with pytest.raises(DataError) as ei:
        read_image(head)
    assert str(head) in str(ei.value)
    for m in (msg, str(ei.value)):
        assert SECRET_NAME not in m and SECRET_ID not in m
    rep = json.dumps(check_dataset(str(good)))
    for secret in (SECRET_NAME, "Doe", SECRET_ID, SECRET_INST, "19700101"):
        assert secret not in rep
    assert "MONOCHROME1" in rep and "Explicit VR Little Endian" in rep


def test_dicom_compressed_without_decoder(tmp_path, monkeypatch):
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEG2000Lossless

    from medtl.data import dicom as dmod

    p = make_dicom(tmp_path / "j2k.dcm", gradient())
    import pydicom

    ds = pydicom.dcmread(p)
    ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
    ds.PixelData = encapsulate([b"\x00" * 64])
    ds["PixelData"].VR = "OB"
    ds.save_as(p, enforce_file_format=True)
    with pytest.raises(DataError, match="JPEG 2000") as ei:  # a decoder exists but the data is garbage
        read_image(p)
    assert str(p) in str(ei.value)
    monkeypatch.setattr(dmod, "_decoder_available", lambda ts: False)
    with pytest.raises(DataError) as ei:
        read_image(p)
    msg = str(ei.value)
    assert str(p) in msg and "JPEG 2000 Image Compression (Lossless Only)" in msg and "pip install pylibjpeg" in msg


def test_dicom_in_class_folders(tmp_path, data_cache):
    for cls, (lo, hi) in (("a", (0, 1000)), ("b", (3000, 4000))):
        for i in range(6):
            make_dicom(tmp_path / "ds" / cls / f"person{i}_{cls}.dcm", gradient(lo=lo, hi=hi), "MONOCHROME2")
    b = load_dataset(DataConfig(path=str(tmp_path / "ds"), image_size=8), cache_dir=data_cache)
    assert sum(len(s) for s in b.splits.values()) == 12 and b.classes == ["a", "b"]


# ------------------------------------------------------------------ MedMNIST npz

def test_npz_medmnist_layout(tmp_path, data_cache):
    rng = np.random.default_rng(0)
    p = tmp_path / "pneumoniamnist.npz"
    np.savez(p, **{f"{s}_images": rng.integers(0, 255, (n, 28, 28), dtype=np.uint8) for s, n in
                   (("train", 30), ("val", 6), ("test", 8))},
             **{f"{s}_labels": rng.integers(0, 2, (n, 1)) for s, n in (("train", 30), ("val", 6), ("test", 8))})
    b = load_dataset(DataConfig(path=str(p), image_size=28), cache_dir=data_cache)
    assert b.name == "pneumoniamnist" and b.classes == ["normal", "pneumonia"] and b.format == "npz"
    assert [len(b.splits[s]) for s in ("train", "val", "test")] == [30, 6, 8]
    assert b.splits["train"].labels.shape == (30,) and b.splits["train"].labels.dtype == np.int64
    assert b.splits["val"].ids[2] == "npz:val:2"
    with np.load(p) as z:
        np.testing.assert_array_equal(b.splits["test"].images, z["test_images"])
    assert len(set(np.concatenate([s.patients for s in b.splits.values()]).tolist())) == 44


def test_npz_rgb_without_val(tmp_path, data_cache):
    rng = np.random.default_rng(1)
    p = tmp_path / "bloodmnist.npz"
    rgb = rng.integers(0, 255, (40, 28, 28, 3), dtype=np.uint8)
    np.savez(p, train_images=rgb, train_labels=rng.integers(0, 3, (40, 1)),
             test_images=rgb[:5], test_labels=np.zeros((5, 1), int))
    b = load_dataset(DataConfig(path=str(p), image_size=14, on_leak="warn"), cache_dir=data_cache)  # repeated bytes
    assert b.classes == ["0", "1", "2"] and b.splits["train"].images.shape[1:] == (14, 14)
    assert len(b.splits["val"]) > 0 and len(b.splits["train"]) + len(b.splits["val"]) == 40
    assert all(i.startswith("npz:train:") for i in b.splits["val"].ids)
    with pytest.raises(DataError, match="train_images"):
        np.savez(tmp_path / "empty.npz", x=np.zeros(3))
        load_dataset(DataConfig(path=str(tmp_path / "empty.npz")), cache_dir=data_cache)
