"""The leak policy on planted leaks: counted per split pair, refused / dropped / marked."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from medtl.config import DataConfig, build_config
from medtl.data import load_dataset
from medtl.data.plan import compile_patient_regex, patient_from_name
from medtl.errors import DataError


def _img(path, seed):
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (20, 20), dtype=np.uint8)).save(path)


@pytest.fixture()
def leaky(tmp_path):
    """train/test folders; patient person7 and the bytes of one image occur in both."""
    root = tmp_path / "ds"
    k = 0
    for split, n in (("train", 24), ("test", 10)):
        for cls in ("PNEUMONIA", "NORMAL"):
            for i in range(n):
                base = 1000 * (1 + 2 * (split == "test") + (cls == "NORMAL"))
                _img(root / split / cls / f"person{base + i}_x.png", k)  # one image per patient
                k += 1
    _img(root / "train" / "PNEUMONIA" / "person7_extra.png", 999)   # person7 ...
    _img(root / "test" / "PNEUMONIA" / "person7_again.png", 998)    # ... is also in test
    _img(root / "test" / "NORMAL" / "person555_copy.png", 3)        # the bytes of train person1003's image
    return root


def test_planted_leak_is_refused_with_the_counts(leaky, data_cache):
    with pytest.raises(DataError) as e:
        load_dataset(DataConfig(path=str(leaky), image_size=8), cache_dir=data_cache)
    msg = str(e.value)
    assert "\n" not in msg and "data.on_leak: drop_train" in msg and "data.on_leak: warn" in msg
    # 1 patient (person7) and 1 image's bytes shared with test, wherever the val split put them
    assert "the test split shares 1 patients" in msg and "and 1 byte-identical images" in msg


def test_drop_train_keeps_the_test_split_and_removes_the_overlap(leaky, data_cache):
    warn = load_dataset(DataConfig(path=str(leaky), image_size=8, on_leak="warn"), cache_dir=data_cache)
    drop = load_dataset(DataConfig(path=str(leaky), image_size=8, on_leak="drop_train"), cache_dir=data_cache)
    assert drop.splits["test"].ids == warn.splits["test"].ids
    assert np.array_equal(drop.splits["test"].images, warn.splits["test"].images)
    dropped = drop.leaks["dropped"]["train"] + drop.leaks["dropped"]["val"]
    assert dropped == 2  # person7's train image and the train copy of the test image's bytes
    kept = set(drop.splits["train"].ids) | set(drop.splits["val"].ids)
    assert "train/PNEUMONIA/person7_extra.png" not in kept
    assert drop.leaks["status"] == "dropped" and warn.leaks["status"] == "leaky"
    assert any(n.startswith("LEAKY SPLIT") for n in warn.notes)


def test_finetune_records_leaks_in_metrics(leaky, tmp_path, monkeypatch):
    from medtl.train import finetune

    monkeypatch.setenv("MEDTL_CACHE", str(tmp_path / "cache"))
    cfg = build_config({}, [f"data.path={leaky}", "data.image_size=16", "data.on_leak=drop_train",
                            "train.epochs=1", "train.batch_size=8", "train.bn_gamma={}", "data.val_fraction=0.2"])
    m = finetune(cfg, tmp_path / "run", progress=False).as_dict()
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved == m
    leaks = m["data"]["leaks"]
    assert leaks["policy"] == "drop_train" and leaks["status"] == "dropped"
    assert "leak_status" not in m["run"]  # each fact once: the status lives in data.leaks
    assert leaks["before"]["images"]["train-test"] + leaks["before"]["images"]["val-test"] == 1
    assert m["data"]["n"]["test"] == 22 and m["test"]["n"] == 22


@pytest.mark.parametrize("name, patient", [
    ("person1234_bacteria_3140.jpeg", "person1234"),
    ("IM-0115-0001.jpeg", "IM-0115"),
    ("IM-0011-0001-0002.jpeg", "IM-0011"),
    ("NORMAL2-IM-1427-0001.jpeg", "NORMAL2-IM-1427"),
    ("scan_17.png", "img:a/scan_17.png"),
])
def test_default_patient_regex_reads_kermany_names(name, patient):
    regex = compile_patient_regex(DataConfig().patient_regex)
    rid = name if patient != "img:a/scan_17.png" else "a/scan_17.png"
    assert patient_from_name(name, rid, regex) == patient


def test_splits_medtl_makes_keep_byte_identical_copies_together(tmp_path, data_cache):
    """A class-only folder (medtl makes val and test) with two copies of one image under other
    patients: medtl's own split never puts the copies on both sides, so there is nothing to refuse."""
    root = tmp_path / "ds"
    for cls in ("a", "b"):
        for i in range(15):
            _img(root / cls / f"person{(cls == 'b') * 100 + i}_x.png", (cls == "b") * 100 + i)
    for k in range(3):  # three more copies of one image, three other "patients"
        _img(root / "a" / f"person{500 + k}_copy.png", 0)
    b = load_dataset(DataConfig(path=str(root), image_size=8, split_seed=3), cache_dir=data_cache)
    assert b.leaks["status"] == "clean" and b.leaks["before"]["images"] == {"train-val": 0, "train-test": 0,
                                                                            "val-test": 0}


