"""Public chest X-ray datasets by name in their published layouts (medtl.data.public, registry
layout 'manifest'): each is written as a tiny fixture (16 px images, the CSVs and lists with the
published column names) and loaded through medtl.data.load_dataset by name, via `medtl data fetch
NAME --from DIR` or the MEDTL_DATASET_<NAME> override.  Nothing is downloaded."""
from __future__ import annotations

import csv
import gzip
import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medtl.cli import run
from medtl.config import DataConfig
from medtl.data import load_dataset
from medtl.data import registry as reg
from medtl.data.public import CHEXPERT_LABELS, NIH_LABELS
from medtl.errors import ConfigError, DataError
from _data_helpers import gradient, make_dicom, write_png


@pytest.fixture()
def env(tmp_path, monkeypatch) -> Path:
    """A private MEDTL_CACHE and no dataset overrides."""
    monkeypatch.setenv("MEDTL_CACHE", str(tmp_path / "medtl-cache"))
    for name in reg.list_datasets():
        monkeypatch.delenv(reg.env_var(name), raising=False)
    return tmp_path


def load(name: str, tmp: Path, **data):
    cfg = DataConfig(**{"path": name, "image_size": 16, "cache": False, "on_leak": "error", **data})
    return load_dataset(cfg, cache_dir=tmp / "decoded")


