"""Real data in ../shared/data (skipped when absent)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from medtl.config import DataConfig
from medtl.data import check_dataset, load_dataset, read_image
from medtl.data.dicom import dicom_info
from medtl.data.preview import preview_images

pytestmark = pytest.mark.shared

# from data/kermany_cxr224/SOURCE.txt
KERMANY = {"train": {"NORMAL": 1341, "PNEUMONIA": 3875}, "test": {"NORMAL": 234, "PNEUMONIA": 390}}
DICOMS = [("DX_chest_PA_966_fixed_j2k.dcm", "DX_chest_PA_966_fixed_uncompressed.dcm"),
          ("CR_chest_PA_RG1_J2KI.dcm", "CR_chest_PA_RG1_uncompressed.dcm")]


@pytest.fixture(scope="module")
def kermany_bundle(shared_dir, tmp_path_factory):
    cache = tmp_path_factory.mktemp("kcache")
    return load_dataset(DataConfig(path=str(shared_dir / "data/kermany_cxr224"), image_size=32, on_leak="warn"),
                        cache_dir=cache)


@pytest.mark.parametrize("compressed,plain", DICOMS)
def test_real_dicom_jpeg2000_matches_uncompressed(shared_dir, compressed, plain):
    import pydicom

    d = shared_dir / "data/dicom"
    a = read_image(d / compressed)
    b = read_image(d / "uncompressed" / plain)
    assert a.dtype == np.float32 and a.shape == b.shape and a.shape[0] > 1800
    np.testing.assert_array_equal(a, b)
    assert 0.0 <= a.min() and a.max() <= 1.0 and a.std() > 0.05
    # MONOCHROME1: the model input is negatively correlated with the stored values
    stored = pydicom.dcmread(d / "uncompressed" / plain).pixel_array.astype(float)
    imgs, _, _ = preview_images(DataConfig(path=str(d / compressed), image_size=64))
    from PIL import Image

    small = np.asarray(Image.fromarray(stored.astype(np.float32), "F").resize((64, 64), Image.BILINEAR))
    assert np.corrcoef(imgs[0].ravel().astype(float), small.ravel())[0, 1] < -0.9
    info = dicom_info(d / compressed)
    assert info["PhotometricInterpretation"] == "MONOCHROME1" and "JPEG 2000" in info["TransferSyntax"]


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_real_dicom_reports_leak_no_patient_fields(shared_dir):
    import pydicom

    d = shared_dir / "data/dicom"
    report = json.dumps(check_dataset(str(d)))
    assert '"files": 2' in report
    for f in ("DX_chest_PA_966_fixed_j2k.dcm", "CR_chest_PA_RG1_J2KI.dcm"):
        ds = pydicom.dcmread(d / f, stop_before_pixels=True)
        for kw in ("PatientName", "PatientID", "PatientBirthDate", "StudyDate", "InstitutionName",
                   "AccessionNumber", "StudyInstanceUID"):
            val = str(ds.get(kw) or "").strip()
            if len(val) >= 3:
                assert val not in report, kw


def test_real_pneumoniamnist(shared_dir, data_cache):
    p = shared_dir / "data/pneumoniamnist/pneumoniamnist_reconstructed.npz"
    b = load_dataset(DataConfig(path=str(p), image_size=28), cache_dir=data_cache)
    assert b.name == "pneumoniamnist" and b.classes == ["normal", "pneumonia"]
    assert [len(b.splits[s]) for s in ("train", "val", "test")] == [4708, 524, 624]
    assert np.bincount(b.splits["train"].labels).tolist() == [1214, 3494]
    assert b.splits["train"].images.shape == (4708, 28, 28)


def test_real_kermany_folder(kermany_bundle):
    b = kermany_bundle
    assert b.classes == ["NORMAL", "PNEUMONIA"] and b.format == "folder"
    for s, want in KERMANY.items():
        got = {c: 0 for c in b.classes}
        for split in (["train", "val"] if s == "train" else ["test"]):
            for k, c in enumerate(b.classes):
                got[c] += int((b.splits[split].labels == k).sum())
        assert got == want, s
    assert all(i.startswith("train/") for i in b.splits["val"].ids)
    assert not set(b.splits["train"].patients) & set(b.splits["val"].patients)
    assert 0.07 < len(b.splits["val"]) / 5216 < 0.13
    assert b.splits["train"].images.shape[1:] == (32, 32)
    assert any("30 groups of byte-identical" in n for n in b.notes)
    # the published split shares 170 patients between train and test (personN and, with the
    # default patient regex, NORMAL IM-NNNN ids): recorded, and marked under on_leak: warn
    assert b.leaks["status"] == "leaky"
    before = b.leaks["before"]["patients"]
    assert before["train-test"] + before["val-test"] == 170 and before["train-val"] == 0
    normal_ids = {p for p in b.splits["train"].patients if "IM-" in str(p)}
    assert normal_ids and all(str(p).startswith(("IM-", "NORMAL2-IM-")) for p in normal_ids)


def test_real_kermany_leak_policies(shared_dir, tmp_path):
    from medtl.errors import DataError

    root = str(shared_dir / "data/kermany_cxr224")
    with pytest.raises(DataError, match=r"the test split shares 170 patients .*data.on_leak: drop_train"):
        load_dataset(DataConfig(path=root, image_size=16), cache_dir=tmp_path)
    b = load_dataset(DataConfig(path=root, image_size=16, on_leak="drop_train"), cache_dir=tmp_path)
    assert len(b.splits["test"]) == 624  # the published test split, unchanged
    d = b.leaks["dropped"]
    assert d["train"] + d["val"] + len(b.splits["train"]) + len(b.splits["val"]) == 5216
    test_patients = set(b.splits["test"].patients)
    assert not test_patients & (set(b.splits["train"].patients) | set(b.splits["val"].patients))
    assert b.leaks["status"] == "dropped" and b.leaks["after"]["patients"]["train-test"] == 0


def test_real_kermany_check_and_manifest(shared_dir, kermany_bundle, tmp_path):
    root = shared_dir / "data/kermany_cxr224"
    r = check_dataset(str(root), DataConfig(image_size=32))
    assert r["duplicates"]["groups"] == 30 and r["leaks"]["bytes"]["count"] == 0
    assert r["image_size"]["most_common_hw"] == [224, 224]
    assert r["counts"]["test"]["by_class"] == KERMANY["test"]
    m = load_dataset(DataConfig(path=str(root / "manifest.csv"), image_size=32, on_leak="warn"), cache_dir=tmp_path)
    assert m.format == "csv" and m.classes == ["NORMAL", "PNEUMONIA"]  # 'label' chosen over 'y'
    assert sorted(m.splits["test"].ids) == sorted(kermany_bundle.splits["test"].ids)
    assert len(m.splits["train"]) + len(m.splits["val"]) == 5216
    assert not set(m.splits["train"].patients) & set(m.splits["val"].patients)


def test_finetune_on_the_published_kermany_split_stops_with_one_line(shared_dir, tmp_path, capsys, monkeypatch):
    from medtl.cli import run

    monkeypatch.setenv("MEDTL_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run"
    rc = run(["finetune", "--set", f"data.path={shared_dir / 'data/kermany_cxr224'}", "--set", "data.image_size=16",
              "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and not out.exists()
    assert err.startswith("medtl: error:") and "\n" not in err
    assert "shares 170 patients (train-test 154, val-test 16)" in err and "data.on_leak: drop_train" in err