# ---------------------------------------------------------------- what the data cannot tell (issue 20)

def _npz(path, n=(40, 12, 12), copy_test_into_train=False, seed=0):
    """A tiny MedMNIST-layout .npz (no patients); optionally test image 0's bytes also in train."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for s, k in zip(("train", "val", "test"), n):
        arrays[f"{s}_images"] = rng.integers(0, 256, (k, 8, 8), dtype=np.uint8)
        arrays[f"{s}_labels"] = (np.arange(k) % 2).reshape(-1, 1)
    if copy_test_into_train:
        arrays["train_images"][0] = arrays["test_images"][0]
    np.savez(path, **arrays)
    return path


def test_npz_without_patients_is_unchecked_not_clean(tmp_path, data_cache):
    b = load_dataset(DataConfig(path=str(_npz(tmp_path / "x.npz")), image_size=8), cache_dir=data_cache)
    assert b.leaks["status"] == "unchecked"
    assert b.leaks["n_without_patient"] == {"train": 40, "val": 12, "test": 12}
    assert "known_overlap" not in b.leaks
    assert any(n.startswith("WARNING: UNCHECKED") and "64 of 64 images name no patient" in n for n in b.notes)


def test_npz_byte_leaks_are_still_counted_and_policed(tmp_path, data_cache):
    path = _npz(tmp_path / "x.npz", copy_test_into_train=True)
    with pytest.raises(DataError, match="1 byte-identical images"):
        load_dataset(DataConfig(path=str(path), image_size=8), cache_dir=data_cache)
    drop = load_dataset(DataConfig(path=str(path), image_size=8, on_leak="drop_train"), cache_dir=data_cache)
    assert drop.leaks["dropped"]["train"] == 1 and drop.leaks["after"]["images"]["train-test"] == 0
    assert drop.leaks["status"] == "unchecked"  # the bytes were dropped; patients still could not be counted
    warn = load_dataset(DataConfig(path=str(path), image_size=8, on_leak="warn"), cache_dir=data_cache)
    assert warn.leaks["status"] == "leaky" and warn.leaks["n_without_patient"]["test"] == 12


def test_folder_with_some_unnamed_patients_is_unchecked_with_counts(tmp_path, data_cache):
    root = tmp_path / "ds"
    for k, (split, cls, n) in enumerate((("train", "a", 12), ("train", "b", 12), ("test", "a", 6), ("test", "b", 6))):
        for i in range(n):
            _img(root / split / cls / f"person{100 * k + i}_x.png", 100 * k + i)
    _img(root / "test" / "a" / "scan_1.png", 777)  # no patient id in its name
    b = load_dataset(DataConfig(path=str(root), image_size=8, split_seed=1), cache_dir=data_cache)
    assert b.leaks["status"] == "unchecked" and b.leaks["n_without_patient"] == {"train": 0, "val": 0, "test": 1}


def test_pneumoniamnist_by_name_records_its_known_overlap(tmp_path, data_cache, monkeypatch):
    from medtl.data.registry import dataset_rows, env_var

    monkeypatch.setenv(env_var("medmnist:pneumoniamnist_64"), str(_npz(tmp_path / "p.npz")))
    b = load_dataset(DataConfig(path="medmnist:pneumoniamnist_64", image_size=8), cache_dir=data_cache)
    assert b.leaks["status"] == "unchecked"
    assert "Kermany" in b.leaks["known_overlap"] and "170 patients" in b.leaks["known_overlap"]
    assert any(n.startswith("WARNING: KNOWN OVERLAP: PneumoniaMNIST") for n in b.notes)
    # the same file by path: nothing is known about where it came from
    plain = load_dataset(DataConfig(path=str(tmp_path / "p.npz"), image_size=8), cache_dir=data_cache)
    assert "known_overlap" not in plain.leaks
    rows = {r["name"]: r for r in dataset_rows()}
    assert all(rows[n]["known_overlap"] for n in rows if n.startswith("medmnist:pneumoniamnist"))
    assert not rows["kermany:chest_xray"]["known_overlap"]


def _arm(name, *records):
    from pathlib import Path

    from medtl.record import parse_record
    from medtl.runs import Arm

    arm = Arm(name, Path("."))
    for seed, rec in enumerate(records):
        arm.runs[seed] = parse_record({"task": "binary"} | rec)  # a record of its layout (no data: layout 0)
    return arm


def test_leak_warnings_say_exactly_what_is_known():
    from medtl.stats.comparison import leak_warnings

    n = {"train": 10, "val": 5, "test": 5}
    unchecked = {"data": {"n": n, "leaks": {"status": "unchecked", "n_without_patient": n}}}
    partial = {"data": {"n": n, "leaks": {"status": "unchecked", "n_without_patient": {"train": 0, "val": 0,
                                                                                       "test": 1}}}}
    overlap = {"data": {"n": n, "leaks": {"status": "unchecked", "n_without_patient": n,
                                          "known_overlap": "PneumoniaMNIST is derived from Kermany"}}}
    clean = {"data": {"n": n, "leaks": {"status": "clean", "n_without_patient": {"train": 0, "val": 0, "test": 0}}}}
    w = leak_warnings({"u": _arm("u", unchecked, clean), "p": _arm("p", partial), "k": _arm("k", overlap, overlap),
                       "c": _arm("c", clean), "old": _arm("old", {"test": {}}),
                       "l": _arm("l", {"data": {"leaks": {"status": "leaky"}}})})
    assert w["u"] == ("UNCHECKED: the data of 1 of 2 runs of u name no patients, so patient overlap between test "
                      "and train/val could not be counted (only byte-identical images were)")
    assert "name no patient for some of their images" in w["p"]
    assert w["k"].startswith("UNCHECKED: the data of 2 of 2 runs of k") and \
        "KNOWN OVERLAP: 2 of 2 runs of k: PneumoniaMNIST is derived from Kermany" in w["k"]
    assert "c" not in w and "predate medtl's leak record" in w["old"] and w["l"].startswith("LEAKY SPLIT: 1 of 1")


def test_finetune_on_named_pneumoniamnist_warns_and_keeps_statuses_consistent(tmp_path, monkeypatch):
    from medtl.data.registry import env_var
    from medtl.train import finetune

    monkeypatch.setenv("MEDTL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv(env_var("medmnist:pneumoniamnist"), str(_npz(tmp_path / "p.npz", n=(48, 16, 16))))
    cfg = build_config({}, ["data.path=medmnist:pneumoniamnist", "data.image_size=16", "train.epochs=1",
                            "train.batch_size=16", "train.bn_gamma={}", "train.num_threads=1"])
    m = finetune(cfg, tmp_path / "run", progress=False).as_dict()
    assert m["data"]["leaks"]["status"] == "unchecked"
    assert m["data"]["leaks"]["known_overlap"].startswith("PneumoniaMNIST is derived from Kermany")
    assert any(n.startswith("WARNING: KNOWN OVERLAP") for n in m["run"]["data_notes"])
    log = (tmp_path / "run" / "train.log").read_text()
    assert "WARNING: KNOWN OVERLAP" in log and "WARNING: UNCHECKED" in log