def write_csv(path: Path, columns: list[str], rows: list[dict], gz: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({c: r.get(c, "") for c in columns})
    data = buf.getvalue().encode()
    path.write_bytes(gzip.compress(data, mtime=0) if gz else data)
    return path


def write_jpeg(path: Path, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(seed).integers(0, 255, (16, 16), dtype=np.uint8)
    Image.fromarray(arr, "L").save(path, quality=95)
    return path


def cli(args, capsys) -> tuple[int, str, str]:
    rc = run(args)
    out, err = capsys.readouterr()
    return rc, out, err


def error_lines(err: str) -> list[str]:
    """The error lines of a command's stderr (progress and log lines, present when an earlier test
    set up medtl's log, are not errors)."""
    return [line for line in err.splitlines() if line.startswith("medtl: error:")]


def all_ids(bundle) -> dict[str, list[str]]:
    return {s: list(bundle.splits[s].ids) for s in ("train", "val", "test")}


# ------------------------------------------------------------------ NIH ChestX-ray14

NIH_FINDINGS = ["Cardiomegaly", "Effusion|Mass", "No Finding", "Atelectasis|Pneumothorax"]


def nih_fixture(root: Path) -> Path:
    cols = ["Image Index", "Finding Labels", "Follow-up #", "Patient ID", "Patient Age", "Patient Gender",
            "View Position", "OriginalImage[Width", "Height]", "OriginalImagePixelSpacing[x", "y]"]
    rows, trainval, test = [], [], []
    for p in range(1, 13):
        for k in range(2):
            name = f"{p:08d}_{k:03d}.png"
            write_png(root / "images" / name, 60 + 10 * k, seed=p * 10 + k)
            rows.append({"Image Index": name, "Finding Labels": NIH_FINDINGS[(p + k) % 4], "Follow-up #": k,
                         "Patient ID": p, "Patient Age": 50, "Patient Gender": "F", "View Position": "PA"})
            (test if p > 9 else trainval).append(name)
    write_csv(root / "Data_Entry_2017_v2020.csv", cols, rows)
    (root / "train_val_list.txt").write_text("\n".join(trainval) + "\n")
    (root / "test_list.txt").write_text("\n".join(test) + "\n")
    return root


def test_nih_chestxray14_official_split_patients_and_14_labels(env, monkeypatch):
    root = nih_fixture(env / "chestxray14")
    monkeypatch.setenv("MEDTL_DATASET_NIH_CHESTXRAY14", str(root))
    b = load("nih:chestxray14", env)
    assert b.multilabel and b.classes == list(NIH_LABELS) and b.source == "nih:chestxray14"
    ids = all_ids(b)
    assert sorted(Path(i).name for i in ids["test"]) == sorted((root / "test_list.txt").read_text().split())
    assert ids["val"] and not set(ids["val"]) & set(ids["test"])
    test = b.splits["test"]
    assert set(test.patients) == {"10", "11", "12"}
    i = test.ids.index("images/00000010_000.png")  # (10 + 0) % 4 = 2: No Finding
    assert test.labels[i].sum() == 0
    j = test.ids.index("images/00000011_000.png")  # Atelectasis|Pneumothorax
    assert {b.classes[c] for c in np.flatnonzero(test.labels[j])} == {"Atelectasis", "Pneumothorax"}
    assert any("official split" in n for n in b.notes) and b.leaks["status"] == "clean"


def test_nih_data_check_by_name(env, monkeypatch, capsys):
    monkeypatch.setenv("MEDTL_DATASET_NIH_CHESTXRAY14", str(nih_fixture(env / "chestxray14")))
    rc, out, err = cli(["data", "check", "nih:chestxray14", "--set", "data.image_size=16"], capsys)
    assert rc == 0, err
    assert "official split" in out and "test split made" not in out  # read by the NIH reader


def test_nih_rows_outside_the_split_lists_and_unknown_findings_are_refused(env, monkeypatch):
    root = nih_fixture(env / "chestxray14")
    monkeypatch.setenv("MEDTL_DATASET_NIH_CHESTXRAY14", str(root))
    (root / "test_list.txt").write_text("00000010_000.png\n")
    with pytest.raises(DataError, match="in neither train_val_list.txt nor test_list.txt"):
        load("nih:chestxray14", env)


# ------------------------------------------------------------------ CheXpert

def chexpert_fixture(base: Path) -> Path:
    root = base / "CheXpert-v1.0-small"
    cols = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *CHEXPERT_LABELS]
    for fname, split, patients in (("train.csv", "train", range(1, 11)), ("valid.csv", "valid", range(64541, 64545))):
        rows = []
        for p in patients:
            for study in (1, 2):
                rel = f"{split}/patient{p:05d}/study{study}/view1_frontal.jpg"
                write_jpeg(root / rel, p * 10 + study)
                row = {"Path": f"CheXpert-v1.0-small/{rel}", "Sex": "Male", "Age": 60, "Frontal/Lateral": "Frontal",
                       "AP/PA": "AP"}
                row.update({c: "" for c in CHEXPERT_LABELS})
                row["Cardiomegaly"] = ["1.0", "0.0", "-1.0", ""][(p + study) % 4]
                row["Edema"] = "1.0" if p % 2 else "0.0"
                row["No Finding"] = "" if p % 2 else "1.0"
                rows.append(row)
        write_csv(root / fname, cols, rows)
    return root


def test_chexpert_fetch_from_folder_then_load_with_uncertain_policy(env, capsys):
    root = chexpert_fixture(env / "src")
    rc, out, err = cli(["data", "fetch", "chexpert", "--from", str(root.parent)], capsys)
    assert rc == 0, err
    assert "pinned at the first fetch" in out
    assert reg.pinned_sha256(reg.get_dataset("chexpert")) is not None
    assert not list((env / "medtl-cache").rglob("*.jpg"))  # used in place, not copied
    ones, zeros = load("chexpert", env, uncertain="ones"), load("chexpert", env)
    assert ones.classes == list(CHEXPERT_LABELS) and ones.multilabel
    test = ones.splits["test"]
    assert len(test.ids) == 8 and all(i.startswith("valid/") for i in test.ids)
    assert set(test.patients) == {f"patient{p:05d}" for p in range(64541, 64545)}
    card = CHEXPERT_LABELS.index("Cardiomegaly")
    k = ones.splits["train"].ids.index("train/patient00001/study1/view1_frontal.jpg")  # (1 + 1) % 4 = 2: -1
    assert ones.splits["train"].labels[k, card] == 1 and zeros.splits["train"].labels[k, card] == 0
    assert any("data.uncertain: ones" in n for n in ones.notes)
    sub = load("chexpert", env, label_columns=["Cardiomegaly", "Edema"])
    assert sub.classes == ["Cardiomegaly", "Edema"] and sub.splits["train"].labels.shape[1] == 2


def test_uncertain_ignore_is_refused_in_one_line():
    with pytest.raises(Exception) as ei:
        DataConfig(uncertain="ignore")
    assert "cannot mask uncertain" in str(ei.value)
    from medtl.config import load_config  # the config file route: a one-line ConfigError
    with pytest.raises(ConfigError, match="'ignore' is not supported"):
        load_config(None, ["data.uncertain=ignore"])


def test_credentialed_fetch_reports_missing_files_one_line_per_problem(env, capsys):
    root = chexpert_fixture(env / "src")
    (root / "valid.csv").unlink()
    rc, out, err = cli(["data", "fetch", "chexpert", "--from", str(root)], capsys)
    assert rc == 2 and len(error_lines(err)) == 1 and "missing: valid.csv" in err and "1 of 4" in err
    rc, _, err = cli(["data", "fetch", "chexpert"], capsys)
    assert rc == 2 and "does not download this dataset" in err and "credentialed" in err
    with pytest.raises(DataError, match="no local copy registered"):
        load("chexpert", env)


# ------------------------------------------------------------------ MIMIC-CXR-JPG

def mimic_fixture(root: Path) -> Path:
    split_rows, lab_rows, meta_rows = [], [], []
    for n, subj in enumerate(range(10000001, 10000013)):
        split = "test" if n >= 10 else "validate" if n >= 8 else "train"
        for k in range(2):
            study, dicom = 50000000 + n * 10 + k, f"{n:04d}abcd-{k}"
            write_jpeg(root / f"files/p{str(subj)[:2]}/p{subj}/s{study}/{dicom}.jpg", n * 10 + k)
            split_rows.append({"dicom_id": dicom, "study_id": study, "subject_id": subj, "split": split})
            meta_rows.append({"dicom_id": dicom, "subject_id": subj, "study_id": study, "ViewPosition": "PA"})
            lab = {c: "" for c in CHEXPERT_LABELS}
            lab.update({"subject_id": subj, "study_id": study, "Edema": ["1.0", "0.0", "-1.0"][(n + k) % 3],
                        "Pneumonia": "1.0" if n % 2 else ""})
            lab_rows.append(lab)
    files = [write_csv(root / "mimic-cxr-2.0.0-split.csv.gz", ["dicom_id", "study_id", "subject_id", "split"],
                       split_rows, gz=True),
             write_csv(root / "mimic-cxr-2.0.0-chexpert.csv.gz", ["subject_id", "study_id", *CHEXPERT_LABELS],
                       lab_rows, gz=True),
             write_csv(root / "mimic-cxr-2.0.0-metadata.csv.gz", ["dicom_id", "subject_id", "study_id",
                                                                  "ViewPosition"], meta_rows, gz=True)]
    (root / "SHA256SUMS.txt").write_text("".join(f"{hashlib.sha256(f.read_bytes()).hexdigest()} {f.name}\n"
                                                 for f in files))
    return root


def test_mimic_cxr_jpg_verified_against_sha256sums_official_split(env, capsys):
    root = mimic_fixture(env / "physionet.org/files/mimic-cxr-jpg/2.0.0")
    r = reg.fetch_dataset("mimic-cxr-jpg", from_path=root.parent)
    assert r.status == "official" and r.path == root.resolve()
    b = load("mimic-cxr-jpg", env, uncertain="ones")
    assert b.classes == list(CHEXPERT_LABELS)
    sizes = {s: len(b.splits[s].ids) for s in ("train", "val", "test")}
    assert sizes == {"train": 16, "val": 4, "test": 4}  # split.csv, not medtl's split
    assert set(b.splits["test"].patients) == {"10000011", "10000012"}
    assert b.splits["train"].ids[0].startswith("files/p10/p100000")
    assert any("verified against SHA256SUMS.txt" in n for n in b.notes)
    # a changed CSV: one line naming it, exit 2; kept only with --unofficial
    p = root / "mimic-cxr-2.0.0-split.csv.gz"
    p.write_bytes(p.read_bytes() + b"\0")
    rc, _, err = cli(["data", "fetch", "mimic-cxr-jpg", "--from", str(root)], capsys)
    assert rc == 2 and len(error_lines(err)) == 1 and "1 files differ from SHA256SUMS.txt: mimic-cxr-2.0.0-split.csv.gz" in err
    rc, out, err = cli(["data", "fetch", "mimic-cxr-jpg", "--from", str(root), "--unofficial"], capsys)
    assert rc == 0 and "UNOFFICIAL" in out


# ------------------------------------------------------------------ PadChest

def test_padchest_labels_list_patients_and_label_subset(env, monkeypatch):
    root = env / "padchest"
    cols = ["ImageID", "ImageDir", "StudyDate_DICOM", "StudyID", "PatientID", "PatientBirth", "PatientSex_DICOM",
            "ViewPosition_DICOM", "Projection", "Labels", "Localizations"]
    labels = ["['normal']", "['pleural effusion', 'cardiomegaly']", "['cardiomegaly']", "['pneumonia']"]
    rows = []
    for n in range(24):
        img = f"img{n:03d}_{n % 5}.png"
        write_png(root / str(n % 2) / img, 80, seed=n)
        rows.append({"ImageID": img, "ImageDir": n % 2, "PatientID": f"pt{n // 2}", "Projection": "PA",
                     "Labels": labels[n % 4]})
    rows.append({"ImageID": "broken.png", "ImageDir": 0, "PatientID": "ptX", "Labels": ""})
    write_csv(root / "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv", cols, rows)
    monkeypatch.setenv("MEDTL_DATASET_PADCHEST", str(root))
    b = load("padchest", env)
    assert b.classes == ["cardiomegaly", "pleural effusion", "pneumonia"] and b.multilabel
    assert sum(len(b.splits[s].ids) for s in ("train", "val", "test")) == 24
    assert any("1 rows with an empty or unreadable Labels list left out" in n for n in b.notes)
    pats = {s: set(b.splits[s].patients) for s in ("train", "val", "test")}
    assert not pats["train"] & pats["test"] and all(p.startswith("pt") for p in pats["train"])
    sub = load("padchest", env, label_columns=["cardiomegaly"])
    assert sub.classes == ["cardiomegaly"]


# ------------------------------------------------------------------ RSNA Pneumonia

def test_rsna_pneumonia_binary_target_from_boxes(env, monkeypatch):
    root = env / "rsna"
    rows, info = [], []
    for n in range(16):
        pid = f"{n:04d}-0000-rsna"
        make_dicom(root / "stage_2_train_images" / f"{pid}.dcm", gradient(16, 16, 100 + n, 3000),
                   photometric="MONOCHROME2")
        if n % 2:
            rows += [{"patientId": pid, "x": 1, "y": 1, "width": 4, "height": 4, "Target": 1}] * 2
        else:
            rows.append({"patientId": pid, "Target": 0})
        info.append({"patientId": pid, "class": "Lung Opacity" if n % 2 else "Normal"})
    write_csv(root / "stage_2_train_labels.csv", ["patientId", "x", "y", "width", "height", "Target"], rows)
    write_csv(root / "stage_2_detailed_class_info.csv", ["patientId", "class"], info)
    r = reg.fetch_dataset("rsna:pneumonia", from_path=root)
    assert r.status == "pinned"
    b = load("rsna:pneumonia", env)
    assert not b.multilabel and b.classes == ["no_lung_opacity", "lung_opacity"]
    every = {i: int(lab) for s in ("train", "val", "test") for i, lab in zip(b.splits[s].ids, b.splits[s].labels)}
    assert len(every) == 16 and every["stage_2_train_images/0001-0000-rsna.dcm"] == 1
    assert every["stage_2_train_images/0002-0000-rsna.dcm"] == 0


# ------------------------------------------------------------------ VinDr-CXR

def test_vindr_cxr_majority_vote_official_split(env, monkeypatch):
    root = env / "1.0.0"
    labels = ["Aortic enlargement", "Cardiomegaly", "Pleural effusion", "No finding"]
    train, test = [], []
    for n in range(12):
        img = f"{n:03d}vindr"
        make_dicom(root / "train" / f"{img}.dicom", gradient(16, 16, 100, 2000 + n), photometric="MONOCHROME2")
        for r, rad in enumerate(("R1", "R2", "R3")):
            row = {"image_id": img, "rad_id": rad, **{c: 0 for c in labels}}
            row["Cardiomegaly"] = 1 if r < (2 if n % 2 else 1) else 0  # odd: 2 of 3 readers, even: 1 of 3
            row["No finding"] = 1 - row["Cardiomegaly"]
            train.append(row)
    for n in range(4):
        img = f"{n:03d}test"
        make_dicom(root / "test" / f"{img}.dicom", gradient(16, 16, 200, 3000 + n), photometric="MONOCHROME2")
        test.append({"image_id": img, "rad_id": "", **{c: int(c == "Pleural effusion") for c in labels}})
    write_csv(root / "annotations/image_labels_train.csv", ["image_id", "rad_id", *labels], train)
    write_csv(root / "annotations/image_labels_test.csv", ["image_id", "rad_id", *labels], test)
    monkeypatch.setenv("MEDTL_DATASET_VINDR_CXR", str(root))
    b = load("vindr-cxr", env)
    assert b.classes == labels and len(b.splits["test"].ids) == 4
    tr = {i: lab for s in ("train", "val") for i, lab in zip(b.splits[s].ids, b.splits[s].labels)}
    assert len(tr) == 12
    assert tr["train/001vindr.dicom"][1] == 1 and tr["train/000vindr.dicom"][1] == 0
    assert (b.splits["test"].labels[:, 2] == 1).all()


# ------------------------------------------------------------------ COVID-19 image data collection

def test_covid_chestxray_xray_rows_findings_and_patients(env, capsys):
    root = env / "covid-chestxray-dataset"
    cols = ["patientid", "offset", "sex", "age", "finding", "RT_PCR_positive", "survival", "view", "modality",
            "date", "location", "folder", "filename", "doi", "url", "license", "clinical_notes"]
    findings = ["Pneumonia/Viral/COVID-19", "No Finding", "Pneumonia/Bacterial/Streptococcus", "Pneumonia/Viral/SARS"]
    rows = []
    for n in range(20):
        fn = f"covid-{n}.jpg"
        write_jpeg(root / "images" / fn, n)
        rows.append({"patientid": n // 2, "finding": findings[n % 4], "view": "PA", "modality": "X-ray",
                     "folder": "images", "filename": fn, "license": "CC BY"})
    rows.append({"patientid": 99, "finding": "Pneumonia/Viral/COVID-19", "view": "Axial", "modality": "CT",
                 "folder": "volumes", "filename": "ct.nii.gz"})
    write_csv(root / "metadata.csv", cols, rows)
    rc, out, err = cli(["data", "fetch", "ieee8023:covid-chestxray", "--from", str(root)], capsys)
    assert rc == 0, err
    b = load("ieee8023:covid-chestxray", env)
    assert b.classes == ["Bacterial", "COVID-19", "Pneumonia", "SARS", "Streptococcus", "Viral"]
    assert sum(len(b.splits[s].ids) for s in ("train", "val", "test")) == 20
    assert any("1 CT or other rows left out" in n and "licences vary per image" in n for n in b.notes)


# ------------------------------------------------------------------ ChestMNIST and the listing

def test_chestmnist_every_size_registered_with_md5_and_loads_14_labels(env, monkeypatch):
    for suffix in ("", "_64", "_128", "_224"):
        s = reg.get_dataset(f"medmnist:chestmnist{suffix}")
        assert s.checksum_algo == "md5" and len(s.checksum) == 32 and s.filename == f"chestmnist{suffix}.npz"
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 12), ("val", 4), ("test", 4)):
        arrays[f"{split}_images"] = rng.integers(0, 255, (n, 16, 16), dtype=np.uint8)
        arrays[f"{split}_labels"] = (rng.random((n, 14)) < 0.3).astype(np.uint8)
    p = env / "chestmnist_64.npz"
    np.savez(p, **arrays)
    monkeypatch.setenv("MEDTL_DATASET_MEDMNIST_CHESTMNIST_64", str(p))
    b = load("medmnist:chestmnist_64", env, on_leak="warn")
    assert b.multilabel and len(b.classes) == 14 and b.classes[0] == "atelectasis"
    assert any("UNOFFICIAL" in n for n in b.notes)  # not the published MD5


def test_data_list_shows_access_terms(env, capsys):
    rc, out, _ = cli(["data", "list"], capsys)
    assert rc == 0 and "access" in out.splitlines()[0]
    for name, access in (("nih:chestxray14", "open"), ("chexpert", "credentialed"), ("mimic-cxr-jpg", "credentialed"),
                         ("padchest", "credentialed"), ("rsna:pneumonia", "registration"),
                         ("vindr-cxr", "credentialed"), ("ieee8023:covid-chestxray", "open")):
        line = next(ln for ln in out.splitlines() if ln.startswith(name + " "))
        assert access in line and "local folder" in line
    assert "local copy only: medtl data fetch chexpert --from DIR" in out
